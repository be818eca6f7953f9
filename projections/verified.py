"""Inspector outputs recomputed from the verified log (SPEC §5.4, §7).

Every read command, export, the report and ``prove`` take their data from
here: the log is verified first (``VerifiedStore``), then participant
state, deviations, the summary and the audit trail are folded in memory
from verified envelopes only. The materialised projection tables
(``projections.projector``) are a cache that no inspector output reads,
except through an explicit ``--cached`` fast path that says it is not
verified; an edit to them is therefore invisible here.

The methods mirror ``Projections``' read methods, so a command can take
either. Participants are folded one stream at a time (a stream read is
checked against its verified digest); the audit trail replays the global
log page by page and keeps each participant's entries so a correction can
show the value it replaced.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from domain.service import Trial
from domain.signers import STUDY_STREAM, SignerRegistry
from ledger.envelope import Envelope
from ledger.store import Store
from ledger.verified_store import (
    VerifiedCheckpoint,
    VerifiedStore,
    stored_checkpoint_sizes,
    verified_checkpoint,
)
from projections import audit as audit_rows
from projections import state as states
from projections.summary import counts, summarise
from projections.verified_log import TargetStates


def open_verified(store: Store, *, jobs: int | None = None, checkpoints: bool = False) -> VerifiedProjections:
    """Verify the whole log (IntegrityFailure if it does not verify) and read from it."""
    candidates = stored_checkpoint_sizes(store) if checkpoints else []
    vstore = VerifiedStore.open(store, SignerRegistry(), jobs=jobs, checkpoint_sizes=[s for s, _ in candidates])
    return VerifiedProjections(vstore, candidates)


class VerifiedProjections:
    """Participant state, deviations, summary and audit trail, from verified envelopes only."""

    def __init__(self, vstore: VerifiedStore, checkpoint_candidates: list[tuple[int, str]] | None = None):
        self.vstore = vstore
        # Trial only reads here; it is typed for Store, and VerifiedStore offers the same read methods.
        self.trial = Trial(vstore)  # type: ignore[arg-type]
        self._candidates = checkpoint_candidates or []
        self._registry: SignerRegistry | None = None

    def registry(self) -> SignerRegistry:
        if self._registry is None:
            self._registry = self.trial.registry()
        return self._registry

    def checkpoint(self) -> VerifiedCheckpoint | None:
        """The newest stored checkpoint that the root key signed and this verified log reproduces."""
        return verified_checkpoint(self.vstore, self._candidates)

    # -- participants -------------------------------------------------------------------------

    def participant_ids(self) -> list[str]:
        return [s for s in self.vstore.streams() if s != STUDY_STREAM]

    def participant(self, participant: str) -> dict[str, Any] | None:
        if participant == STUDY_STREAM or self.vstore.stream_length(participant) == 0:
            return None
        st = states.empty_state(participant)
        for record in self.vstore.stream_records(participant):
            states.apply(st, record.envelope(), record.position)
        return st

    def deviations(self, participant: str | None = None, *, open_only: bool = False) -> list[dict[str, Any]]:
        """Every deviation ever raised (SPEC §4), or only the open ones; as ``Projections.deviations``."""
        protocol = self.registry().protocol
        if protocol is None:
            return []
        out: list[dict[str, Any]] = []
        for pid in ([participant] if participant else self.participant_ids()):
            if self.vstore.stream_length(pid) == 0 or pid == STUDY_STREAM:
                continue
            found = self.trial.deviations(pid, upto=self.vstore.head_position(), protocol=protocol)
            out.extend(d.as_dict() for d in found if not open_only or d.status == "open")
        return out

    def participants(self, status: str | None = None) -> list[dict[str, Any]]:
        out = []
        for pid in self.participant_ids():
            st = self.participant(pid)
            if st is None or (status and st["status"] != status):
                continue
            c = counts(st)
            out.append({"participant": pid, "status": st["status"], "site": st["site"], "consent": c["consent"],
                        "doses": sum(c["doses"].values()), "adverse_events": len(c["adverse_events"]),
                        "events": c["events"]})
        return out

    def summary(self) -> dict[str, Any]:
        registry = self.registry()
        if registry.protocol is None:
            return {}
        all_counts: list[dict[str, Any]] = []
        tally: dict[tuple[str, bool], int] = {}
        for pid in self.participant_ids():
            st = self.participant(pid)
            if st is None:
                continue
            all_counts.append(counts(st))
            for d in self.deviations(pid):
                key = (d["kind"], d["important"])
                tally[key] = tally.get(key, 0) + 1
        devs = [(kind, important, n) for (kind, important), n in sorted(tally.items())]
        return summarise(all_counts, devs, registry.protocol.target_enrolment)

    # -- audit trail --------------------------------------------------------------------------

    def _stream_pairs(self, stream: str) -> list[tuple[Any, Envelope]]:
        return _decoded(self.vstore.stream_records(stream))

    def audit(self, *, participant: str | None = None, user: str | None = None, type_name: str | None = None,
              since_us: int | None = None, until_us: int | None = None) -> Iterator[dict[str, Any]]:
        """Audit rows in log order, each from a verified event (so every signature verified)."""
        registry = SignerRegistry()
        # A correction's old value: the target's data folded from its stream's verified read up to the
        # change (a few streams kept), so memory holds no entry of the whole log.
        targets = TargetStates(self._stream_pairs, empty=lambda _s: {}, apply=lambda known, env, _p: _track(known, env),
                               entry=lambda known, event_id: dict(known[event_id]) if event_id in known else None)
        for record in self.vstore.records():
            env = record.envelope()
            signer = _signer(registry, env)
            target_data = None
            if env.stream == STUDY_STREAM:
                registry.observe(env)
            elif env.type in ("EntryCorrected", "EntryVoided"):
                target_data = targets.data(record, env)
            if participant is not None and env.stream != participant:
                continue
            for row in audit_rows.rows_for(record, env, signer, True, target_data):
                if user is not None and row["user_id"] != user:
                    continue
                if type_name is not None and row["event_type"] != type_name:
                    continue
                if since_us is not None and row["recorded_us"] < since_us:
                    continue
                if until_us is not None and row["recorded_us"] > until_us:
                    continue
                yield {k: row[k] for k in audit_rows.COLUMNS}


def _decoded(records: list[Any]) -> list[tuple[Any, Envelope]]:
    return [(r, r.envelope()) for r in records]


def _track(entries: dict[str, dict[str, Any]], env: Envelope) -> None:
    """Each entry's current data, as ``states.apply`` keeps it (corrections update it)."""
    entries[env.event_id] = dict(env.data)
    if env.type == "EntryCorrected":
        target = entries.get(str(env.data.get("target_event_id")))
        if target is not None:
            target.update(env.data.get("changes") or {})


def _signer(registry: SignerRegistry, env: Envelope) -> audit_rows.Signer:
    """Who signed, as the registry knew them then (the projector's rule)."""
    entry = registry.signer_for_key(env.key_id)
    if env.type == "StudyInitialised":
        return audit_rows.Signer(env.author, str(env.data.get("admin_name")), "admin")
    if entry is not None:
        return audit_rows.Signer(entry.user_id, entry.name, entry.role)
    return audit_rows.Signer(env.author, "(unknown signer)", "(none)")
