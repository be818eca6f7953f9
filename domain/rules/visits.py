"""Follow-up visits: each within its window, counted from dose 1."""

from __future__ import annotations

from collections.abc import Iterator

from domain.rules.history import Deviation, History
from domain.rules.rule import Rule, reads


def visit_outside_window(h: History) -> Iterator[Deviation]:
    for visit in h.of("VisitCompleted"):
        spec = h.protocol.visit(str(visit.data.get("visit")))
        if spec is None:
            continue
        day = h.study_day(visit)
        if day is None:
            yield h.deviation("visit_outside_window", False, [visit],
                              f"visit {spec.id} completed with no dose 1 on record to count from")
        elif not spec.day - spec.minus <= day <= spec.day + spec.plus:
            yield h.deviation("visit_outside_window", False, [visit],
                              f"visit {spec.id} on study day {day}, outside its window "
                              f"(days {spec.day - spec.minus} to {spec.day + spec.plus})")


VISIT_OUTSIDE_WINDOW = Rule(visit_outside_window, reads("VisitCompleted", "InfusionAdministered"))
