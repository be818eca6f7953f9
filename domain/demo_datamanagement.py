"""The demo's data-management phase (issue 20), after the trial's clinical history.

What a monitor and the investigators do once follow-up ends: the monitor raises queries (one
answered with a correction by the lab and closed, one answered by the site and closed, one
left open), source-verifies most entries of the first participants, each investigator signs
every completed casebook, a late lab correction makes one sign-off (and one SDV) stale, and
the sponsor locks the database. Deterministic for a seed, like the rest of the demo.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from domain.datamanagement import NOT_VERIFIABLE, stored_casebook_hash
from domain.service import Command, Trial

if TYPE_CHECKING:
    from domain.demo import Scenario, SimClock

SDV_PARTICIPANTS = 6   # the monitor verifies most entries of the first six participants
SDV_SKIP_EVERY = 7     # ... leaving every seventh entry for the next visit
STALE_SIGNOFF = 6      # S01-006's D365 C-peptide is corrected after its sign-off


def data_management(trial: Trial, clock: SimClock, scenario: Scenario) -> None:
    signers = scenario.signers
    plan = [p.command for p in scenario.plan]
    by_participant: dict[str, list[Command]] = {}
    for c in plan:
        if c.participant:
            by_participant.setdefault(c.participant, []).append(c)
    clock.now = max(p.recorded_at for p in scenario.plan) + timedelta(days=3)

    def act(user: str, type_name: str, pid: str | None, data: dict[str, Any], *, reason: str | None = None,
            meaning: str | None = None) -> str:
        clock.now += timedelta(minutes=7)
        event_id = scenario.new_id()
        trial.append(Command(type_name, pid, data, meaning=meaning, reason=reason, event_id=event_id), signers[user])
        return event_id

    def entries(pid: str, type_name: str, analyte: str | None = None) -> list[str]:
        return [c.event_id for c in by_participant.get(pid, []) if c.type == type_name and c.event_id
                and (analyte is None or c.data.get("analyte") == analyte)]

    completed = [pid for pid, cs in sorted(by_participant.items()) if any(c.type == "ParticipantCompleted" for c in cs)]
    if not completed:
        return
    # Queries: answered with a correction and closed; answered by the site and closed; one left open.
    first = completed[0]
    fbg = entries(first, "LabResultRecorded", "FBG")[-1]
    act("mon-smith", "QueryRaised", first, {"query_id": f"Q-{first}-1", "target_event_id": fbg,
                                            "text": "D365 glucose differs from the lab report in the source file"})
    clock.now += timedelta(days=1)
    old = next(c for c in plan if c.event_id == fbg).data["value"]
    fix = act("lab-zhao", "EntryCorrected", first, {"target_event_id": fbg, "changes": {"value": round(old + 0.2, 1)}},
              reason="transcription error; lab report reads the corrected value")
    act("lab-zhao", "QueryAnswered", first, {"query_id": f"Q-{first}-1", "text": "corrected to match the lab report",
                                             "correction_event_id": fix})
    act("mon-smith", "QueryClosed", first, {"query_id": f"Q-{first}-1", "reason": "correction checked against source"})
    if len(completed) > 1:
        second = completed[1]
        visit = entries(second, "VisitCompleted")[0]
        act("mon-smith", "QueryRaised", second, {"query_id": f"Q-{second}-1", "target_event_id": visit,
                                                 "text": "D30 visit date not in the visit log"})
        act("coord-wang", "QueryAnswered", second, {"query_id": f"Q-{second}-1",
                                                    "text": "visit log page 14 added to the source file"})
        act("mon-smith", "QueryClosed", second, {"query_id": f"Q-{second}-1"})
    last = completed[-1]
    act("mon-smith", "QueryRaised", last, {"query_id": f"Q-{last}-1", "target_event_id":
                                           entries(last, "LabResultRecorded", "CPEPTIDE")[-1],
                                           "text": "C-peptide unit: please attach the lab's reference range"})
    # Source data verification of most entries of the first participants.
    for pid in sorted(by_participant)[:SDV_PARTICIPANTS]:
        verifiable = [c.event_id for c in by_participant[pid]
                      if c.event_id and c.type not in NOT_VERIFIABLE]
        checks = []
        for n, event_id in enumerate(verifiable):
            if n % SDV_SKIP_EVERY == SDV_SKIP_EVERY - 1:
                continue
            record = trial.store.record_by_event_id(event_id)
            assert record is not None
            checks.append(Command("SourceVerified", pid, {"target_event_id": event_id,
                                                          "target_hash": record.hash.hex()},
                                  event_id=scenario.new_id()))
        clock.now += timedelta(hours=3)  # one sitting per participant: one batch
        trial.append_batch(checks, signers["mon-smith"])
    # Every completed casebook signed by the investigator who confirmed eligibility.
    for pid in completed:
        inv = next(scenario_author(scenario, c) for c in by_participant[pid] if c.type == "EligibilityConfirmed")
        up_to = trial.store.stream_length(pid)
        act(inv, "CasebookSigned", pid, {"up_to_position": up_to,
                                         "casebook_hash": stored_casebook_hash(trial.store, pid, up_to)},
            meaning="approval")
    # A late correction: the sign-off of that casebook (and the SDV of the entry) go stale.
    stale = f"S01-{STALE_SIGNOFF:03d}"
    if stale in completed:
        cpep = entries(stale, "LabResultRecorded", "CPEPTIDE")[-1]
        old = next(c for c in plan if c.event_id == cpep).data["value"]
        clock.now += timedelta(days=2)
        act("lab-zhao", "EntryCorrected", stale, {"target_event_id": cpep, "changes": {"value": round(old + 0.05, 2)}},
            reason="assay recalibrated; repeat run reported by the central lab")
    clock.now += timedelta(days=5)
    act("admin-sponsor", "DatabaseLocked", None, {})


def scenario_author(scenario: Scenario, command: Command) -> str:
    return next(p.user for p in scenario.plan if p.command is command)
