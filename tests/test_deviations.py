"""Every deviation kind of SPEC §4: found when it should be, not found for the compliant case beside it."""

from __future__ import annotations

import pytest

from domain.protocol import bundled_protocol_path, load_protocol
from domain.rules import Deviation, IcfVersion, find_deviations
from tests.builders import HistoryBuilder, compliant

PROTOCOL = load_protocol(bundled_protocol_path())


def deviations(h: HistoryBuilder, icf: tuple[IcfVersion, ...] = ()) -> list[Deviation]:
    return find_deviations(PROTOCOL, h.participant, h.entries, icf)


def kinds(h: HistoryBuilder, icf: tuple[IcfVersion, ...] = ()) -> set[str]:
    return {d.kind for d in deviations(h, icf)}


@pytest.mark.parametrize("sex", ["F", "M"])
def test_compliant_participant_has_no_deviation(sex: str) -> None:
    assert deviations(compliant(sex)) == []


def test_procedure_before_consent() -> None:
    h = compliant()
    early = h.lab("FBG", 8.0, "mmol/L", day=-15)
    found = [d for d in deviations(h) if d.kind == "procedure_before_consent"]
    assert [d.event_ids for d in found] == [(early.envelope.event_id,)]
    assert found[0].important


def test_lab_after_consent_is_not_before_consent() -> None:
    h = compliant()
    h.lab("FBG", 8.0, "mmol/L", day=-13)
    assert "procedure_before_consent" not in kinds(h)


@pytest.mark.parametrize(("scope", "late_type", "flagged"), [
    ("all", "LabResultRecorded", True), ("all", "InfusionAdministered", True),
    ("treatment", "InfusionAdministered", True), ("treatment", "LabResultRecorded", False),
])
def test_data_after_withdrawal(scope: str, late_type: str, flagged: bool) -> None:
    h = compliant(doses=False, visits=())
    h.dose(1, 0)
    h.add("ConsentWithdrawn", {"scope": scope}, day=3, reason="moved away")
    if late_type == "LabResultRecorded":
        h.lab("FBG", 8.0, "mmol/L", day=5)
    else:
        h.dose(2, 7)
    assert ("data_after_withdrawal" in kinds(h)) is flagged


def test_data_before_withdrawal_is_fine() -> None:
    h = compliant(doses=False, visits=())
    h.dose(1, 0)
    h.lab("FBG", 8.0, "mmol/L", day=2)
    h.add("ConsentWithdrawn", {"scope": "all"}, day=3, reason="moved away")
    h.add("ParticipantWithdrawn", {}, day=3, reason="consent withdrawn")
    assert "data_after_withdrawal" not in kinds(h)
    assert "dose_missing" not in kinds(h)


@pytest.mark.parametrize(("enrolled", "eligible_first", "flagged"), [
    (True, True, False), (False, True, True), (True, False, True),
])
def test_dose_to_non_enrolled_or_ineligible(enrolled: bool, eligible_first: bool, flagged: bool) -> None:
    h = HistoryBuilder()
    h.add("ParticipantRegistered", {"site": "S01", "sex": "M", "birth_year": 1960}, day=-14)
    h.add("ConsentSigned", {"icf_version": "1.0", "obtained_by": "inv1"}, day=-14)
    if eligible_first:
        h.add("EligibilityConfirmed", {}, day=-10)
    if enrolled:
        h.add("Enrolled", {}, day=-10)
    h.dose(1, 0)
    assert ("dose_not_enrolled_or_ineligible" in kinds(h)) is flagged


def test_dose_after_screen_failure() -> None:
    h = compliant(doses=False, visits=())
    h.add("ScreenFailed", {"failed_criteria": ["I5"]}, day=-5)
    h.dose(1, 0)
    assert "dose_not_enrolled_or_ineligible" in kinds(h)


@pytest.mark.parametrize(("day", "flagged"), [(5, True), (6, False), (7, False), (8, False), (9, True)])
def test_dose_2_window_edges(day: int, flagged: bool) -> None:
    h = compliant(doses=False, visits=())
    h.dose(1, 0)
    h.dose(2, day)
    h.dose(3, 14)
    assert ("dose_outside_window" in kinds(h)) is flagged


@pytest.mark.parametrize(("day", "flagged"), [(11, True), (12, False), (14, False), (16, False), (17, True)])
def test_dose_3_window_edges(day: int, flagged: bool) -> None:
    h = compliant(doses=False, visits=())
    h.dose(1, 0)
    h.dose(2, 7)
    h.dose(3, day)
    assert ("dose_outside_window" in kinds(h)) is flagged


def test_window_counts_calendar_days_in_each_events_offset() -> None:
    h = compliant(doses=False, visits=())
    h.dose(1, 0, hours=14)  # 23:00 local on day 0
    h.dose(2, 8, hours=-8)  # 01:00 local on day 8: still in window (day 8)
    h.dose(3, 14)
    assert "dose_outside_window" not in kinds(h)


def test_dose_out_of_order_and_twice() -> None:
    h = compliant(doses=False, visits=())
    h.dose(1, 0)
    h.dose(3, 7)
    h.dose(2, 8)
    assert "dose_out_of_order" in kinds(h)
    twice = compliant(doses=False, visits=())
    twice.dose(1, 0)
    twice.dose(1, 1)
    assert "dose_out_of_order" in kinds(twice)


def test_dose_missing_once_its_window_passed() -> None:
    h = compliant(doses=False, visits=())
    h.dose(1, 0)
    h.dose(2, 7)
    h.add("VisitCompleted", {"visit": "D30"}, day=30)
    found = [d for d in deviations(h) if d.kind == "dose_missing"]
    assert len(found) == 1 and "dose 3" in found[0].message


def test_dose_not_missing_while_window_open() -> None:
    h = compliant(doses=False, visits=())
    h.dose(1, 0)
    h.dose(2, 7)
    h.lab("FBG", 7.9, "mmol/L", day=15)  # dose 3 window runs to day 16
    assert "dose_missing" not in kinds(h)


def test_dose_route_and_identity() -> None:
    h = compliant(doses=False, visits=())
    h.dose(1, 0, data={"route": "intravenous"})
    h.dose(2, 7, data={"identity_checked": False})
    h.dose(3, 14)
    assert {"dose_route_mismatch", "identity_not_checked"} <= kinds(h)


@pytest.mark.parametrize(("criterion", "met", "flagged"), [("I5", False, True), ("E2", True, True), ("E2", False, False)])
def test_enrolment_with_failed_criterion(criterion: str, met: bool, flagged: bool) -> None:
    h = compliant()
    h.add("ScreeningAssessed", {"criterion": criterion, "met": met}, day=-11)
    assert ("enrolled_with_failed_criterion" in kinds(h)) is flagged


def test_enrolment_with_unassessed_criterion() -> None:
    h = compliant()
    h.entries = [e for e in h.entries if e.envelope.data.get("criterion") != "I6"]
    found = [d for d in deviations(h) if d.kind == "enrolled_with_unassessed_criterion"]
    assert len(found) == 1 and "I6" in found[0].message


def test_pregnancy_criterion_does_not_apply_to_men() -> None:
    assert "enrolled_with_unassessed_criterion" not in kinds(compliant("M"))


@pytest.mark.parametrize(("analyte", "value", "unit", "flagged"), [
    ("FBG", 6.9, "mmol/L", True), ("FBG", 7.0, "mmol/L", False), ("HBA1C", 6.5, "%", True),
    ("BMI", 31.0, "kg/m2", True), ("BMI", 30.0, "kg/m2", False), ("BMI", 18.9, "kg/m2", True),
    ("PREGNANCY", "positive", "", True), ("ITT", "sensitive", "", True),
])
def test_eligibility_confirmed_while_lab_breaks_threshold(analyte: str, value: float | str, unit: str,
                                                          flagged: bool) -> None:
    h = compliant()
    h.lab(analyte, value, unit, day=-11)  # the latest value before eligibility (day -10)
    assert ("eligibility_threshold_broken" in kinds(h)) is flagged


def test_eligibility_uses_the_corrected_value() -> None:
    h = compliant()
    lab = h.lab("FBG", 6.1, "mmol/L", day=-11)
    assert "eligibility_threshold_broken" in kinds(h)
    h.add("EntryCorrected", {"target_event_id": lab.envelope.event_id, "changes": {"value": 8.1}}, day=-9,
          reason="transcription error")
    assert "eligibility_threshold_broken" not in kinds(h)


def test_eligibility_age_out_of_range() -> None:
    h = compliant()
    h.entries[0] = h.entries[0].__class__(h.entries[0].envelope.model_copy(
        update={"data": {"site": "S01", "sex": "F", "birth_year": 1930}}), h.entries[0].position)
    assert "eligibility_threshold_broken" in kinds(h)


def test_consent_on_an_icf_version_that_was_not_current() -> None:
    h = compliant()
    consent = next(e for e in h.entries if e.envelope.type == "ConsentSigned")
    amended = (IcfVersion(0, "1.0"), IcfVersion(consent.position - 1, "2.0"))
    assert "icf_not_current" in kinds(h, amended)
    before = (IcfVersion(0, "1.0"), IcfVersion(consent.position + 1, "2.0"))
    assert "icf_not_current" not in kinds(h, before)


@pytest.mark.parametrize(("lag_h", "flagged"), [(71, False), (73, True)])
def test_late_entry(lag_h: float, flagged: bool) -> None:
    h = compliant()
    h.lab("CPEPTIDE", 0.5, "nmol/L", day=20, recorded_lag_h=lag_h)
    assert ("late_entry" in kinds(h)) is flagged


@pytest.mark.parametrize(("lag_h", "serious", "flagged"), [(23, True, False), (25, True, True), (30, False, False)])
def test_serious_ae_reported_late(lag_h: float, serious: bool, flagged: bool) -> None:
    h = compliant()
    aware = h.entries[-1].envelope.occurred_at
    h.add("AdverseEventReported", {"ae_id": "AE1", "term": "fever", "grade": 3, "serious": serious,
                                   "relatedness": "possible", "expected": False, "awareness_at": aware},
          day=30, recorded_lag_h=lag_h)
    assert ("serious_ae_late" in kinds(h)) is flagged


@pytest.mark.parametrize(("day", "flagged"), [(26, True), (27, False), (33, False), (34, True)])
def test_follow_up_visit_window(day: int, flagged: bool) -> None:
    h = compliant(visits=(("D30", day),))
    assert ("visit_outside_window" in kinds(h)) is flagged


def test_explicit_protocol_deviation_is_listed() -> None:
    h = compliant()
    h.add("ProtocolDeviationRecorded", {"category": "procedure", "description": "ITT done fasting 6 h not 8 h",
                                        "important": False}, day=-12)
    found = [d for d in deviations(h) if d.kind == "recorded_deviation"]
    assert len(found) == 1 and not found[0].important


def test_voided_entry_no_longer_counts() -> None:
    h = compliant()
    early = h.lab("FBG", 8.0, "mmol/L", day=-15)
    assert "procedure_before_consent" in kinds(h)
    h.add("EntryVoided", {"target_event_id": early.envelope.event_id}, day=-9, reason="entered on wrong participant")
    assert "procedure_before_consent" not in kinds(h)
