"""Contemporaneous entry (ALCOA): late entries, and serious AEs entered late after awareness."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from domain.events import ADVERSE_EVENTS
from domain.rules.history import Deviation, Fact, History
from domain.rules.rule import Rule
from domain.timeutil import parse_time


def late_entry(h: History) -> Iterator[Deviation]:
    for f in h.facts:
        yield from _late(h, f)


def _late(h: History, f: Fact) -> Iterator[Deviation]:
    lag = f.recorded - f.occurred
    if lag > timedelta(hours=h.protocol.late_entry_hours):
        yield h.deviation("late_entry", False, [f],
                          f"{f.type} entered {lag.total_seconds() / 3600:.1f} h after it occurred "
                          f"(limit {h.protocol.late_entry_hours:g} h)")


def serious_ae_late(h: History) -> Iterator[Deviation]:
    for f in h.of(*ADVERSE_EVENTS):
        yield from _serious_late(h, f)


def _serious_late(h: History, f: Fact) -> Iterator[Deviation]:
    if f.type not in ADVERSE_EVENTS or f.data.get("serious") is not True:
        return
    aware = parse_time(f.data.get("awareness_at")) or f.occurred
    lag = f.recorded - aware
    if lag > timedelta(hours=h.protocol.sae_report_hours):
        yield h.deviation("serious_ae_late", True, [f],
                          f"serious AE {f.data.get('ae_id')} entered {lag.total_seconds() / 3600:.1f} h "
                          f"after awareness (limit {h.protocol.sae_report_hours:g} h)")


LATE_ENTRY = Rule(late_entry, each=_late)
SERIOUS_AE_LATE = Rule(serious_ae_late, each=_serious_late)
