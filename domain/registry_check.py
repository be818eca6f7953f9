"""The writer's signer registry, bound to the chain without a full verify (SPEC §5.4).

An append is authorised by the registry the log states, so the registry
must come from rows the chain binds: a forged, reordered, relabelled or
deleted ``@study`` row must never admit a key. Checked here, per writer:

* every study row: its signed stream and position (1, 2, 3, … in global
  order, so nothing is missing in the middle or duplicated), its hash over
  its bytes, its link to the row just before it in global order (nothing
  inserted before it or reordered around it), no row before genesis, and
  its authorisation and Ed25519 signature under the registry so far;
* the tail from the newest study row to the head: every link and hash (one
  SHA-256 a row, no signature), no study event hidden there under another
  stream's label, and the head's signature, so the tail cannot be rewritten
  to skip a deleted revocation. Deleting the newest events of the whole log
  stays undetectable without a checkpoint (SPEC §5).

A ``RegistryHead`` caches the result in the writer's process; the next
append re-checks that its head row is unchanged and walks only the rows
added since. Integrity problems refuse the append (exit 3).

Writer heads: the tail walk grew with the log (100 k rows read, decoded and
hashed on every append at 100 k events, 1 M at 1 M). So a writer that has
bound the registry and appended right onto the head it checked signs a
*writer head*, a side row beside the log (``writer_heads``)::

    position and hash of its own last row, the study stream's length then,
    and the global position of the newest study row then

and the next writer starts its tail walk from the newest writer head it can
trust instead of the newest study row. A writer head is trusted only when
its signature verifies under a key that the registry (bound from the study
rows at or before it, each checked in full as above) holds unrevoked, the
row at its position still has its hash, and the study rows at or before it
are exactly as many as it says, the newest at the position it says. So:

* deleting or relabelling the newest study row (a revocation) before a
  writer head leaves one study row fewer than the head states: refused;
  after it, the walk from the head meets the broken link: refused;
* a study row hidden in the tail under another stream's label is met by the
  walk (rows after the head) or counted missing (rows before it);
* a forged, edited or replayed writer head has no valid signature, names a
  row that is not there, or a key the registry does not hold: it is ignored,
  and the walk starts further back (at worst at the newest study row, as
  before). Deleting writer heads only makes the walk longer.

Forging a writer head takes a registered, unrevoked key; with such a key and
the database an attacker could already rechain the tail and sign a new head
row, which the full walk accepted too, so nothing is weaker. What the writer
no longer re-reads on each append is the chain of clinical rows before the
newest writer head: a link broken there no longer refuses the append (it
never changed who may sign); ``verify`` names it, as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pydantic import ValidationError

from domain.signers import STUDY_STREAM, SignerRegistry
from ledger.canonical import canonical_bytes
from ledger.chain import GENESIS_PREV_HASH, link_hash
from ledger.envelope import Envelope, Record
from ledger.errors import InputRefused, LedgerError
from ledger.keys import Signer, verify_signature
from ledger.store import Store
from ledger.verify import Unauthorised

EVENTS_TABLE = "ledger_events"
HEADS_TABLE = "writer_heads"
HEAD_CONTEXT = b"trial-ledger writer head v1\n"  # domain separation: a head signature signs nothing else
HEADS_TRIED = 8  # newest writer heads tried before falling back to the walk from the newest study row


@dataclass
class RegistryHead:
    """The registry as verified up to the row at ``position`` (hash ``hash``)."""

    position: int = 0
    hash: bytes = GENESIS_PREV_HASH
    study: list[Envelope] = field(default_factory=list)
    registry: SignerRegistry = field(default_factory=SignerRegistry)
    signature_checked: bool = True  # the head row's signature was checked (a study row, or the tail's head)
    study_position: int = 0  # global position of the newest study row

    @property
    def study_length(self) -> int:
        return len(self.study)

    def fresh_registry(self) -> SignerRegistry:
        """A registry the caller may extend with decided events without touching this cache."""
        return SignerRegistry.replay(self.study)


def _refuse(position: int, reason: str) -> InputRefused:
    return InputRefused(f"--db: the signer registry is not bound by the chain (position {position}: {reason}); "
                        "nothing written; run `trial-ledger verify`")


def _pos(store: Store) -> str:
    return "notification_id" if store.postgres else "rowid"


def _hash_before(store: Store, position: int) -> bytes | None:
    rows = store.fetch(f"SELECT hash FROM {store.table(EVENTS_TABLE)} WHERE {_pos(store)} < ? "
                       f"ORDER BY {_pos(store)} DESC LIMIT 1", (position,))
    return bytes(rows[0]["hash"]) if rows else None


def _hash_at(store: Store, position: int) -> bytes | None:
    rows = store.fetch(f"SELECT hash FROM {store.table(EVENTS_TABLE)} WHERE {_pos(store)} = ?", (position,))
    return bytes(rows[0]["hash"]) if rows else None


def _check_study_row(head: RegistryHead, record: Record) -> None:
    try:
        env = Envelope.from_canonical(record.state)
    except (ValueError, ValidationError):
        raise _refuse(record.position, "a study row does not decode") from None
    due = len(head.study) + 1
    if (env.stream, env.position, record.stream_position) != (STUDY_STREAM, due, due):
        raise _refuse(record.position, f"study event {env.position} where {due} was due")
    _check_signed(head, record, env, "a study row")
    head.registry.observe(env)
    head.study.append(env)
    head.study_position = record.position


def _walk(store: Store, head: RegistryHead) -> None:
    """Extend ``head`` over every row after it: links and hashes; study rows in full; the head's signature."""
    last: Record | None = None
    for record in store.records(after=head.position):
        if record.prev_hash != head.hash or link_hash(record.state, record.prev_hash) != record.hash:
            raise _refuse(record.position, "chain broken after the newest study event")
        try:
            stream = json.loads(record.state)["stream"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise _refuse(record.position, "a row does not decode") from None
        if stream == STUDY_STREAM:
            _check_study_row(head, record)
            head.signature_checked = True
        else:
            head.signature_checked = False
        head.position, head.hash, last = record.position, record.hash, record
    if last is None and not head.signature_checked:  # started from a writer head: its row is the head
        last = store.record_at(head.position)
        if last is None or last.hash != head.hash:
            raise _refuse(head.position, "the head row changed")
    if last is not None and not head.signature_checked:
        _check_signed(head, last, last.envelope(), "the head")
        head.signature_checked = True


def _check_signed(head: RegistryHead, record: Record, env: Envelope, what: str) -> None:
    """``record`` is authorised by the registry so far and its signature verifies, else refused naming ``what``."""
    try:
        public = head.registry.authorise(env)
    except Unauthorised as e:
        raise _refuse(record.position, f"{what} is unauthorised: {e}") from None
    if not verify_signature(public, record.signature, record.hash):
        raise _refuse(record.position, f"{what}'s signature does not verify")


def bound_registry(store: Store, cached: RegistryHead | None = None) -> RegistryHead:
    """The registry the chain binds, as of the current head; ``cached`` (if still intact) saves the walk."""
    if cached is not None and cached.position > 0 and _hash_at(store, cached.position) == cached.hash:
        _walk(store, cached)
        return cached
    head = RegistryHead()
    rows = sorted(store.stream_records(STUDY_STREAM), key=lambda r: r.position)
    for record in rows:
        if record.position <= 0:
            raise _refuse(record.position, "a study row outside the chain (id at or below 0)")
    start = _trusted_writer_head(store, rows) if rows else None
    for record in rows:
        if start is not None and record.position > start.position:
            break
        if link_hash(record.state, record.prev_hash) != record.hash:
            raise _refuse(record.position, "a study row's content or hash was changed")
        before = _hash_before(store, record.position)
        if (before or GENESIS_PREV_HASH) != record.prev_hash or (before is not None and not head.study):
            raise _refuse(record.position, "a study row is not linked to the row before it")
        _check_study_row(head, record)
        head.position, head.hash = record.position, record.hash
    if start is not None:
        head.position, head.hash = start.position, start.hash
        head.signature_checked = head.position == head.study_position
    if rows:
        _walk(store, head)
        if len(head.study) != len(rows):  # a row labelled @study that the walk did not meet as one
            raise _refuse(rows[-1].position, "a study row is not where its signed content says")
    return head


# -- writer heads ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriterHead:
    """A writer's signed statement: the log up to ``position`` (hash ``hash``) held ``study_length``
    study rows, the newest at ``study_position``."""

    position: int
    hash: bytes
    study_length: int
    study_position: int
    key_id: str
    signature: bytes

    def message(self) -> bytes:
        return HEAD_CONTEXT + canonical_bytes({
            "position": self.position, "hash": self.hash.hex(), "study_length": self.study_length,
            "study_position": self.study_position})


def _heads_ddl(store: Store) -> str:
    blob, integer = ("BYTEA", "BIGINT") if store.postgres else ("BLOB", "INTEGER")
    return (f"CREATE TABLE IF NOT EXISTS {store.table(HEADS_TABLE)} (position {integer} PRIMARY KEY, "
            f"hash {blob} NOT NULL, study_length {integer} NOT NULL, study_position {integer} NOT NULL, "
            f"key_id TEXT NOT NULL, signature {blob} NOT NULL)")


def ensure_heads(store: Store) -> None:
    """Create the writer-heads table (``init`` does; an older ledger gets it from its first writer)."""
    with store.write_transaction() as c:
        c.execute(_heads_ddl(store))


def _newest_writer_heads(store: Store) -> list[WriterHead]:
    try:
        rows = store.fetch(f"SELECT position, hash, study_length, study_position, key_id, signature "
                           f"FROM {store.table(HEADS_TABLE)} ORDER BY position DESC LIMIT {HEADS_TRIED}")
    except LedgerError:  # no such table (a ledger older than writer heads): walk as before
        return []
    try:
        return [WriterHead(int(r["position"]), bytes(r["hash"]), int(r["study_length"]), int(r["study_position"]),
                           str(r["key_id"]), bytes(r["signature"])) for r in rows]
    except (TypeError, ValueError):
        return []


def _trusted_writer_head(store: Store, rows: list[Record]) -> WriterHead | None:
    """The newest writer head that binds (see the module's docstring), or None to walk from the study rows."""
    for candidate in _newest_writer_heads(store):
        study = [r for r in rows if r.position <= candidate.position]
        if len(study) != candidate.study_length or not study or study[-1].position != candidate.study_position:
            continue
        if _hash_at(store, candidate.position) != candidate.hash:
            continue
        registry = SignerRegistry()
        try:
            for record in study:
                registry.observe(Envelope.from_canonical(record.state))
        except (ValueError, ValidationError, KeyError, TypeError):
            continue  # the full checks in bound_registry refuse it, naming the row
        entry = registry.signer_for_key(candidate.key_id)
        if entry is None or entry.revoked_at is not None:
            continue
        if verify_signature(entry.public_raw, candidate.signature, candidate.message()):
            return candidate
    return None


def attest(store: Store, signer: Signer, verified: RegistryHead, last_event_id: str, study_added: int,
           last_study_event_id: str | None) -> None:
    """Sign a writer head for what this writer just appended onto the head it had verified.

    Only when its rows were chained right onto ``verified`` (no other writer
    in between, whose rows it has not checked). Best effort: the events are
    already committed, and a missing writer head only lengthens the next walk.
    """
    sealed = store.last_sealed
    if sealed is None or sealed[0] != verified.hash or verified.position <= 0:
        return
    try:
        last = store.record_by_event_id(last_event_id)
        if last is None or last.hash != sealed[1]:
            return
        study_position = verified.study_position
        if last_study_event_id is not None:
            study = store.record_by_event_id(last_study_event_id)
            if study is None:
                return
            study_position = study.position
        unsigned = WriterHead(last.position, last.hash, len(verified.study) + study_added, study_position,
                              signer.key_id, b"")
        head = WriterHead(**{**unsigned.__dict__, "signature": signer.sign(unsigned.message())})
        statement = (f"INSERT INTO {store.table(HEADS_TABLE)} (position, hash, study_length, study_position, "
                     f"key_id, signature) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
        values = (head.position, head.hash, head.study_length, head.study_position, head.key_id, head.signature)
        try:
            with store.write_transaction() as c:
                c.execute(statement, values)
        except LedgerError:
            ensure_heads(store)
            with store.write_transaction() as c:
                c.execute(statement, values)
    except LedgerError:
        return
