"""The study summary: screened, enrolled against target, doses, AEs by grade, deviations."""

from __future__ import annotations

from collections import Counter
from typing import Any


def summarise(states: list[dict[str, Any]], deviations: list[dict[str, Any]], target: int | None) -> dict[str, Any]:
    statuses = Counter(s["status"] for s in states)
    screened = sum(1 for s in states if s["criteria"] or s["status"] in ("screen_failed", "eligible"))
    enrolled = sum(1 for s in states if s.get("enrolled"))
    doses = Counter(str(d["dose_number"]) for s in states for d in s["doses"] if not d["voided"])
    grades = Counter(str(a.get("grade")) for s in states for a in s["adverse_events"].values() if not a["voided"])
    serious = sum(1 for s in states for a in s["adverse_events"].values() if not a["voided"] and a.get("serious"))
    kinds = Counter(d["kind"] for d in deviations)
    return {
        "participants": len(states),
        "by_status": dict(sorted(statuses.items())),
        "screened": screened,
        "screen_failed": statuses.get("screen_failed", 0),
        "enrolled": enrolled,
        "target_enrolment": target,
        "doses_given": sum(doses.values()),
        "doses_by_number": dict(sorted(doses.items())),
        "adverse_events": sum(grades.values()),
        "adverse_events_by_grade": dict(sorted(grades.items())),
        "serious_adverse_events": serious,
        "deviations": len(deviations),
        "important_deviations": sum(1 for d in deviations if d["important"]),
        "deviations_by_kind": dict(sorted(kinds.items())),
    }
