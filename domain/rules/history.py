"""One participant's history as the rules see it.

Voided entries are left out and corrections applied, so a rule judges the
record as it now stands; originals stay in the log and the audit trail.
Rules work on ``occurred_at`` (clinical time), never on the order entries
were typed in, so they do not depend on the stream order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from ledger.envelope import Envelope

from domain.protocol import Protocol
from domain.timeutil import parse_time, study_day


@dataclass(frozen=True)
class Entry:
    """An envelope and its global position in the log."""

    envelope: Envelope
    position: int


@dataclass(frozen=True)
class IcfVersion:
    """From global position ``position`` on, ``version`` is the current ICF.

    An amendment also applies only to what happened clinically from its
    ``effective`` time (its ``occurred_at``) on, and may require re-consent.
    """

    position: int
    version: str
    effective: datetime | None = None
    reconsent_required: bool = False


@dataclass(frozen=True)
class Deviation:
    participant: str
    kind: str
    important: bool
    event_ids: tuple[str, ...]
    first_position: int
    message: str

    def as_dict(self) -> dict[str, Any]:
        """The one shape a deviation takes in JSON, projections and reports."""
        return {"participant": self.participant, "kind": self.kind, "important": self.important,
                "event_ids": list(self.event_ids), "position": self.first_position, "message": self.message}


@dataclass(frozen=True)
class Fact:
    """An effective entry: the envelope's header with corrected data, and its times parsed."""

    event_id: str
    type: str
    position: int
    occurred: datetime
    recorded: datetime
    data: dict[str, Any]

    @property
    def day(self) -> date:
        return self.occurred.date()


def _time(text: str) -> datetime | None:
    return parse_time(text)


@dataclass
class History:
    protocol: Protocol
    participant: str
    facts: list[Fact]
    icf_versions: list[IcfVersion] = field(default_factory=list)

    @classmethod
    def build(cls, protocol: Protocol, participant: str, entries: list[Entry] | tuple[Entry, ...] | Any,
              icf_versions: Any = ()) -> History:
        voided: set[str] = set()
        changes: dict[str, dict[str, Any]] = {}
        for entry in sorted(entries, key=lambda e: e.position):
            env = entry.envelope
            target = env.data.get("target_event_id")
            if env.type == "EntryVoided" and isinstance(target, str):
                voided.add(target)
            elif env.type == "EntryCorrected" and isinstance(target, str) and isinstance(env.data.get("changes"), dict):
                changes.setdefault(target, {}).update(env.data["changes"])
        facts = []
        for entry in entries:
            env = entry.envelope
            occurred, recorded = _time(env.occurred_at), _time(env.recorded_at)
            if env.event_id in voided or occurred is None or recorded is None:
                continue
            data = {**env.data, **changes.get(env.event_id, {})}
            facts.append(Fact(env.event_id, env.type, entry.position, occurred, recorded, data))
        facts.sort(key=lambda f: (f.occurred, f.position))
        versions = sorted(icf_versions, key=lambda v: v.position) or [IcfVersion(0, protocol.icf_version)]
        return cls(protocol, participant, facts, list(versions))

    # -- views the rules share ---------------------------------------------------------------

    def of(self, *types: str) -> list[Fact]:
        return [f for f in self.facts if f.type in types]

    def first(self, type_name: str) -> Fact | None:
        return next((f for f in self.facts if f.type == type_name), None)

    def dose1(self) -> Fact | None:
        return next((f for f in self.of("InfusionAdministered") if f.data.get("dose_number") == 1), None)

    def study_day(self, fact: Fact) -> int | None:
        """Days since dose 1, each date read in its own offset (dose 1 is day 0)."""
        d1 = self.dose1()
        return study_day(d1.day if d1 else None, fact.day)

    def sex(self) -> str | None:
        reg = self.first("ParticipantRegistered")
        return reg.data.get("sex") if reg else None

    def birth_year(self) -> int | None:
        reg = self.first("ParticipantRegistered")
        value = reg.data.get("birth_year") if reg else None
        return value if isinstance(value, int) else None

    def icf_in_force(self, position: int) -> str:
        current = self.versions_before(position)
        return current[-1].version if current else self.protocol.icf_version

    def versions_before(self, position: int) -> list[IcfVersion]:
        return [v for v in self.icf_versions if v.position < position]

    def deviation(self, kind: str, important: bool, facts: list[Fact], message: str) -> Deviation:
        return Deviation(self.participant, kind, important, tuple(f.event_id for f in facts),
                         min(f.position for f in facts), message)
