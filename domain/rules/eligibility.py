"""Eligibility rules: enrolment needs every criterion assessed and passed; eligibility must agree with the labs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from domain.protocol import Check, Criterion
from domain.rules.history import Deviation, Fact, History


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


def enrolment_criteria(h: History) -> Iterator[Deviation]:
    sex = h.sex()
    for enrolled in h.of("Enrolled"):
        assessments = [a for a in h.of("ScreeningAssessed") if a.occurred <= enrolled.occurred]
        missing, failing = [], []
        failing_facts: list[Fact] = []
        for criterion in h.protocol.criteria:
            if not applies(criterion, sex):
                continue
            latest = [a for a in assessments if a.data.get("criterion") == criterion.id]
            if not latest:
                missing.append(criterion.id)
            elif failed(criterion, latest[-1]):
                failing.append(criterion.id)
                failing_facts.append(latest[-1])
        if failing:
            yield h.deviation("enrolled_with_failed_criterion", True, [enrolled, *failing_facts],
                              f"enrolled although {', '.join(failing)} failed at screening")
        if missing:
            yield h.deviation("enrolled_with_unassessed_criterion", True, [enrolled],
                              f"enrolled before {', '.join(missing)} was assessed")


def eligibility_against_labs(h: History) -> Iterator[Deviation]:
    sex, birth_year = h.sex(), h.birth_year()
    for confirmed in h.of("EligibilityConfirmed"):
        for criterion in h.protocol.criteria:
            for check in criterion.checks:
                if check.applies_to_sex is not None and check.applies_to_sex != sex:
                    continue
                if check.source == "age":
                    if birth_year is None:
                        continue
                    age = confirmed.occurred.year - birth_year
                    if breaks(check, age):
                        yield h.deviation("eligibility_threshold_broken", True, [confirmed],
                                          f"eligibility confirmed at age {age}, outside {criterion.id} ({criterion.text})")
                    continue
                labs = [f for f in h.of("LabResultRecorded")
                        if f.data.get("analyte") == check.analyte and f.occurred <= confirmed.occurred]
                if labs and breaks(check, labs[-1].data.get("value")):
                    lab = labs[-1]
                    yield h.deviation("eligibility_threshold_broken", True, [confirmed, lab],
                                      f"eligibility confirmed while {check.analyte} = {lab.data.get('value')} "
                                      f"breaks {criterion.id} ({criterion.text})")
