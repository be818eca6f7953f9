"""Deviations are facts with a history (SPEC §4): a pure fold over one participant's events in log order.

After each appended event (and each protocol amendment) the rules judge the
record as it then stood, each event under the protocol version in force at
its clinical time. What they find that was not open before is *raised* at
that position; what was open and is no longer found is *resolved* by that
event, with its author and reason. Nothing raised is ever dropped, so a
later correction, void, backdated entry or amendment can resolve a
deviation but never erase it, and replaying the log gives the same book
(rebuild = incremental by construction).

Cost: judging is incremental. A plain new fact updates the participant's
history in place and re-runs only the rules whose declared inputs it
touches (rule.py); the others keep their verdict, or add what they find
about the new fact alone. Corrections, voids, amendments and anything out
of log order are judged afresh. So a participant's fold is linear in its
events plus a full judgement per edit or amendment, and it gives exactly
what judging every prefix from scratch gives (tests/test_incremental_book.py).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import domain.rules as rules
from domain.protocol import Protocol
from domain.rules.history import Deviation, Entry, Fact, History, IcfVersion, _time, entry_times

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


EDITS = ("EntryCorrected", "EntryVoided")

# Keys that may be raised now, each with the first view (protocol) that found it and what that view found.
Found = dict[Key, tuple[int, Deviation]]


@dataclass
class _View:
    """One protocol's view of the record: its history, and each rule's verdict (key -> first deviation found)."""

    protocol: Protocol
    history: History
    verdicts: list[dict[Key, Deviation]]


@dataclass
class DeviationBook:
    participant: str
    versions: Sequence[ProtocolVersion]
    entries: list[Entry] = field(default_factory=list)
    tracked: list[Tracked] = field(default_factory=list)
    open: dict[Key, Tracked] = field(default_factory=dict)
    times: dict[str, Any] = field(default_factory=dict)
    _views: list[_View] = field(default_factory=list)
    _in_force: list[ProtocolVersion] = field(default_factory=list)
    _targets: set[str] = field(default_factory=set)
    _order: dict[Key, int] = field(default_factory=dict)

    def observe(self, entry: Entry) -> list[Tracked]:
        """Judge the record after ``entry``; return the deviations it raised or resolved."""
        last = self.entries[-1].position if self.entries else None
        self.entries.append(entry)
        env = entry.envelope
        if env.type in EDITS:
            self._targets.update(edit_targets(env.data))
        plain = (self._views and last is not None and entry.position > last and env.type not in EDITS
                 and env.event_id not in self._targets and env.event_id not in self.times
                 and self._versions_at(entry.position) == self._in_force)
        if not plain:
            return self._judge_afresh(entry.position, env.event_id, env.author, env.reason)
        return self._judge_new_fact(entry)

    def amend(self, version: ProtocolVersion) -> list[Tracked]:
        """A protocol amendment joins the log: judge again, attributing changes to it."""
        if not self.entries:
            return []
        return self._judge_afresh(version.position, version.event_id, version.author, version.reason)

    # -- judging ------------------------------------------------------------------------------

    def _versions_at(self, position: int) -> list[ProtocolVersion]:
        return [v for v in self.versions if v.position <= position]

    def _judge_afresh(self, position: int, event_id: str, who: str, why: str | None) -> list[Tracked]:
        """Every rule over the whole record, under every protocol in force: the reference judgement."""
        self._in_force = self._versions_at(position)
        icf = icf_versions(self._in_force)
        self._views = []
        for protocol in {id(v.protocol): v.protocol for v in self._in_force}.values():
            history = History.build(protocol, self.participant, self.entries, icf, self.times)
            self._views.append(_View(protocol, history, []))
        for view in self._views:
            view.verdicts = [self._found(view.protocol, rule.judge(view.history)) for rule in rules.RULES]
        now: Found = {}
        for n in range(len(rules.RULES)):
            for key, first in self._union(n).items():
                now.setdefault(key, first)
        return self._settle(now, set(self.open) - now.keys(), position, event_id, who, why)

    def _judge_new_fact(self, entry: Entry) -> list[Tracked]:
        """A plain new fact: add it to each view's history and re-run only the rules it can change (rule.py)."""
        env = entry.envelope
        occurred, recorded = entry_times(env, self.times)
        if occurred is None or recorded is None:
            return []  # not a fact: History.build leaves it out, so no rule sees it
        # No edit targets it, so it is its own original: one read-only value serves both.
        fact = Fact(env.event_id, env.type, entry.position, occurred, recorded, dict(env.data))
        for view in self._views:
            view.history.add(fact, fact)
        raised: Found = {}
        gone: set[Key] = set()
        for n in _may_change(env.type):
            rule = rules.RULES[n]
            if env.type in rule.reads:
                again = list(range(len(self._views)))
            elif rule.again is not None:
                again = [v for v, view in enumerate(self._views) if rule.again(view.history, fact)]
            else:
                again = []
            before = self._union(n) if again else {}
            for v in again:
                view = self._views[v]
                view.verdicts[n] = self._found(view.protocol, rule.judge(view.history))
            if rule.each is not None:
                for v, view in enumerate(self._views):
                    if v in again:
                        continue
                    for key, d in self._found(view.protocol, rule.each(view.history, fact)).items():
                        if key not in view.verdicts[n]:
                            view.verdicts[n][key] = d
                            raised.setdefault(key, (v, d))
            if again:
                after = self._union(n)
                gone |= before.keys() - after.keys()
                for key, first in after.items():
                    raised.setdefault(key, first)
        return self._settle(raised, gone, entry.position, env.event_id, env.author, env.reason)

    def _found(self, protocol: Protocol, found: Iterable[Deviation]) -> dict[Key, Deviation]:
        """A rule's findings under one protocol: with several in force, only those it was in force for."""
        out: dict[Key, Deviation] = {}
        several = len(self._views) > 1
        for d in found:
            if several and in_force(self._in_force, self._clinical_time(d)) is not protocol:
                continue
            out.setdefault(_key(d), d)
        return out

    def _clinical_time(self, d: Deviation) -> datetime | None:
        times = (self.times[i][0] if i in self.times else None for i in d.event_ids)
        return max((t for t in times if t is not None), default=None)

    def _union(self, n: int) -> Found:
        """Rule ``n``'s verdict over every view: each key with the first view that found it."""
        out: Found = {}
        for v, view in enumerate(self._views):
            for key, d in view.verdicts[n].items():
                out.setdefault(key, (v, d))
        return out

    def _settle(self, found: Found, gone: set[Key], position: int, event_id: str, who: str,
                why: str | None) -> list[Tracked]:
        """Raise what is found and not open, in the order judging from scratch lists it; resolve what is gone."""
        changes = []
        raised = sorted(((k, v, d) for k, (v, d) in found.items() if k not in self.open),
                        key=lambda item: (item[1], item[2].first_position, item[0]))
        for key, _, d in raised:
            t = Tracked(d.participant, d.kind, d.important, d.event_ids, d.first_position, d.message,
                        raised_at_position=position, raised_by=event_id)
            self._order[key] = len(self.tracked)
            self.tracked.append(t)
            self.open[key] = t
            changes.append(t)
        for key in sorted((k for k in gone if k in self.open), key=self._order.__getitem__):
            t = self.open.pop(key)
            t.status, t.resolved_at_position, t.resolved_by = "resolved", position, event_id
            t.resolved_who, t.resolved_why = who, why
            changes.append(t)
        return changes


def edit_targets(data: dict[str, Any]) -> list[str]:
    """Every event id an edit may name: its target, and one a correction of an edit would give it.

    Rules read an edit's corrected data, so an edit whose target is corrected
    to an id not yet in the log must make that id's arrival a fresh judgement.
    """
    changes = data.get("changes")
    named = [data.get("target_event_id"), changes.get("target_event_id") if isinstance(changes, dict) else None]
    return [t for t in named if isinstance(t, str)]


@functools.cache
def _may_change(event_type: str) -> tuple[int, ...]:
    """The rules a new fact of this type can change: those that read it, or say so per fact (rule.py)."""
    return tuple(n for n, r in enumerate(rules.RULES)
                 if event_type in r.reads or r.again is not None or r.each is not None)


def icf_versions(versions: Sequence[ProtocolVersion]) -> list[IcfVersion]:
    """The ICF in force from each version's position (the first from the start, the others from their effective time)."""
    return [IcfVersion(v.position, v.icf_version) if n == 0 else
            IcfVersion(v.position, v.icf_version, v.effective, v.reconsent_required) for n, v in enumerate(versions)]


def judge(participant: str, entries: Sequence[Entry], versions: Sequence[ProtocolVersion],
          times: dict[str, Any] | None = None) -> list[Deviation]:
    """The deviations of the record as it stands, each judged under the version in force at its clinical time."""
    icf = icf_versions(versions)
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
