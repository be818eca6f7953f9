"""Dosing rules: who may be dosed, the windows from dose 1, order, missing doses, and the product checks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from domain.rules.history import Deviation, Fact, History
from domain.rules.rule import Rule, reads

WITHDRAWALS = ("ConsentWithdrawn", "ParticipantWithdrawn")


def dose_not_allowed(h: History) -> Iterator[Deviation]:
    for dose in h.of("InfusionAdministered"):
        enrolled = any(f.occurred <= dose.occurred for f in h.of("Enrolled"))
        confirmed = [f for f in h.of("EligibilityConfirmed") if f.occurred <= dose.occurred]
        screen_failed = [f for f in h.of("ScreenFailed") if f.occurred <= dose.occurred]
        eligible = bool(confirmed) and not (screen_failed and screen_failed[-1].occurred >= confirmed[-1].occurred)
        if not enrolled or not eligible:
            why = "not enrolled" if not enrolled else "not eligible"
            yield h.deviation("dose_not_enrolled_or_ineligible", True, [dose],
                              f"dose {dose.data.get('dose_number')} given while the participant was {why}")


def _window(h: History, number: int) -> tuple[int, int] | None:
    spec = h.protocol.dose(number)
    return None if spec is None else (spec.day - spec.minus, spec.day + spec.plus)


def dose_schedule(h: History) -> Iterator[Deviation]:
    doses = h.of("InfusionAdministered")
    seen: dict[int, Fact] = {}
    for dose in doses:
        number = dose.data.get("dose_number")
        if not isinstance(number, int):
            continue
        if number in seen:
            yield h.deviation("dose_out_of_order", True, [seen[number], dose], f"dose {number} given twice")
            continue
        if number > 1 and number - 1 not in seen:
            yield h.deviation("dose_out_of_order", True, [dose], f"dose {number} given before dose {number - 1}")
        seen[number] = dose
        day, window = h.study_day(dose), _window(h, number)
        if day is not None and window is not None and not window[0] <= day <= window[1]:
            yield h.deviation("dose_outside_window", True, [dose],
                              f"dose {number} on study day {day}, outside its window (days {window[0]} to {window[1]})")
    yield from _missing_doses(h, seen)


def _missing_doses(h: History, given: dict[int, Fact]) -> Iterator[Deviation]:
    """A dose is missing once later evidence shows its window passed: a later dose, or any later entry."""
    d1 = h.dose1()
    withdrawn = [f.occurred for f in h.of(*WITHDRAWALS)]
    for spec in h.protocol.doses:
        if spec.number in given:
            continue
        later_doses = [f for n, f in given.items() if n > spec.number]
        evidence: Fact | None = later_doses[0] if later_doses else None
        if evidence is None and d1 is not None:
            window_end = d1.day + timedelta(days=spec.day + spec.plus)
            evidence = h.first_dated_after(window_end)
            if evidence is not None and any(w.date() <= window_end for w in withdrawn):
                evidence = None
        if evidence is not None:
            yield h.deviation("dose_missing", True, [evidence],
                              f"dose {spec.number} was never given (window passed, see {evidence.type})")


def dose_product_checks(h: History) -> Iterator[Deviation]:
    for dose in h.of("InfusionAdministered"):
        number = dose.data.get("dose_number")
        spec = h.protocol.dose(number) if isinstance(number, int) else None
        if spec is not None and dose.data.get("route") != spec.route:
            yield h.deviation("dose_route_mismatch", True, [dose],
                              f"dose {number} given {dose.data.get('route')}, protocol says {spec.route}")
        if dose.data.get("identity_checked") is not True:
            yield h.deviation("identity_not_checked", True, [dose],
                              f"dose {number} given without a recorded identity check")


def could_be_missing_dose_evidence(h: History, fact: Fact) -> bool:
    """A fact dated after a dose window closed, that dose not given, may be the first evidence it was missed."""
    d1 = h.dose1()
    if d1 is None:
        return False
    given = {n for dose in h.of("InfusionAdministered") if isinstance(n := dose.data.get("dose_number"), int)}
    closes = [spec.day + spec.plus for spec in h.protocol.doses if spec.number not in given]
    return bool(closes) and fact.day > d1.day + timedelta(days=min(closes))


DOSE_NOT_ALLOWED = Rule(dose_not_allowed, reads("InfusionAdministered", "Enrolled", "EligibilityConfirmed",
                                                "ScreenFailed"))
DOSE_SCHEDULE = Rule(dose_schedule, reads("InfusionAdministered", WITHDRAWALS), again=could_be_missing_dose_evidence)
DOSE_PRODUCT_CHECKS = Rule(dose_product_checks, reads("InfusionAdministered"))
