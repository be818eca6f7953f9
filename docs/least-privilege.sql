-- Least privilege for the application on PostgreSQL (run as the ledger's owner).
-- The app may read and append to the log, never change or remove it:
--   * SELECT and INSERT on ledger_events; UPDATE is granted only because PostgreSQL
--     requires it for LOCK TABLE ... IN EXCLUSIVE MODE (which serialises appends),
--     and the append-only trigger refuses every UPDATE, DELETE and TRUNCATE;
--   * full rights on the derived tables (projections, Merkle cache, checkpoints,
--     tracking), which `rebuild` recomputes from the log at any time;
--   * CREATE on the schema, so the derived tables can be (re)created.
-- Replace :schema and :role (tests/test_keys_and_privilege.py does exactly this).
GRANT USAGE, CREATE ON SCHEMA :schema TO :role;
GRANT SELECT, INSERT, UPDATE ON :schema.ledger_events TO :role;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA :schema TO :role;
GRANT SELECT, INSERT, UPDATE, DELETE ON :schema.ledger_tracking TO :role;
GRANT SELECT, INSERT, UPDATE, DELETE ON :schema.proj_meta, :schema.proj_participants, :schema.proj_audit,
      :schema.proj_deviations, :schema.proj_summary, :schema.proj_dirty TO :role;
GRANT SELECT, INSERT, UPDATE, DELETE ON :schema.merkle_leaves, :schema.merkle_nodes, :schema.merkle_checkpoints
      TO :role;
-- The log of refused attempts (21 CFR 11.300(d)) is append-only for the app, like the events:
-- `init` creates it; for a ledger initialised through the library, create it as owner first
-- (ledger.security_log.ensure). The sequence behind its id is covered by the grant on sequences above.
GRANT SELECT, INSERT ON :schema.security_log TO :role;
-- Writer heads (domain/registry_check.py): signed statements a writer adds after each append, so the next
-- writer checks the registry from there instead of re-reading the log. `init` creates the table; an edited or
-- deleted row is ignored or only lengthens that check, so SELECT and INSERT suffice.
GRANT SELECT, INSERT ON :schema.writer_heads TO :role;
