"""Property: for random valid histories followed by random permitted corrections, voids and amendments,
the number of deviations ever raised never decreases, and replaying the log gives the same book."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.protocol import bundled_protocol_path, load_protocol
from domain.rules import DeviationBook, Entry, ProtocolVersion, deviation_history
from tests.builders import DAY0, HistoryBuilder, compliant

PROTOCOL = load_protocol(bundled_protocol_path())
GENESIS = ProtocolVersion(1, datetime(2010, 1, 1, tzinfo=UTC), PROTOCOL, PROTOCOL.icf_version, "genesis",
                          "admin")


def amended(n: int, widen: int, effective_day: int) -> ProtocolVersion:
    doc = PROTOCOL.document()
    doc["version"] = f"1.{n}"
    for dose in doc["doses"][1:]:
        dose["minus"] += widen
        dose["plus"] += widen
    doc["late_entry_hours"] = 72 + 24 * widen
    protocol = type(PROTOCOL).model_validate(doc)
    return ProtocolVersion(0, DAY0 + timedelta(days=effective_day), protocol, protocol.icf_version,
                           str(uuid.uuid4()), "admin", "amendment")


CHANGES = {
    "LabResultRecorded": st.fixed_dictionaries({"value": st.floats(0, 50).map(lambda v: round(v, 1))}),
    "ScreeningAssessed": st.fixed_dictionaries({"met": st.booleans()}),
    "InfusionAdministered": st.fixed_dictionaries({"identity_checked": st.booleans()}),
    "ParticipantRegistered": st.fixed_dictionaries({"birth_year": st.integers(1925, 2000)}),
    "VisitCompleted": st.fixed_dictionaries({"visit": st.sampled_from(["D30", "D90", "D180"])}),
}


@st.composite
def history(draw: st.DrawFn) -> tuple[HistoryBuilder, list[Entry | ProtocolVersion]]:
    """A compliant or slightly deviant history, then edits and amendments appended in log order."""
    h = compliant(draw(st.sampled_from(["F", "M"])), doses=False, visits=())
    for number, day in ((1, 0), (2, draw(st.integers(4, 10))), (3, draw(st.integers(10, 18)))):
        if draw(st.booleans()) or number == 1:
            h.dose(number, day, data={"identity_checked": draw(st.booleans())},
                   recorded_lag_h=draw(st.sampled_from([1, 100])))
    if draw(st.booleans()):
        h.lab("FBG", draw(st.floats(5, 9).map(lambda v: round(v, 1))), "mmol/L", day=draw(st.integers(-16, -11)))
    if draw(st.booleans()):
        h.add("VisitCompleted", {"visit": "D30"}, day=draw(st.integers(25, 35)))
    steps: list[Entry | ProtocolVersion] = list(h.entries)
    voided: set[str] = set()
    for n in range(draw(st.integers(1, 5))):
        action = draw(st.sampled_from(["correct", "void", "amend", "backdate"]))
        targets = [e for e in h.entries if e.envelope.type in CHANGES and e.envelope.event_id not in voided]
        if action == "amend":
            version = amended(n, draw(st.integers(0, 3)), draw(st.integers(-30, 60)))
            h.position += 1
            steps.append(ProtocolVersion(h.position, version.effective, version.protocol, version.icf_version,
                                         version.event_id, version.author, version.reason))
        elif action == "backdate":
            steps.append(h.add("ConsentSigned", {"icf_version": "1.0", "obtained_by": "inv1"},
                               day=draw(st.integers(-20, -15)), recorded_lag_h=24 * 30))
        elif targets:
            target = draw(st.sampled_from(targets))
            tid = target.envelope.event_id
            if action == "void" and target.envelope.type != "ParticipantRegistered":
                voided.add(tid)
                steps.append(h.add("EntryVoided", {"target_event_id": tid}, day=60, reason="void"))
            else:
                changes = draw(CHANGES[target.envelope.type])
                steps.append(h.add("EntryCorrected", {"target_event_id": tid, "changes": changes}, day=60,
                                   reason="fix"))
    return h, steps


def check_never_decreases(steps: list[Entry | ProtocolVersion]) -> None:
    versions = [GENESIS] + [s for s in steps if isinstance(s, ProtocolVersion)]
    book = DeviationBook("S01-001", versions)
    raised = 0
    for step in steps:
        if isinstance(step, ProtocolVersion):
            book.amend(step)
        else:
            book.observe(step)
        assert len(book.tracked) >= raised
        raised = len(book.tracked)
        # what was raised stays raised: a resolved one keeps who resolved it and why
        for t in book.tracked:
            assert (t.status == "resolved") == (t.resolved_by is not None)
    entries = [s for s in steps if isinstance(s, Entry)]
    replayed = deviation_history("S01-001", entries, versions)
    assert [t.as_dict() for t in replayed] == [t.as_dict() for t in book.tracked]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history())
def test_deviations_ever_raised_never_decrease(generated: tuple[HistoryBuilder, list[Entry | ProtocolVersion]]) -> None:
    check_never_decreases(generated[1])


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history())
def test_deviations_ever_raised_never_decrease_many(generated: tuple[HistoryBuilder, list[Entry | ProtocolVersion]]) -> None:
    check_never_decreases(generated[1])


def test_a_correction_resolves_but_keeps_the_deviation() -> None:
    h = compliant()
    lab = h.lab("FBG", 6.1, "mmol/L", day=-11)
    fix = h.add("EntryCorrected", {"target_event_id": lab.envelope.event_id, "changes": {"value": 8.1}}, day=-9,
                reason="transcription error", author="lab1")
    book = deviation_history(h.participant, h.entries, [GENESIS])
    broken = [t for t in book if t.kind == "eligibility_threshold_broken"]
    assert len(broken) == 1 and broken[0].status == "resolved"
    assert (broken[0].resolved_by, broken[0].resolved_who, broken[0].resolved_why) == (
        fix.envelope.event_id, "lab1", "transcription error")
    assert broken[0].raised_at_position < broken[0].resolved_at_position  # type: ignore[operator]


def test_each_event_is_judged_under_the_protocol_in_force_at_its_clinical_time() -> None:
    h = compliant(doses=False, visits=())
    h.dose(1, 0)
    h.dose(2, 9)  # outside day 7 ±1
    h.dose(3, 14)
    wide = amended(1, 3, 300)  # dose windows ±4, in force from day 300
    versions = [GENESIS, ProtocolVersion(h.position + 1, wide.effective, wide.protocol, "1.0", "amend", "admin")]
    book = deviation_history(h.participant, h.entries, versions)
    assert [(t.kind, t.status) for t in book] == [("dose_outside_window", "open")]
    # the same amendment effective before the dose does resolve it, attributed to the amendment
    early = [GENESIS, ProtocolVersion(h.position + 1, DAY0 - timedelta(days=30), wide.protocol, "1.0", "amend",
                                      "admin", "windows widened")]
    book = deviation_history(h.participant, h.entries, early)
    assert [(t.kind, t.status, t.resolved_by, t.resolved_why) for t in book] == [
        ("dose_outside_window", "resolved", "amend", "windows widened")]


