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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pydantic import ValidationError

from domain.signers import STUDY_STREAM, SignerRegistry
from ledger.chain import GENESIS_PREV_HASH, link_hash
from ledger.envelope import Envelope, Record
from ledger.errors import InputRefused
from ledger.keys import verify_signature
from ledger.store import Store
from ledger.verify import Unauthorised

EVENTS_TABLE = "ledger_events"


@dataclass
class RegistryHead:
    """The registry as verified up to the row at ``position`` (hash ``hash``)."""

    position: int = 0
    hash: bytes = GENESIS_PREV_HASH
    study: list[Envelope] = field(default_factory=list)
    registry: SignerRegistry = field(default_factory=SignerRegistry)
    signature_checked: bool = True  # the head row's signature was checked (a study row, or the tail's head)

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
        if link_hash(record.state, record.prev_hash) != record.hash:
            raise _refuse(record.position, "a study row's content or hash was changed")
        before = _hash_before(store, record.position)
        if (before or GENESIS_PREV_HASH) != record.prev_hash or (before is not None and not head.study):
            raise _refuse(record.position, "a study row is not linked to the row before it")
        _check_study_row(head, record)
        head.position, head.hash = record.position, record.hash
    if rows:
        _walk(store, head)
    return head
