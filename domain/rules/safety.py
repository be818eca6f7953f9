"""Expedited reporting of suspected unexpected serious adverse reactions (SUSARs; ICH E2A, EU CT-3).

Serious + related (possible or stronger) + unexpected is a SUSAR. Its clock
runs from awareness: 7 days if fatal or life-threatening (grade 4 or 5),
else 15 (both from the protocol file). Without a ``SafetyReportSubmitted``
by then, once the log shows the time has passed (a later entry, or a late
report), it is an important deviation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from domain.events import ADVERSE_EVENTS
from domain.rules.history import Deviation, Fact, History
from domain.rules.rule import Rule, reads

RELATED = ("possible", "probable", "definite")


def is_susar(values: Mapping[str, Any]) -> bool:
    return values.get("serious") is True and values.get("relatedness") in RELATED and values.get("expected") is False


def report_days(values: Mapping[str, Any], days: int = 15, days_fatal: int = 7) -> int:
    grade = values.get("grade")
    return days_fatal if isinstance(grade, int) and grade >= 4 else days


def _aware(text: object, fallback: datetime) -> datetime:
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        return fallback
    return value if value.tzinfo is not None else fallback


def susar_report_overdue(h: History) -> Iterator[Deviation]:
    aes: dict[str, tuple[Fact, dict[str, Any]]] = {}
    for f in h.of(*ADVERSE_EVENTS):
        ae = str(f.data.get("ae_id"))
        first, values = aes.get(ae, (f, {}))
        values.update({k: v for k, v in f.data.items() if v is not None})
        aes[ae] = (first, values)
    for ae, (first, values) in aes.items():
        if not is_susar(values):
            continue
        days = report_days(values, h.protocol.susar_report_days, h.protocol.susar_report_days_fatal)
        deadline = _aware(values.get("awareness_at"), first.occurred) + timedelta(days=days)
        reports = [r for r in h.of("SafetyReportSubmitted") if r.data.get("ae_id") == ae]
        if any(r.occurred <= deadline for r in reports):
            continue
        if h.latest_recorded is not None and h.latest_recorded > deadline:  # the log shows the time has passed
            yield h.deviation("susar_report_overdue", True, [first],
                              f"SUSAR {ae}: no expedited report within {days} days of awareness "
                              f"(due {deadline.isoformat()})")


def _after_a_serious_adverse_event(h: History, fact: Fact) -> bool:
    """Once a serious AE is on record, any later entry may be the first to show its report's time has passed.

    Only a SUSAR has a clock, and an AE is serious only if one of its entries says so.
    """
    return any(f.data.get("serious") is True for f in h.of(*ADVERSE_EVENTS))


SUSAR_REPORT_OVERDUE = Rule(susar_report_overdue, reads(ADVERSE_EVENTS, "SafetyReportSubmitted"),
                            again=_after_a_serious_adverse_event)
