"""The inspector's views computed from a verified log held in memory (SPEC §5.4, §7, §12).

Everything an inspector is shown or handed (report, ODM, audit CSV) is a
pure function of a ``VerifiedLog``: the records ``verify_records`` checked,
plus its report. The package exporter and ``verify-package`` build from the
same object, so the files an inspector regenerates offline are the bytes
the sponsor exported. No database is read here: ``load`` (the one place
that reads a store) and the package reader are the two sources.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
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
from ledger.merkle import leaf_hash, root
from ledger.verify import Report, verify_records
from projections import audit as audit_rows
from projections import state as states
from projections.projector import RESOLUTION
from projections.summary import counts, summarise

DEVIATION_COLUMNS = ("participant", "kind", "important", "event_ids", "position", "message", "status",
                     "raised_at_position")


@dataclass
class VerifiedLog:
    """Records in global order, as verified, with the verification report and the checkpoint note shown."""

    records: list[Record]
    report: Report
    checkpoint_note: str | None = None
    stored_notes: list[str] = field(default_factory=list)  # older checkpoints, for witnessed times
    envelopes: list[Envelope] = field(init=False)

    def __post_init__(self) -> None:
        decoded: list[Envelope] = []
        kept: list[Record] = []
        for record in self.records:
            try:
                decoded.append(record.envelope())
                kept.append(record)
            except ValueError:
                continue  # a row that does not decode is already a finding of the report
        self.records, self.envelopes = kept, decoded

    # -- the log ---------------------------------------------------------------------------

    def pairs(self) -> Iterator[tuple[Record, Envelope]]:
        return zip(self.records, self.envelopes, strict=True)

    def witness_notes(self) -> list[str]:
        """Checkpoint notes whose cosignatures date the events: those stored, and the one shown."""
        shown = [self.checkpoint_note] if self.checkpoint_note else []
        return [n for n in self.stored_notes if n not in shown] + shown

    @property
    def head_recorded_at(self) -> str | None:
        return self.envelopes[-1].recorded_at if self.envelopes else None

    def merkle_root(self, size: int) -> bytes:
        return root([leaf_hash(r.hash) for r in self.records[:size]])

    @cached_property
    def registry(self) -> SignerRegistry:
        return SignerRegistry.replay([e for e in self.envelopes if e.stream == STUDY_STREAM])

    @cached_property
    def participants(self) -> list[str]:
        return sorted({e.stream for e in self.envelopes if e.stream != STUDY_STREAM})

    def stream(self, participant: str) -> list[tuple[Record, Envelope]]:
        return self._streams.get(participant, [])

    @cached_property
    def _streams(self) -> dict[str, list[tuple[Record, Envelope]]]:
        streams: dict[str, list[tuple[Record, Envelope]]] = {}
        for record, env in self.pairs():
            streams.setdefault(env.stream, []).append((record, env))
        return streams

    @cached_property
    def icf_versions(self) -> list[IcfVersion]:
        found = (icf_version_of(env, record.position) for record, env in self.stream(STUDY_STREAM))
        return [v for v in found if v is not None]

    # -- derived views (SPEC §7) ------------------------------------------------------------

    def state(self, participant: str) -> dict[str, Any]:
        st = states.empty_state(participant)
        for record, env in self.stream(participant):
            states.apply(st, env, record.position)
        return st

    def deviations(self, participant: str) -> list[Tracked]:
        """Every deviation ever raised, open or resolved, as the projector records them (domain.rules.book).

        Folded once per participant and kept: the report asks for them twice
        (its tables and the summary), and the fold is most of its time.
        """
        protocol = self.registry.protocol
        if protocol is None:
            return []
        if participant not in self._deviations:
            entries = [Entry(env, record.position) for record, env in self.stream(participant)]
            self._deviations[participant] = deviation_history(participant, entries, self.protocol_versions)
        return self._deviations[participant]

    @cached_property
    def _deviations(self) -> dict[str, list[Tracked]]:
        return {}

    @cached_property
    def protocol_versions(self) -> list[ProtocolVersion]:
        study = [(record.position, env) for record, env in self.stream(STUDY_STREAM)]
        protocol = self.registry.protocol

        def genesis() -> Protocol:
            assert protocol is not None
            return protocol
        return protocol_versions_of(study, None, genesis)

    def deviation_rows(self, participant: str) -> list[dict[str, Any]]:
        """The rows ``deviations`` prints: raised, and how (or whether) each was resolved."""
        out = []
        for d in self.deviations(participant):
            row = d.as_dict()
            out.append({k: row[k] for k in (*DEVIATION_COLUMNS, *RESOLUTION)})
        return out

    def summary(self) -> dict[str, Any]:
        all_counts = [counts(self.state(p)) for p in self.participants]
        tally: dict[tuple[str, bool], int] = {}
        for p in self.participants:
            for d in self.deviations(p):
                tally[(d.kind, d.important)] = tally.get((d.kind, d.important), 0) + 1
        target = self.registry.protocol.target_enrolment if self.registry.protocol else None
        return summarise(all_counts, [(k, imp, n) for (k, imp), n in sorted(tally.items())], target)

    def audit(self, participant: str | None = None) -> Iterator[dict[str, Any]]:
        """Audit rows in log order, exactly as the projector writes them (projections.audit.rows_for)."""
        bad = {f.position for f in self.report.findings}
        registry = SignerRegistry()
        current: dict[str, dict[str, Any]] = {}
        for record, env in self.pairs():
            signer = audit_rows.signer_of(registry, env)
            if env.stream == STUDY_STREAM:
                registry.observe(env)
                target = None
            else:
                st = current.setdefault(env.stream, states.empty_state(env.stream))
                entry = st["entries"].get(str(env.data.get("target_event_id")))
                target = dict(entry["data"]) if entry else None
                states.apply(st, env, record.position)
            if participant is not None and env.stream != participant:
                continue
            for row in audit_rows.rows_for(record, env, signer, record.position not in bad, target):
                yield {k: row[k] for k in audit_rows.COLUMNS}


def verify(records: Iterable[Record], *, jobs: int | None = None) -> tuple[list[Record], Report]:
    """Verify ``records`` with the domain's signer registry as authority; keep them in memory."""
    kept: list[Record] = []

    def keep(rows: Iterable[Record]) -> Iterator[Record]:
        for r in rows:
            kept.append(r)
            yield r

    report = verify_records(keep(records), SignerRegistry(), jobs=jobs)
    return kept, report


def recorded_prefix(records: Iterable[Record], as_of: datetime) -> list[Record]:
    """The records up to the first one recorded after ``as_of``: a contiguous prefix, so its chain verifies.

    A row that does not decode is kept, so the prefix's verdict reports it rather than hiding it; so is a
    row outside the chain (an id at or below 0), whatever time it claims.
    """
    out = []
    for record in records:
        if record.position <= 0:
            out.append(record)
            continue
        try:
            recorded = parse_time(record.envelope().recorded_at)
        except ValueError:
            recorded = None
        if recorded is not None and recorded > as_of:
            break
        out.append(record)
    return out
