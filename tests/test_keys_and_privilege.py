"""Keys (mode, warnings, passphrase secrecy, replay) and append-only storage with least privilege."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

import psycopg
import pytest

from domain.service import Command, Trial
from domain.signers import SignerRegistry
from ledger.store import Store
from ledger.verify import verify_records
from tests.conftest import Cli, Keys, as_owner, event_count, initialise, register


def test_world_readable_key_gets_a_warning(trial: Trial, keys: Keys, run: Cli) -> None:
    register(trial, keys, "S01-001")
    key = keys.path("lab1")
    key.chmod(0o644)
    r = run("append", "LabResultRecorded", "--participant", "S01-001", "--data",
            '{"analyte": "FBG", "value": 8, "unit": "mmol/L"}', "--key", str(key))
    assert r.exit_code == 0
    assert "warning" in r.stderr and "chmod 600" in r.stderr


def test_passphrase_is_never_printed(tmp_path: Path) -> None:
    secret = "s3cret-" + uuid.uuid4().hex
    run = Cli(str(tmp_path / "l.db"))
    outputs = [run("keygen", "--user-id", "u", "--out", str(tmp_path / "u.key"), env={"TRIAL_LEDGER_PASSPHRASE": secret})]
    outputs.append(run("append", "Enrolled", "--participant", "S01-001", "--key", str(tmp_path / "u.key"),
                       env={"TRIAL_LEDGER_PASSPHRASE": secret + "-wrong"}))
    pf = tmp_path / "pass.txt"
    pf.write_text(secret)
    outputs.append(run("append", "Enrolled", "--participant", "S01-001", "--key", str(tmp_path / "u.key"),
                       "--passphrase-file", str(pf)))
    for r in outputs:
        assert secret not in r.output


def test_captured_event_replayed_elsewhere_is_detected(trial: Trial, keys: Keys) -> None:
    register(trial, keys, "S01-001")
    register(trial, keys, "S01-002")
    captured = trial.append(Command("LabResultRecorded", "S01-001", {"analyte": "FBG", "value": 8.0,
                                                                    "unit": "mmol/L"}), keys.signers["lab1"])
    store = as_owner(trial.store)
    row = store.record_by_event_id(captured.event_id)
    assert row is not None
    head = list(store.records())[-1]
    # replay the signed bytes as a new row at the head, for another participant, with a fresh event id
    cols = "originator_id, originator_version, topic, state, event_id, prev_hash, hash, signature, key_id"
    store.execute_raw(f"INSERT INTO {store._qualified} ({cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      ("S01-002", 2, row.type, row.state, str(uuid.uuid4()), head.hash, row.hash, row.signature,
                       row.key_id))
    report = verify_records(store.records(), SignerRegistry(), jobs=1)
    assert not report.ok
    reasons = " ".join(f.reason for f in report.findings)
    assert "hash mismatch" in reasons and "stored stream" in reasons


def test_captured_event_replayed_through_import_is_refused(keys: Keys, sqlite_db: str, tmp_path: Path) -> None:
    """The only way in for someone else's signed bytes is the signed-log migration; replays are refused there."""
    trial = initialise(sqlite_db, keys)
    register(trial, keys, "S01-001")
    register(trial, keys, "S01-002")
    trial.append(Command("LabResultRecorded", "S01-001", {"analyte": "FBG", "value": 8.0, "unit": "mmol/L"}),
                 keys.signers["lab1"])
    trial.store.close()
    assert Cli(sqlite_db)("export", "--format", "jsonl", "--out", str(tmp_path / "log.jsonl")).exit_code == 0
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    captured = json.loads(lines[-1])
    assert '"S01-001"' in captured["state"]
    moved = {**captured, "state": captured["state"].replace('"S01-001"', '"S01-002"')}
    forgeries = {
        "another position": [*lines, json.dumps(captured)],        # the same signed row again, at the head
        "another participant": [*lines[:-1], json.dumps(moved)],   # its participant changed, signature kept
    }
    for name, forged in forgeries.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(forged) + "\n")
        target = str(tmp_path / f"{name}.db")
        r = Cli(target)("import", str(path))
        assert r.exit_code == 3, (name, r.output)
        assert r.stderr.startswith(f"error: line {len(forged)}:") and r.stderr.count("\n") == 1, (name, r.stderr)
        assert not Path(target).exists(), name
        assert event_count(target) == 0, name


def test_sqlite_log_refuses_update_and_delete(keys: Keys, sqlite_db: str) -> None:
    initialise(sqlite_db, keys).store.close()
    conn = sqlite3.connect(sqlite_db)
    for statement in ("UPDATE ledger_events SET topic = 'x'", "DELETE FROM ledger_events"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(statement)
    conn.close()
    assert Cli(sqlite_db)("verify").exit_code == 0


@pytest.mark.postgres
def test_postgres_app_runs_as_insert_select_role(pg_server: str, keys: Keys, tmp_path: Path) -> None:
    """The documented least-privilege role (docs/least-privilege.sql) runs every command; UPDATE/DELETE are refused."""
    schema, role = f"lp_{uuid.uuid4().hex[:8]}", f"tl_app_{uuid.uuid4().hex[:8]}"
    owner_url = f"{pg_server}?schema={schema}"
    trial = initialise(owner_url, keys)  # the owner creates the tables once
    trial.store.close()
    from projections.projector import Projections
    from ledger.merkle_log import MerkleLog

    from ledger import security_log

    store = Store(owner_url)
    Projections(store).catch_up()
    MerkleLog(store)
    security_log.ensure(store)
    store.close()
    sql = (Path(__file__).resolve().parent.parent / "docs" / "least-privilege.sql").read_text()
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(sql.replace(":schema", f'"{schema}"').replace(":role", f'"{role}"'))
    app_url = pg_server.replace("postgres@", f"{role}@") + f"?schema={schema}"
    try:
        run = Cli(app_url)
        assert run("append", "ParticipantRegistered", "--participant", "S01-001", "--data",
                   '{"site": "S01", "sex": "F", "birth_year": 1960}', "--key", str(keys.path("inv1"))).exit_code == 0
        jsonl = tmp_path / "in.jsonl"
        jsonl.write_text('{"type": "LabResultRecorded", "participant": "S01-001", '
                         '"data": {"analyte": "FBG", "value": 8, "unit": "mmol/L"}}\n')
        assert run("import", str(jsonl), "--key", str(keys.path("inv1"))).exit_code == 0
        for args in (("verify",), ("show", "S01-001"), ("audit",), ("deviations",), ("summary",), ("rebuild",),
                     ("checkpoint", "--key", str(keys.path("admin")), "--out", str(tmp_path / "cp.txt"))):
            r = run(*args)
            assert r.exit_code == 0, (args, r.output)
        assert run("verify", "--checkpoint", str(tmp_path / "cp.txt"), "--since-checkpoint").exit_code == 0
        refused = run("append", "LabResultRecorded", "--participant", "S01-001", "--data", "{}",
                      "--key", str(keys.path("outsider")))
        assert refused.exit_code == 3 and "warning" not in refused.stderr  # the app role may log it
        assert len(json.loads(run("security-log", "--json").stdout)) == 1
        with psycopg.connect(app_url.split("?")[0], autocommit=True) as conn:
            for statement in (f'UPDATE "{schema}".ledger_events SET topic = \'x\'',
                              f'DELETE FROM "{schema}".ledger_events',
                              f'TRUNCATE "{schema}".ledger_events',
                              f'DROP TRIGGER ledger_events_no_update_delete ON "{schema}".ledger_events',
                              f'DELETE FROM "{schema}".security_log'):
                with pytest.raises(psycopg.Error):
                    conn.execute(statement)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')
