"""The study summary: screened, enrolled against target, doses, AEs by grade, deviations."""

from __future__ import annotations

from collections import Counter
from typing import Any


def counts(state: dict[str, Any]) -> dict[str, Any]:
    """The few numbers of one participant that the summary and the participant list need."""
    return {
        "status": state["status"],
        "consent": state["consent"]["status"],
        "screened": bool(state["criteria"]) or state["status"] in ("screen_failed", "eligible"),
        "enrolled": bool(state.get("enrolled")),
        "doses": dict(Counter(str(d["dose_number"]) for d in state["doses"] if not d["voided"])),
        "adverse_events": [[a.get("grade"), bool(a.get("serious"))]
                           for a in state["adverse_events"].values() if not a["voided"]],
        "events": state["events"],
    }


def summarise(states: list[dict[str, Any]], deviations: list[tuple[str, bool, int]],
              target: int | None) -> dict[str, Any]:
    """``states`` are per-participant ``counts``; ``deviations`` are (kind, important, how many).

    Deviations come pre-counted because a large ledger can hold one per event:
    the summary must not read them all into memory.
    """
    statuses = Counter(s["status"] for s in states)
    screened = sum(1 for s in states if s["screened"])
    enrolled = sum(1 for s in states if s["enrolled"])
    doses: Counter[str] = Counter()
    for s in states:
        doses.update(s["doses"])
    grades = Counter(str(grade) for s in states for grade, _serious in s["adverse_events"])
    serious = sum(1 for s in states for _grade, is_serious in s["adverse_events"] if is_serious)
    kinds: Counter[str] = Counter()
    for kind, _important, n in deviations:
        kinds[kind] += n
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
        "deviations": sum(n for _kind, _important, n in deviations),
        "important_deviations": sum(n for _kind, important, n in deviations if important),
        "deviations_by_kind": dict(sorted(kinds.items())),
    }
