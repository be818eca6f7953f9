"""Withdrawal, completion and death are terminal (SPEC §4).

A procedure on a terminal participant is refused at append without a
reason; with one it is recorded, and always raises an important deviation.
Safety follow-up (AE reports and updates, expedited reports) and record
keeping (corrections, voids, reviews, recorded deviations) are free.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from domain.events import ADVERSE_EVENTS, RECORD_KEEPING, SAFETY_FOLLOW_UP, TERMINAL
from domain.rules.history import Deviation, Fact, History
from domain.rules.rule import Rule, reads

FREE_AFTER_TERMINAL = SAFETY_FOLLOW_UP + RECORD_KEEPING


def terminal_fact(h: History) -> tuple[str, datetime, Fact] | None:
    """The earliest terminal fact in clinical time: withdrawal, completion, or a grade 5 adverse event."""
    found: list[tuple[datetime, str, Fact]] = []
    for f in h.of(*TERMINAL):
        found.append((f.occurred, "withdrawn" if f.type == "ParticipantWithdrawn" else "completed", f))
    grades: dict[str, tuple[Fact, object]] = {}
    for f in h.of(*ADVERSE_EVENTS):
        ae = str(f.data.get("ae_id"))
        onset = grades[ae][0] if ae in grades else f
        grades[ae] = (onset, f.data.get("grade", grades[ae][1] if ae in grades else None))
    for onset, grade in grades.values():
        if grade == 5:
            found.append((onset.occurred, "dead", onset))
    if not found:
        return None
    when, what, fact = min(found, key=lambda t: (t[0], t[2].position))
    return what, when, fact


def procedure_after_terminal(h: History) -> Iterator[Deviation]:
    terminal = terminal_fact(h)
    if terminal is None:
        return
    for f in h.facts:
        yield from _after(terminal, h, f)


def _after(terminal: tuple[str, datetime, Fact], h: History, f: Fact) -> Iterator[Deviation]:
    what, when, fact = terminal
    if f is fact or f.type in FREE_AFTER_TERMINAL or f.type == "ParticipantRegistered" or f.occurred < when:
        return
    yield h.deviation("procedure_after_terminal", True, [f],
                      f"{f.type} at {f.occurred.isoformat()} after the participant was {what} "
                      f"({when.isoformat()})")


def _procedure_after_terminal_each(h: History, f: Fact) -> Iterator[Deviation]:
    if not h.has(*TERMINAL, *ADVERSE_EVENTS):
        return
    terminal = terminal_fact(h)
    if terminal is not None:
        yield from _after(terminal, h, f)


def _may_change_death(h: History, f: Fact) -> bool:
    """An adverse event changes who is dead only if this entry or another of the same AE says grade 5."""
    if f.type not in ADVERSE_EVENTS:
        return False
    ae = str(f.data.get("ae_id"))
    return any(g.data.get("grade") == 5 for g in h.of(*ADVERSE_EVENTS) if str(g.data.get("ae_id")) == ae)


PROCEDURE_AFTER_TERMINAL = Rule(procedure_after_terminal, reads(TERMINAL), each=_procedure_after_terminal_each,
                                again=_may_change_death)
