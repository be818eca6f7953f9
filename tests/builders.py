"""Builders for participant histories, used by the deviation-rule tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, UTC
from typing import Any

from domain.rules import Entry
from ledger.envelope import Envelope

TZ = timezone(timedelta(hours=8))
DAY0 = datetime(2010, 9, 20, 9, 0, tzinfo=TZ)  # dose 1


def at(day: float, hours: float = 0) -> datetime:
    return DAY0 + timedelta(days=day, hours=hours)


@dataclass
class HistoryBuilder:
    participant: str = "S01-001"
    entries: list[Entry] = field(default_factory=list)
    position: int = 100

    def add(self, type_name: str, data: dict[str, Any] | None = None, *, day: float = 0, hours: float = 0,
            recorded_lag_h: float = 1, author: str = "inv1", reason: str | None = None) -> Entry:
        occurred = at(day, hours)
        self.position += 1
        env = Envelope(
            event_id=str(uuid.uuid4()), type=type_name, stream=self.participant,
            position=len(self.entries) + 1, occurred_at=occurred.isoformat(),
            recorded_at=(occurred + timedelta(hours=recorded_lag_h)).astimezone(UTC).isoformat(),
            author=author, key_id="k", meaning="authorship", reason=reason, data=data or {},
        )
        entry = Entry(env, self.position)
        self.entries.append(entry)
        return entry

    def dose(self, number: int, day: float, **kw: Any) -> Entry:
        route = "intra-arterial-pancreatic" if number == 1 else "intravenous"
        data = {"dose_number": number, "route": route, "lot": f"LOT-{number}", "identity_checked": True,
                "product": {"cell_source": "autologous bone marrow", "cell_count": 1.0e6, "viability_pct": 94.0}}
        data.update(kw.pop("data", {}))
        return self.add("InfusionAdministered", data, day=day, author="pharm1", **kw)

    def lab(self, analyte: str, value: float | str, unit: str, day: float, **kw: Any) -> Entry:
        return self.add("LabResultRecorded", {"analyte": analyte, "value": value, "unit": unit}, day=day,
                        author="lab1", **kw)


CRITERIA = ("I1", "I2", "I3", "I4", "I5", "I6", "I7", "I8", "I9", "E1", "E2", "E3", "E4")


def compliant(sex: str = "F", *, doses: bool = True, visits: tuple[tuple[str, int], ...] = (("D30", 30),),
              ) -> HistoryBuilder:
    """A participant who does everything by the protocol."""
    h = HistoryBuilder()
    h.add("ParticipantRegistered", {"site": "S01", "sex": sex, "birth_year": 1960}, day=-14)
    h.add("ConsentSigned", {"icf_version": "1.0", "obtained_by": "inv1"}, day=-14, hours=1)
    h.lab("FBG", 8.4, "mmol/L", day=-13)
    h.lab("HBA1C", 8.1, "%", day=-13)
    h.lab("BMI", 26.0, "kg/m2", day=-13)
    h.lab("ITT", "resistant", "", day=-13)
    if sex == "F":
        h.lab("PREGNANCY", "negative", "", day=-13)
    for c in CRITERIA:
        if c == "I8" and sex != "F":
            continue
        h.add("ScreeningAssessed", {"criterion": c, "met": c.startswith("I")}, day=-12)
    h.add("EligibilityConfirmed", {}, day=-10)
    h.add("Enrolled", {}, day=-10, hours=1)
    if doses:
        h.dose(1, 0)
        h.dose(2, 7)
        h.dose(3, 14)
    for visit, day in visits:
        h.add("VisitCompleted", {"visit": visit}, day=day)
    return h
