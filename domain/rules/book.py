"""Deviations are facts with a history (SPEC §4): a pure fold over one participant's events in log order.

After each appended event (and each protocol amendment) the rules judge the
record as it then stood, each event under the protocol version in force at
its clinical time. What they find that was not open before is *raised* at
that position; what was open and is no longer found is *resolved* by that
event, with its author and reason. Nothing raised is ever dropped, so a
later correction, void, backdated entry or amendment can resolve a
deviation but never erase it, and replaying the log gives the same book
(rebuild = incremental by construction).

Cost: the rules run once per event over the record so far, so a
participant with n events costs O(n²) rule work; trials have tens to a few
hundred events per participant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import domain.rules as rules
from domain.protocol import Protocol
from domain.rules.history import Deviation, Entry, IcfVersion, _time

# A deviation is the same one while the same rule flags the same events; its message is kept as raised.
Key = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class ProtocolVersion:
    """A protocol version from the study stream: in force, for clinical times from ``effective`` on."""

    position: int
    effective: datetime
    protocol: Protocol
    icf_version: str
    event_id: str = ""
    author: str = ""
    reason: str | None = None
    reconsent_required: bool = False


@dataclass
class Tracked:
    """A deviation as raised, and its resolution if a later event resolved it."""

    participant: str
    kind: str
    important: bool
    event_ids: tuple[str, ...]
    first_position: int
    message: str
    raised_at_position: int
    raised_by: str
    status: str = "open"
    resolved_at_position: int | None = None
    resolved_by: str | None = None
    resolved_who: str | None = None
    resolved_why: str | None = None

    @property
    def key(self) -> Key:
        return (self.kind, self.event_ids)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form ``deviations`` prints (``position``: the first event's position, as before)."""
        return {"participant": self.participant, "kind": self.kind, "important": self.important,
                "event_ids": list(self.event_ids), "position": self.first_position, "message": self.message,
                "status": self.status, "raised_at_position": self.raised_at_position, "raised_by": self.raised_by,
                "resolved_at_position": self.resolved_at_position, "resolved_by": self.resolved_by,
                "resolved_who": self.resolved_who, "resolved_why": self.resolved_why}


def _key(d: Deviation) -> Key:
    return (d.kind, d.event_ids)


@dataclass
class DeviationBook:
    participant: str
    versions: Sequence[ProtocolVersion]
    entries: list[Entry] = field(default_factory=list)
    tracked: list[Tracked] = field(default_factory=list)
    open: dict[Key, Tracked] = field(default_factory=dict)
    times: dict[str, Any] = field(default_factory=dict)

    def observe(self, entry: Entry) -> list[Tracked]:
        """Judge the record after ``entry``; return the deviations it raised or resolved."""
        self.entries.append(entry)
        env = entry.envelope
        return self._judge(entry.position, env.event_id, env.author, env.reason)

    def amend(self, version: ProtocolVersion) -> list[Tracked]:
        """A protocol amendment joins the log: judge again, attributing changes to it."""
        if not self.entries:
            return []
        return self._judge(version.position, version.event_id, version.author, version.reason)

    def _judge(self, position: int, event_id: str, who: str, why: str | None) -> list[Tracked]:
        found = judge(self.participant, self.entries, [v for v in self.versions if v.position <= position],
                      self.times)
        now: dict[Key, Deviation] = {}
        for d in found:
            now.setdefault(_key(d), d)
        changes = []
        for key, d in now.items():
            if key not in self.open:
                t = Tracked(d.participant, d.kind, d.important, d.event_ids, d.first_position, d.message,
                            raised_at_position=position, raised_by=event_id)
                self.tracked.append(t)
                self.open[key] = t
                changes.append(t)
        for key in [k for k in self.open if k not in now]:
            t = self.open.pop(key)
            t.status, t.resolved_at_position, t.resolved_by = "resolved", position, event_id
            t.resolved_who, t.resolved_why = who, why
            changes.append(t)
        return changes


def judge(participant: str, entries: Sequence[Entry], versions: Sequence[ProtocolVersion],
          times: dict[str, Any] | None = None) -> list[Deviation]:
    """The deviations of the record as it stands, each judged under the version in force at its clinical time."""
    icf = [IcfVersion(v.position, v.icf_version) if n == 0 else
           IcfVersion(v.position, v.icf_version, v.effective, v.reconsent_required) for n, v in enumerate(versions)]
    protocols = {id(v.protocol): v.protocol for v in versions}
    if len(protocols) <= 1:
        return rules.find_deviations(versions[0].protocol, participant, entries, icf, times) if versions else []
    occurred = {e.envelope.event_id: _time(e.envelope.occurred_at) for e in entries}
    out = []
    for protocol in protocols.values():
        for d in rules.find_deviations(protocol, participant, entries, icf, times):
            when = max((t for t in (occurred.get(i) for i in d.event_ids) if t is not None), default=None)
            if in_force(versions, when) is protocol:
                out.append(d)
    return out


def in_force(versions: Sequence[ProtocolVersion], when: datetime | None) -> Protocol:
    """The protocol in force at clinical time ``when``: the latest version effective by then (the first if none)."""
    chosen = versions[0]
    if when is None:
        return versions[-1].protocol
    for v in versions[1:]:
        if v.effective <= when and v.effective >= chosen.effective:
            chosen = v
    return chosen.protocol


def deviation_history(participant: str, entries: Iterable[Entry],
                      versions: Sequence[ProtocolVersion]) -> list[Tracked]:
    """Fold the participant's entries and the study's amendments in log order; every deviation ever raised."""
    ordered = sorted(versions, key=lambda v: v.position)
    book = DeviationBook(participant, ordered)
    pending = [v for v in ordered[1:]]
    for entry in sorted(entries, key=lambda e: e.position):
        while pending and pending[0].position < entry.position:
            book.amend(pending.pop(0))
        book.observe(entry)
    for version in pending:
        book.amend(version)
    return book.tracked


__all__ = ["DeviationBook", "ProtocolVersion", "Tracked", "deviation_history", "in_force", "judge"]
