"""Eligibility rules: enrolment needs every criterion assessed and passed; eligibility must agree with the labs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from domain.protocol import Check, Criterion
from domain.rules.history import Deviation, Fact, History
from domain.rules.rule import Rule, reads


def applies(criterion: Criterion, sex: str | None) -> bool:
    """A criterion whose every check is for the other sex does not apply (e.g. I8 for men)."""
    if not criterion.checks:
        return True
    return any(c.applies_to_sex is None or c.applies_to_sex == sex for c in criterion.checks)


def failed(criterion: Criterion, assessment: Fact) -> bool:
    met: object = assessment.data.get("met")
    return met is not True if criterion.kind == "inclusion" else met is not False


def breaks(check: Check, value: Any) -> bool:
    if check.equals is not None:
        return bool(value != check.equals)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return (check.min is not None and value < check.min) or (check.max is not None and value > check.max)


def latest_assessments(h: History, by: Fact) -> Iterator[tuple[Criterion, Fact | None]]:
    """Each criterion that applies to the participant, with its latest assessment made by ``by``'s clinical time."""
    sex = h.sex()
    assessments = [a for a in h.of("ScreeningAssessed") if a.occurred <= by.occurred]
    for criterion in h.protocol.criteria:
        if applies(criterion, sex):
            latest = [a for a in assessments if a.data.get("criterion") == criterion.id]
            yield criterion, latest[-1] if latest else None


def enrolment_criteria(h: History) -> Iterator[Deviation]:
    for enrolled in h.of("Enrolled"):
        missing, failing = [], []
        failing_facts: list[Fact] = []
        for criterion, latest in latest_assessments(h, enrolled):
            if latest is None:
                missing.append(criterion.id)
            elif failed(criterion, latest):
                failing.append(criterion.id)
                failing_facts.append(latest)
        if failing:
            yield h.deviation("enrolled_with_failed_criterion", True, [enrolled, *failing_facts],
                              f"enrolled although {', '.join(failing)} failed at screening")
        if missing:
            yield h.deviation("enrolled_with_unassessed_criterion", True, [enrolled],
                              f"enrolled before {', '.join(missing)} was assessed")


def possible_ages(h: History, at: Fact) -> tuple[int, ...]:
    """Age at ``at`` from the most precise date recorded: exact with a birth date, else both candidates."""
    born = h.birth_date()
    day = at.occurred.date()
    if born is not None:
        return (day.year - born.year - ((day.month, day.day) < (born.month, born.day)),)
    year = h.birth_year()
    if year is None:
        return ()
    return (day.year - year - 1, day.year - year)


def _age_at_consent(h: History, confirmed: Fact) -> Fact:
    consents = [c for c in h.of("ConsentSigned") if c.occurred <= confirmed.occurred]
    return consents[0] if consents else confirmed


def eligibility_against_labs(h: History) -> Iterator[Deviation]:
    sex = h.sex()
    for confirmed in h.of("EligibilityConfirmed"):
        for criterion in h.protocol.criteria:
            for check in criterion.checks:
                if check.applies_to_sex is not None and check.applies_to_sex != sex:
                    continue
                if check.source == "age":
                    ages = possible_ages(h, _age_at_consent(h, confirmed))
                    broken = [a for a in ages if breaks(check, a)]
                    if ages and len(broken) == len(ages):
                        yield h.deviation("eligibility_threshold_broken", True, [confirmed],
                                          f"eligibility confirmed at age {broken[-1]}, outside {criterion.id} "
                                          f"({criterion.text})")
                    elif broken:
                        yield h.deviation("age_needs_confirmation", False, [confirmed],
                                          f"with a birth year only, age at consent may be {broken[0]}, outside "
                                          f"{criterion.id} ({criterion.text}): investigator to confirm the birth date")
                    continue
                labs = [f for f in h.of("LabResultRecorded")
                        if f.data.get("analyte") == check.analyte and f.occurred <= confirmed.occurred]
                if labs and breaks(check, labs[-1].data.get("value")):
                    lab = labs[-1]
                    yield h.deviation("eligibility_threshold_broken", True, [confirmed, lab],
                                      f"eligibility confirmed while {check.analyte} = {lab.data.get('value')} "
                                      f"breaks {criterion.id} ({criterion.text})")


def eligibility_incomplete(h: History) -> Iterator[Deviation]:
    """Eligibility confirmed with a criterion unassessed, a required lab missing, or an assessment contradicting its lab."""
    sex = h.sex()
    for confirmed in h.of("EligibilityConfirmed"):
        labs = [f for f in h.of("LabResultRecorded") if f.occurred <= confirmed.occurred]
        missing, no_lab, contradicted = [], [], []
        for criterion, latest in latest_assessments(h, confirmed):
            if latest is None:
                missing.append(criterion.id)
            for check in criterion.checks:
                if check.source != "lab" or (check.applies_to_sex is not None and check.applies_to_sex != sex):
                    continue
                results = [f for f in labs if f.data.get("analyte") == check.analyte]
                if not results:
                    no_lab.append(f"{criterion.id} ({check.analyte})")
                elif latest and _contradicts(latest, results[-1], check, len(criterion.checks) == 1):
                    contradicted.append(f"{criterion.id} recorded {latest.data.get('value')!r} "
                                        f"but {check.analyte} = {results[-1].data.get('value')!r}")
        if missing:
            yield h.deviation("eligibility_incomplete", True, [confirmed],
                              f"eligibility confirmed with {', '.join(missing)} unassessed")
        if no_lab:
            yield h.deviation("eligibility_lab_missing", True, [confirmed],
                              f"eligibility confirmed with no lab result for {', '.join(no_lab)}")
        if contradicted:
            yield h.deviation("eligibility_contradicts_lab", True, [confirmed],
                              f"eligibility confirmed while {'; '.join(contradicted)}")


def _contradicts(assessment: Fact, lab: Fact, check: Check, single: bool) -> bool:
    """A 'met' the lab breaks, or (for a one-lab criterion) a recorded value that differs from the lab's."""
    if assessment.data.get("met") is True and breaks(check, lab.data.get("value")):
        return True
    value = assessment.data.get("value")
    if value is None or not single:
        return False
    lab_value = lab.data.get("value")
    if isinstance(value, (int, float)) and isinstance(lab_value, (int, float)):
        return abs(float(value) - float(lab_value)) > 1e-9
    return isinstance(value, str) and isinstance(lab_value, str) and value != lab_value


def lab_before_confirmation(h: History, lab: Fact) -> bool:
    """Only a lab result dated by an eligibility confirmation can change what that confirmation rested on."""
    return lab.type == "LabResultRecorded" and any(lab.occurred <= c.occurred for c in h.of("EligibilityConfirmed"))


ENROLMENT_CRITERIA = Rule(enrolment_criteria, reads("Enrolled", "ScreeningAssessed", "ParticipantRegistered"))
ELIGIBILITY_AGAINST_LABS = Rule(eligibility_against_labs,
                                reads("EligibilityConfirmed", "ParticipantRegistered", "ConsentSigned"),
                                again=lab_before_confirmation)
ELIGIBILITY_INCOMPLETE = Rule(eligibility_incomplete,
                              reads("EligibilityConfirmed", "ScreeningAssessed", "ParticipantRegistered"),
                              again=lab_before_confirmation)
