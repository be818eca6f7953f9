"""One participant's history as the rules see it.

Voided entries are left out and corrections applied, so a rule judges the
record as it now stands; originals stay in the log and the audit trail, and
``originals`` keeps every entry as first recorded (the edit rules need the
target of a correction or void). ``DeviationBook`` (book.py) runs the rules
after each appended event, so what they raise is kept even when a later
edit makes the record look clean.
Rules work on ``occurred_at`` (clinical time), never on the order entries
were typed in, so they do not depend on the stream order.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any
from collections.abc import Sequence

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


def entry_times(env: Envelope, times: dict[str, tuple[datetime | None, datetime | None]] | None,
                ) -> tuple[datetime | None, datetime | None]:
    """An entry's (occurred, recorded), parsed once and kept in ``times`` (the book folds each entry many times)."""
    parsed = times.get(env.event_id) if times is not None else None
    if parsed is None:
        parsed = (_time(env.occurred_at), _time(env.recorded_at))
        if times is not None:
            times[env.event_id] = parsed
    return parsed


def clinical_order(fact: Fact) -> tuple[datetime, int]:
    """Rules read facts by clinical time; the log position breaks ties, so the order is total."""
    return fact.occurred, fact.position


def _occurred(fact: Fact) -> datetime:
    return fact.occurred


def _insert(facts: list[Fact], fact: Fact) -> None:
    """Keep ``facts`` in clinical order; most entries are the latest in clinical time too, so append first."""
    if not facts or clinical_order(facts[-1]) < clinical_order(fact):
        facts.append(fact)
    else:
        bisect.insort(facts, fact, key=clinical_order)


@dataclass
class History:
    protocol: Protocol
    participant: str
    facts: list[Fact]
    icf_versions: list[IcfVersion] = field(default_factory=list)
    originals: dict[str, Fact] = field(default_factory=dict)
    by_type: dict[str, list[Fact]] = field(default_factory=dict, repr=False)
    latest_recorded: datetime | None = None

    @classmethod
    def build(cls, protocol: Protocol, participant: str, entries: list[Entry] | tuple[Entry, ...] | Any,
              icf_versions: Any = (), times: dict[str, tuple[datetime | None, datetime | None]] | None = None,
              ) -> History:
        """``times`` caches each entry's parsed times across builds (the book rebuilds after every event)."""
        voided: set[str] = set()
        changes: dict[str, dict[str, Any]] = {}
        for entry in sorted(entries, key=lambda e: e.position):
            env = entry.envelope
            target = env.data.get("target_event_id")
            if env.type == "EntryVoided" and isinstance(target, str):
                voided.add(target)
            elif env.type == "EntryCorrected" and isinstance(target, str) and isinstance(env.data.get("changes"), dict):
                changes.setdefault(target, {}).update(env.data["changes"])
        facts, originals = [], {}
        for entry in entries:
            env = entry.envelope
            occurred, recorded = entry_times(env, times)
            if occurred is None or recorded is None:
                continue
            originals[env.event_id] = Fact(env.event_id, env.type, entry.position, occurred, recorded, dict(env.data))
            if env.event_id in voided:
                continue
            data = {**env.data, **changes.get(env.event_id, {})}
            facts.append(Fact(env.event_id, env.type, entry.position, occurred, recorded, data))
        facts.sort(key=clinical_order)
        versions = sorted(icf_versions, key=lambda v: v.position) or [IcfVersion(0, protocol.icf_version)]
        by_type: dict[str, list[Fact]] = {}
        for f in facts:
            by_type.setdefault(f.type, []).append(f)
        latest = max((f.recorded for f in facts), default=None)
        return cls(protocol, participant, facts, list(versions), originals, by_type, latest)

    def add(self, original: Fact, fact: Fact) -> None:
        """A newly appended entry that no earlier edit targets: what ``build`` would give with it, in O(log n) compares.

        The book (book.py) calls this instead of building the history again,
        which is what keeps one participant's fold linear in its events.
        """
        self.originals[original.event_id] = original
        _insert(self.facts, fact)
        _insert(self.by_type.setdefault(fact.type, []), fact)
        if self.latest_recorded is None or fact.recorded > self.latest_recorded:
            self.latest_recorded = fact.recorded

    # -- views the rules share ---------------------------------------------------------------

    def of(self, *types: str) -> Sequence[Fact]:
        """Facts of these types in clinical order, from the per-type index (never a scan of every fact).

        One type gives the index's own list, read-only: the book asks this
        several times per appended event, so it must not copy.
        """
        if not self.by_type and self.facts:
            for f in self.facts:
                self.by_type.setdefault(f.type, []).append(f)
        if len(types) == 1:
            return self.by_type.get(types[0], ())
        found = [self.by_type[t] for t in types if t in self.by_type]
        if len(found) == 1:
            return found[0]
        return sorted({id(f): f for facts in found for f in facts}.values(), key=clinical_order)

    def has(self, *types: str) -> bool:
        """Whether any fact of these types is on record (no list built)."""
        return any(t in self.by_type for t in types)

    def first(self, type_name: str) -> Fact | None:
        found = self.of(type_name)
        return found[0] if found else None

    def first_dated_after(self, day: date) -> Fact | None:
        """The first fact in clinical order whose own calendar date is after ``day``, without a scan from the start.

        A fact dated after ``day`` in its own offset (always under 24 h) happened
        after ``day`` began in UTC, so every earlier instant is skipped by bisection.
        """
        start = bisect.bisect_left(self.facts, datetime.combine(day, time(0), tzinfo=UTC), key=_occurred)
        return next((self.facts[i] for i in range(start, len(self.facts)) if self.facts[i].day > day), None)

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
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def birth_date(self) -> date | None:
        reg = self.first("ParticipantRegistered")
        try:
            return date.fromisoformat(str(reg.data.get("birth_date"))) if reg else None
        except ValueError:
            return None

    def by_id(self, event_id: object) -> Fact | None:
        """The entry as first recorded (voided or not), for rules about corrections and voids."""
        return self.originals.get(event_id) if isinstance(event_id, str) else None

    def icf_in_force(self, position: int) -> str:
        current = self.versions_before(position)
        return current[-1].version if current else self.protocol.icf_version

    def versions_before(self, position: int) -> list[IcfVersion]:
        return [v for v in self.icf_versions if v.position < position]

    def deviation(self, kind: str, important: bool, facts: Sequence[Fact], message: str) -> Deviation:
        return Deviation(self.participant, kind, important, tuple(f.event_id for f in facts),
                         min(f.position for f in facts), message)
