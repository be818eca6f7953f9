"""Data management rules (SPEC §11): queries, source data verification, sign-off, database lock.

What the append path refuses lives here, in one place:

* a query answered, closed or reopened must exist and be in a state that allows it; a query
  targets an entry of the same participant; only the role that raised a query closes or reopens it;
* ``SourceVerified.target_hash`` is the target's **chain hash** (the ``hash`` column that
  ``verify`` binds, hex), checked against the stored row at append;
* ``CasebookSigned.casebook_hash`` is ``casebook_hash()`` over the participant's stored chain
  hashes up to ``up_to_position`` (its own stream position), checked at append; meaning approval;
* while the study or a participant is locked, every participant event except safety follow-up
  (``AdverseEventReported`` / ``AdverseEventUpdated``) is refused, naming the lock.

The read side (open queries, SDV and sign-off staleness) is a pure fold over the log in
``projections.datamanagement``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ledger.envelope import Envelope
from ledger.errors import InputRefused

from domain.events import SAFETY_FOLLOW_UP

if TYPE_CHECKING:
    from domain.participant import Participant
    from domain.signers import SignerRegistry
    from ledger.store import Store

QUERY_TYPES = ("QueryRaised", "QueryAnswered", "QueryClosed", "QueryReopened")
# Events about the record rather than part of it: they never make a sign-off stale.
DM_TYPES = (*QUERY_TYPES, "SourceVerified", "CasebookSigned", "RecordReviewed")
CHANGE_TYPES = ("EntryCorrected", "EntryVoided")
# Statements about the record, superseded by newer ones, never corrected or voided.
SIGNED_STATEMENTS = (*QUERY_TYPES, "SourceVerified", "CasebookSigned")
# Entries a monitor verifies against source: clinical data, not corrections or review events.
NOT_VERIFIABLE = (*DM_TYPES, *CHANGE_TYPES)
SAFETY_TYPES = SAFETY_FOLLOW_UP
LOCK_TYPES = ("DatabaseLocked", "DatabaseUnlocked")
CASEBOOK_DOMAIN = b"trial-ledger casebook v1\n"


def casebook_hash(chain_hashes: Iterable[bytes]) -> str:
    """SHA-256 over a participant's chain hashes in stream order (positions 1..N), hex.

    The one function used both by ``trial-ledger signoff`` to compute the value an
    investigator signs and by the append check and the read fold to compare it. Each
    chain hash binds its event's content, author and place in the global log, so this
    binds the casebook exactly as ``verify`` sees it.
    """
    h = hashlib.sha256(CASEBOOK_DOMAIN)
    for chain_hash in chain_hashes:
        h.update(chain_hash)
    return h.hexdigest()


# -- queries, as the append rules need them -------------------------------------------------


@dataclass
class QueryBook:
    """Per participant: each query's status and raiser, and which entry each correction targets."""

    status: dict[str, str] = field(default_factory=dict)  # query_id -> open | answered | closed
    raised_by: dict[str, str] = field(default_factory=dict)
    target: dict[str, str] = field(default_factory=dict)
    corrections: dict[str, str] = field(default_factory=dict)  # correction event id -> its target

    def apply(self, env: Envelope) -> None:
        data = env.data
        if env.type in CHANGE_TYPES:
            self.corrections[env.event_id] = str(data.get("target_event_id"))
            return
        if env.type not in QUERY_TYPES:
            return
        qid = str(data.get("query_id"))
        if env.type == "QueryRaised":
            self.raised_by[qid] = env.author
            self.target[qid] = str(data.get("target_event_id"))
        self.status[qid] = {"QueryRaised": "open", "QueryAnswered": "answered",
                            "QueryClosed": "closed", "QueryReopened": "open"}[env.type]


# -- database lock ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lock:
    event_id: str
    recorded_at: str
    author: str
    participant: str | None

    def describe(self) -> str:
        scope = f"participant {self.participant}" if self.participant else "the whole study"
        return f"DatabaseLocked {self.event_id} by {self.author} at {self.recorded_at} ({scope})"


@dataclass
class Locks:
    """Which locks are in force: a fold over the study stream."""

    study: Lock | None = None
    participants: dict[str, Lock] = field(default_factory=dict)

    @classmethod
    def replay(cls, envelopes: Iterable[Envelope]) -> Locks:
        locks = cls()
        for env in envelopes:
            locks.apply(env)
        return locks

    def apply(self, env: Envelope) -> None:
        if env.type not in LOCK_TYPES:
            return
        participant = env.data.get("participant")
        if env.type == "DatabaseLocked":
            lock = Lock(env.event_id, env.recorded_at, env.author, participant)
            if participant:
                self.participants[str(participant)] = lock
            else:
                self.study = lock
        elif participant:
            self.participants.pop(str(participant), None)
        else:
            self.study = None

    def lock_for(self, participant: str | None) -> Lock | None:
        return self.study or (self.participants.get(participant) if participant else None)


def check_lock(locks: Locks, type_name: str, participant: str | None, participant_event: bool) -> None:
    """Refuse a participant event under a lock, unless it is safety follow-up."""
    if not participant_event or type_name in SAFETY_TYPES:
        return
    lock = locks.lock_for(participant)
    if lock is not None:
        raise InputRefused(f"participant: {participant} is locked by {lock.describe()}; only safety follow-up "
                           f"({', '.join(SAFETY_TYPES)}) may be added until DatabaseUnlocked")


# -- the append checks ----------------------------------------------------------------------------


def check(env: Envelope, *, store: Store, registry: SignerRegistry, locks: Locks,
          state: Participant | None) -> None:
    """Refuse a decided data-management envelope that breaks a rule (called once per decided event)."""
    if env.type in LOCK_TYPES:
        _check_lock_event(env, store, locks)
    elif state is not None and env.type in QUERY_TYPES:
        _check_query(env, registry, state, store)
    elif state is not None and env.type == "SourceVerified":
        _check_sdv(env, state, store)
    elif state is not None and env.type == "CasebookSigned":
        _check_signoff(env, state, store)


def _check_lock_event(env: Envelope, store: Store, locks: Locks) -> None:
    participant = env.data.get("participant")
    if participant and store.stream_length(str(participant)) == 0:
        raise InputRefused(f"data.participant: {participant} is not registered")
    current = locks.participants.get(str(participant)) if participant else locks.study
    scope = f"participant {participant}" if participant else "the study"
    if env.type == "DatabaseLocked" and current is not None:
        raise InputRefused(f"data.participant: {scope} is already locked by {current.describe()}")
    if env.type == "DatabaseUnlocked" and current is None:
        raise InputRefused(f"data.participant: {scope} is not locked")


def _check_query(env: Envelope, registry: SignerRegistry, state: Participant, store: Store) -> None:
    book = state.queries
    qid = str(env.data["query_id"])
    status = book.status.get(qid)
    if env.type == "QueryRaised":
        if status is not None:
            raise InputRefused(f"data.query_id: query {qid} already exists for {state.id}")
        target = str(env.data["target_event_id"])
        if target not in state.entries:
            _refuse_foreign_target(target, state.id, store)
        if state.entries[target].type in DM_TYPES:
            raise InputRefused(f"data.target_event_id: a {state.entries[target].type} cannot be queried")
        return
    if status is None:
        raise InputRefused(f"data.query_id: no query {qid} for {state.id}")
    if env.type in ("QueryAnswered", "QueryClosed") and status == "closed":
        raise InputRefused(f"data.query_id: query {qid} is closed (reopen it first)")
    if env.type == "QueryReopened" and status != "closed":
        raise InputRefused(f"data.query_id: query {qid} is {status}, not closed")
    if env.type == "QueryAnswered" and "correction_event_id" in env.data:
        correction = str(env.data["correction_event_id"])
        if book.corrections.get(correction) != book.target[qid]:
            raise InputRefused(f"data.correction_event_id: {correction} is not a correction or void of the "
                               f"queried entry {book.target[qid]} in {state.id}'s record")
    if env.type in ("QueryClosed", "QueryReopened"):
        raiser = registry.signers.get(book.raised_by[qid])
        closer = registry.signers.get(env.author)
        if raiser is None or closer is None or raiser.role != closer.role:
            role = raiser.role if raiser else "?"
            raise InputRefused(f"--key: query {qid} was raised by {book.raised_by[qid]} ({role}); "
                               f"only the {role} role may {'close' if env.type == 'QueryClosed' else 'reopen'} it")


def _refuse_foreign_target(target: str, participant: str, store: Store) -> None:
    record = store.record_by_event_id(target)
    if record is not None and record.stream != participant:
        raise InputRefused(f"data.target_event_id: event {target} belongs to another participant, not {participant}")
    raise InputRefused(f"data.target_event_id: no event {target} in {participant}'s record")


def _check_sdv(env: Envelope, state: Participant, store: Store) -> None:
    target = str(env.data["target_event_id"])
    if target not in state.entries:
        _refuse_foreign_target(target, state.id, store)
    if state.entries[target].type in NOT_VERIFIABLE:
        raise InputRefused(f"data.target_event_id: a {state.entries[target].type} is not source data")
    if target in state.voided:
        raise InputRefused(f"data.target_event_id: event {target} is voided")
    record = store.record_by_event_id(target)
    if record is None:
        raise InputRefused(f"data.target_event_id: event {target} is not stored yet; verify it once appended")
    if record.hash.hex() != env.data["target_hash"]:
        raise InputRefused(f"data.target_hash: does not match the chain hash of {target} ({record.hash.hex()})")


def stored_casebook_hash(store: Store, participant: str, up_to: int) -> str:
    records = [r for r in store.stream_records(participant) if r.stream_position <= up_to]
    return casebook_hash(r.hash for r in sorted(records, key=lambda r: r.stream_position))


def _check_signoff(env: Envelope, state: Participant, store: Store) -> None:
    if env.meaning != "approval":
        raise InputRefused("meaning: a CasebookSigned is an approval (21 CFR 11.50)")
    up_to = int(env.data["up_to_position"])
    stored = store.stream_length(state.id)
    if up_to > stored:
        raise InputRefused(f"data.up_to_position: {state.id}'s stored record ends at position {stored}")
    expected = stored_casebook_hash(store, state.id, up_to)
    if env.data["casebook_hash"] != expected:
        raise InputRefused(f"data.casebook_hash: does not match {state.id}'s casebook up to position {up_to} "
                           f"({expected})")


def summary_of(items: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Counts by status (helper for read models and the summary)."""
    out: dict[str, int] = {}
    for item in items:
        out[item["status"]] = out.get(item["status"], 0) + 1
    return out
