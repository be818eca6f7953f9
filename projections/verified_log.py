"""The inspector's views computed from a verified log, read back in bounded memory (SPEC §5.4, §7, §12).

Everything an inspector is shown or handed (report, ODM, audit CSV) is a
pure function of a ``VerifiedLog``. It wraps a ``VerifiedStore``: the log was
verified in one pass (chain, hashes, signatures, authorisation) that kept
only a binding of what it saw (a digest per stream, a mark per page, the
Merkle roots asked for), and every read here goes back to the rows and is
re-checked against that binding before anything is derived from it (a row
swapped between the passes is an ``IntegrityFailure``). Participants are
folded one stream at a time, so memory holds one participant, never the log.

The rows come from the database (``projections.log_source.load``) or from a
package's ``log.jsonl`` (``ledger.signed_log.SignedLogFile``), so the files an
inspector regenerates offline are the bytes the sponsor exported.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import cached_property
from typing import Any

from domain.protocol import Protocol
from domain.rules import Entry, IcfVersion
from domain.rules.book import ProtocolVersion, Tracked, deviation_history
from domain.service import icf_version_of, protocol_versions_of
from domain.signers import STUDY_STREAM, SignerRegistry
from domain.timeutil import parse_time
from ledger.envelope import Envelope, Record
from ledger.verified_store import VerifiedStore
from projections import audit as audit_rows
from projections import state as states
from projections.projector import RESOLUTION
from projections.summary import counts, summarise

DEVIATION_COLUMNS = ("participant", "kind", "important", "event_ids", "position", "message", "status",
                     "raised_at_position")
RECENT_TARGET_STREAMS = 4  # streams whose folded state is kept for the next correction's old value

Pairs = list[tuple[Record, Envelope]]


class VerifiedLog:
    """A verified log: its report, the checkpoint shown, and re-checked reads of its rows."""

    def __init__(self, source: VerifiedStore, checkpoint_note: str | None = None,
                 stored_notes: list[str] | None = None):
        self.source = source
        self.report = source.report
        self.checkpoint_note = checkpoint_note
        self.stored_notes = stored_notes or []  # older checkpoints, for witnessed times
        self._last_deviations: tuple[str, list[Tracked]] | None = None
        self._last_stream: tuple[str, Pairs] | None = None

    # -- the log ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Rows in the verified log (its Merkle tree size)."""
        return self.source.count()

    @property
    def head_position(self) -> int:
        return self.source.binding.head_position if self.size else 0

    @property
    def head_hash(self) -> bytes | None:
        return self.source.binding.head_hash if self.size else None

    @cached_property
    def head_recorded_at(self) -> str | None:
        head = self.source.head_record
        return head.envelope().recorded_at if head is not None else None

    @cached_property
    def first_envelope(self) -> Envelope | None:
        """The genesis event, read through the verified replay (one page)."""
        for record in self.source.records():
            return record.envelope()
        return None

    def records(self) -> Iterator[Record]:
        """The verified rows in log order, each page re-hashed against its mark first."""
        return self.source.records()

    def pairs(self) -> Iterator[tuple[Record, Envelope]]:
        for record in self.records():
            yield record, record.envelope()

    def witness_notes(self) -> list[str]:
        """Checkpoint notes whose cosignatures date the events: those stored, and the one shown."""
        shown = [self.checkpoint_note] if self.checkpoint_note else []
        return [n for n in self.stored_notes if n not in shown] + shown

    def merkle_root(self, size: int) -> bytes | None:
        """The root at ``size`` if the verification pass was asked for it (the log's size always is)."""
        return self.source.root(size)

    def stream(self, stream: str) -> Pairs:
        """One stream's verified rows (its read reproduces the digest the verify pass bound), decoded.

        The last one read is kept: the package's report and ODM writers ask for each participant in turn.
        """
        if self._last_stream is None or self._last_stream[0] != stream:
            self._last_stream = (stream, [(r, r.envelope()) for r in self.source.stream_records(stream)])
        return self._last_stream[1]

    @cached_property
    def study(self) -> Pairs:
        return self.stream(STUDY_STREAM)

    @cached_property
    def registry(self) -> SignerRegistry:
        return SignerRegistry.replay([env for _r, env in self.study])

    @cached_property
    def participants(self) -> list[str]:
        return [s for s in self.source.streams() if s != STUDY_STREAM]

    @cached_property
    def icf_versions(self) -> list[IcfVersion]:
        found = (icf_version_of(env, record.position) for record, env in self.study)
        return [v for v in found if v is not None]

    @cached_property
    def signers(self) -> SignerTimeline:
        return SignerTimeline(self.study)

    # -- derived views (SPEC §7) ------------------------------------------------------------

    def state(self, participant: str, stream: Pairs | None = None) -> dict[str, Any]:
        st = states.empty_state(participant)
        for record, env in self.stream(participant) if stream is None else stream:
            states.apply(st, env, record.position)
        return st

    def deviations(self, participant: str, stream: Pairs | None = None) -> list[Tracked]:
        """Every deviation ever raised, open or resolved, as the projector records them (domain.rules.book).

        The last participant's are kept: a caller asking for its rows and its tally folds once.
        """
        protocol = self.registry.protocol
        if protocol is None:
            return []
        if self._last_deviations is None or self._last_deviations[0] != participant:
            entries = [Entry(env, record.position) for record, env in
                       (self.stream(participant) if stream is None else stream)]
            self._last_deviations = (participant, deviation_history(participant, entries, self.protocol_versions))
        return self._last_deviations[1]

    @cached_property
    def protocol_versions(self) -> list[ProtocolVersion]:
        study = [(record.position, env) for record, env in self.study]
        protocol = self.registry.protocol

        def genesis() -> Protocol:
            assert protocol is not None
            return protocol
        return protocol_versions_of(study, None, genesis)

    def deviation_rows(self, participant: str, stream: Pairs | None = None) -> list[dict[str, Any]]:
        """The rows ``deviations`` prints: raised, and how (or whether) each was resolved."""
        out = []
        for d in self.deviations(participant, stream):
            row = d.as_dict()
            out.append({k: row[k] for k in (*DEVIATION_COLUMNS, *RESOLUTION)})
        return out

    def summary(self) -> dict[str, Any]:
        tally = SummaryTally()
        for p in self.participants:
            stream = self.stream(p)
            tally.add(self.state(p, stream), self.deviations(p, stream))
        return tally.result(self.registry)

    def participant_audit(self, participant: str, stream: Pairs) -> Iterator[dict[str, Any]]:
        """One participant's audit rows, exactly as ``audit`` gives them, from its stream alone.

        The signer of each row is the registry's as of that row's log position (``SignerTimeline``);
        a correction's old value is the target's data in this stream's state just before it.
        """
        st = states.empty_state(participant)
        for record, env in stream:
            entry = st["entries"].get(str(env.data.get("target_event_id")))
            target = dict(entry["data"]) if entry else None
            states.apply(st, env, record.position)
            signer = self.signers.signer(env, record.position)
            for row in audit_rows.rows_for(record, env, signer, True, target):
                yield {k: row[k] for k in audit_rows.COLUMNS}

    def audit(self, participant: str | None = None) -> Iterator[dict[str, Any]]:
        """Audit rows in log order, exactly as the projector writes them (projections.audit.rows_for).

        One verified replay of the log; a correction's or void's old value is folded from its
        stream's verified read (the last few streams are kept), so memory does not grow with the log.
        """
        if participant is not None:
            yield from self.participant_audit(participant, self.stream(participant))
            return
        registry = SignerRegistry()
        targets = TargetStates(self.stream)
        for record, env in self.pairs():
            signer = audit_rows.signer_of(registry, env)
            target = None
            if env.stream == STUDY_STREAM:
                registry.observe(env)
            elif env.type in ("EntryCorrected", "EntryVoided"):
                target = targets.data(record, env)
            for row in audit_rows.rows_for(record, env, signer, True, target):
                yield {k: row[k] for k in audit_rows.COLUMNS}


def _state_entry(st: dict[str, Any], event_id: str) -> dict[str, Any] | None:
    entry = st["entries"].get(event_id)
    return dict(entry["data"]) if entry else None


class TargetStates:
    """A corrected or voided entry's current data just before the change, from its stream's verified read.

    The stream is folded (``states.apply`` by default) up to the change; the folded state of the last
    few streams is kept and advanced, so a run of corrections in one participant costs one read of
    its stream, and memory holds a few streams, never the log.
    """

    def __init__(self, read: Callable[[str], Pairs],
                 empty: Callable[[str], dict[str, Any]] = states.empty_state,
                 apply: Callable[[dict[str, Any], Envelope, int], object] = states.apply,
                 entry: Callable[[dict[str, Any], str], dict[str, Any] | None] = _state_entry):
        self.read, self.empty, self.apply, self.entry = read, empty, apply, entry
        self.kept: OrderedDict[str, tuple[Pairs, int, dict[str, Any]]] = OrderedDict()

    def data(self, record: Record, env: Envelope) -> dict[str, Any] | None:
        stream = env.stream
        kept = self.kept.pop(stream, None)
        if kept is None or (kept[1] and kept[0][kept[1] - 1][0].position >= record.position):
            kept = (self.read(stream), 0, self.empty(stream))
        rows, done, st = kept
        while done < len(rows) and rows[done][0].position < record.position:
            self.apply(st, rows[done][1], rows[done][0].position)
            done += 1
        self.kept[stream] = (rows, done, st)
        if len(self.kept) > RECENT_TARGET_STREAMS:
            self.kept.popitem(last=False)
        return self.entry(st, str(env.data.get("target_event_id")))


class SignerTimeline:
    """Who each key belonged to at every log position, from the study stream: ``audit_rows.signer_of``
    answered for one participant's events without replaying the whole log."""

    def __init__(self, study: Pairs):
        registry = SignerRegistry()
        self.changes: dict[str, tuple[list[int], list[audit_rows.Signer | None]]] = {}
        current: dict[str, audit_rows.Signer] = {}
        for record, env in study:
            registry.observe(env)
            now = {}
            for kid in registry.by_key:
                entry = registry.signer_for_key(kid)
                if entry is not None:
                    now[kid] = audit_rows.Signer(entry.user_id, entry.name, entry.role)
            for kid in set(now) | set(current):
                if now.get(kid) != current.get(kid):
                    positions, signers = self.changes.setdefault(kid, ([], []))
                    positions.append(record.position)
                    signers.append(now.get(kid))
            current = now

    def signer(self, env: Envelope, position: int) -> audit_rows.Signer:
        """``audit_rows.signer_of`` with the registry as it stood just before ``position``."""
        if env.type == "StudyInitialised":
            return audit_rows.Signer(env.author, str(env.data.get("admin_name")), "admin")
        positions, signers = self.changes.get(env.key_id, ([], []))
        at = bisect.bisect_left(positions, position) - 1
        entry = signers[at] if at >= 0 else None
        return entry if entry is not None else audit_rows.Signer(env.author, "(unknown signer)", "(none)")


class SummaryTally:
    """``summary`` folded one participant at a time: counts and deviation tallies, nothing per event kept."""

    def __init__(self) -> None:
        self.all_counts: list[dict[str, Any]] = []
        self.tally: dict[tuple[str, bool], int] = {}

    def add(self, st: dict[str, Any], deviations: list[Tracked]) -> None:
        self.all_counts.append(counts(st))
        for d in deviations:
            self.tally[(d.kind, d.important)] = self.tally.get((d.kind, d.important), 0) + 1

    def result(self, registry: SignerRegistry) -> dict[str, Any]:
        target = registry.protocol.target_enrolment if registry.protocol else None
        return summarise(self.all_counts, [(k, imp, n) for (k, imp), n in sorted(self.tally.items())], target)


def recorded_prefix(records: Iterator[Record], as_of: datetime) -> Iterator[Record]:
    """The records up to the first one recorded after ``as_of``: a contiguous prefix, so its chain verifies.

    A row that does not decode is kept, so the prefix's verdict reports it rather than hiding it; so is a
    row outside the chain (an id at or below 0), whatever time it claims.
    """
    for record in records:
        if record.position <= 0:
            yield record
            continue
        try:
            recorded = parse_time(record.envelope().recorded_at)
        except ValueError:
            recorded = None
        if recorded is not None and recorded > as_of:
            return
        yield record
