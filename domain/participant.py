"""The participant aggregate: one stream per participant, and the refusals of SPEC §4.

It is rebuilt by folding the participant's envelopes and keeps only what the
refusal rules need (event types, authors, voids, AE grades), so a long import
can check thousands of participants in bounded memory. What happened but
breaks the protocol is not refused here: see ``domain.rules``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError

from ledger.envelope import Envelope
from ledger.errors import InputRefused

from domain.authority import check_edit
from domain.datamanagement import SIGNED_STATEMENTS, QueryBook
from domain.events import CATALOGUE, RECORD_KEEPING, SAFETY_FOLLOW_UP, TERMINAL, event_type, validate_payload
from domain.protocol import Protocol
from domain.timeutil import parse_instant

PARTICIPANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
UNCORRECTABLE = ("EntryCorrected", "EntryVoided")
UNVOIDABLE = ("ParticipantRegistered",)
AE_EVENTS = ("AdverseEventReported", "AdverseEventUpdated")
RELATEDNESS_ORDER = ("unrelated", "unlikely", "possible", "probable", "definite")
DOWNGRADABLE = ("grade", "serious", "relatedness")
# What a terminal participant may still receive without a reason: safety follow-up and record keeping.
AFTER_TERMINAL_FREE = SAFETY_FOLLOW_UP + RECORD_KEEPING
# A correction may not change what an entry is about: void it and record the right one instead.
IDENTITY_FIELDS = {"LabResultRecorded": ("analyte",), "ScreeningAssessed": ("criterion",),
                   "AdverseEventReported": ("ae_id",), "AdverseEventUpdated": ("ae_id",),
                   "SafetyReportSubmitted": ("ae_id",)}


def check_participant_id(participant: object) -> str:
    if not isinstance(participant, str) or not PARTICIPANT_ID.fullmatch(participant):
        raise InputRefused(
            "participant: must be a pseudonymous id such as S01-004 "
            "(letters, digits, '.', '_' or '-', at most 64)"
        )
    return participant


@dataclass(slots=True)
class EntryFacts:
    """What a later correction or void of one entry needs: its type, author, clinical time and payload.

    The payload is kept as compact JSON bytes (decoded only for a correction),
    so a million-line import keeps a million small records, not dicts.
    """

    type: str
    author: str
    occurred_at: str
    payload: bytes

    @property
    def data(self) -> dict[str, Any]:
        value = json.loads(self.payload)
        return value if isinstance(value, dict) else {}

    def corrected(self, changes: dict[str, Any]) -> None:
        self.payload = _compact({**self.data, **changes})


_encode = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=str).encode  # built once


def _compact(data: dict[str, Any]) -> bytes:
    return _encode(data).encode()


@dataclass(frozen=True)
class Actor:
    """Who appends, in which role, and the times the checks compare against."""

    author: str
    role: str | None = None
    role_of: Callable[[str], str | None] = lambda _user: None
    occurred: datetime | None = None
    now: datetime | None = None


@dataclass
class Participant:
    """What the refusal rules need to know about one participant's stream."""

    id: str
    length: int = 0
    sex: str | None = None
    entries: dict[str, EntryFacts] = field(default_factory=dict)
    voided: set[str] = field(default_factory=set)
    # ae_id -> its AE entries' event ids, in log order; and each AE entry's grade, seriousness and
    # relatedness as corrected since. ``ae_current`` folds them, skipping voided entries.
    aes: dict[str, list[str]] = field(default_factory=dict)
    ae_values: dict[str, dict[str, Any]] = field(default_factory=dict)
    queries: QueryBook = field(default_factory=QueryBook)  # data management (domain.datamanagement)
    terminals: list[str] = field(default_factory=list)  # withdrawal and completion entries, in log order

    @classmethod
    def replay(cls, participant: str, envelopes: list[Envelope]) -> Participant:
        state = cls(participant)
        for env in envelopes:
            state.apply(env)
        return state

    @property
    def registered(self) -> bool:
        return self.length > 0

    def apply(self, env: Envelope) -> None:
        self.length = env.position
        self.entries[env.event_id] = EntryFacts(sys.intern(env.type), sys.intern(env.author), env.occurred_at,
                                                _compact(dict(env.data)))
        data = env.data
        self.queries.apply(env)
        if env.type in TERMINAL:
            self.terminals.append(env.event_id)
        if env.type == "ParticipantRegistered":
            self.sex = data.get("sex")
        elif env.type == "EntryVoided":
            self.voided.add(str(data.get("target_event_id")))
        elif env.type == "EntryCorrected":
            target_id = str(data.get("target_event_id"))
            changes = dict(data.get("changes") or {})
            target = self.entries.get(target_id)
            if target is not None:
                target.corrected(changes)
                if target.type == "ParticipantRegistered":
                    self.sex = target.data.get("sex")
            corrected = self.ae_values.get(target_id)
            if corrected is not None:
                corrected.update({k: v for k, v in changes.items() if k in DOWNGRADABLE})
        if env.type in AE_EVENTS:
            self.aes.setdefault(str(data.get("ae_id")), []).append(env.event_id)
            self.ae_values[env.event_id] = {k: data[k] for k in DOWNGRADABLE if data.get(k) is not None}

    def ae_current(self, ae_id: str) -> dict[str, Any]:
        """An AE's grade, seriousness and relatedness as the record now stands."""
        current: dict[str, Any] = {}
        for event_id in self.aes.get(ae_id, []):
            if event_id not in self.voided:
                current.update(self.ae_values[event_id])
        return current

    def terminal(self) -> tuple[str, str] | None:
        """(what, since when) if the participant withdrew, completed or died, as the record now stands."""
        for event_id in self.terminals:
            if event_id not in self.voided:
                facts = self.entries[event_id]
                return ("withdrawn" if facts.type == "ParticipantWithdrawn" else "completed", facts.occurred_at)
        for ae_id, ids in self.aes.items():
            if self.ae_current(ae_id).get("grade") == 5:
                return ("dead (grade 5 adverse event)", self.entries[ids[0]].occurred_at)
        return None

    # -- refusals (SPEC §4) ---------------------------------------------------------------

    def check(self, type_name: str, data: dict[str, Any], *, author: str, reason: str | None,
              protocol: Protocol, own_entries_only: bool, actor: Actor | None = None) -> dict[str, Any]:
        """Refuse what may not be written; return the validated payload."""
        actor = actor or Actor(author)
        et = event_type(type_name)
        if not et.participant:
            raise InputRefused(f"type: {type_name} is a study-level event, not a participant event")
        if type_name == "ParticipantRegistered" and self.registered:
            raise InputRefused(f"participant: {self.id} is already registered")
        if type_name != "ParticipantRegistered" and not self.registered:
            raise InputRefused(f"participant: {self.id} is not registered")
        if et.reason_required and not (reason and reason.strip()):
            raise InputRefused(f"reason: {type_name} requires a reason")
        payload = validate_payload(type_name, data)
        for time_field in et.times:
            if time_field in payload:
                parse_instant(payload[time_field], f"data.{time_field}")
        check_against_protocol = _PROTOCOL_CHECKS.get(type_name)
        if check_against_protocol:
            check_against_protocol(self, payload, protocol)
        self._check_terminal(type_name, reason, actor)
        if type_name in AE_EVENTS:
            self._check_awareness(payload, actor.occurred, actor.now)
        if type_name in ("EntryCorrected", "EntryVoided"):
            self._check_target(type_name, payload, author, own_entries_only, protocol, actor)
        if type_name == "AdverseEventUpdated":
            if payload["ae_id"] not in self.aes:
                raise InputRefused(f"data.ae_id: no adverse event {payload['ae_id']!r} was reported for {self.id}")
            lowered = downgrades(self.ae_current(payload["ae_id"]), payload)
            if lowered and not (reason and reason.strip()):
                raise InputRefused(f"reason: a downgrade ({'; '.join(lowered)}) of {payload['ae_id']} requires a reason")
        if type_name == "SafetyReportSubmitted" and payload["ae_id"] not in self.aes:
            raise InputRefused(f"data.ae_id: no adverse event {payload['ae_id']!r} was reported for {self.id}")
        return payload

    def _check_terminal(self, type_name: str, reason: str | None, actor: Actor) -> None:
        """Withdrawal, completion and death are terminal (SPEC §4); later procedures need a reason."""
        terminal = self.terminal()
        if terminal is None:
            return
        what, since = terminal
        if type_name in TERMINAL:
            raise InputRefused(f"type: {self.id} is already {what} (since {since}); {type_name} is refused")
        if type_name in AFTER_TERMINAL_FREE or (reason and reason.strip()):
            return
        occurred = actor.occurred
        if occurred is None or occurred >= parse_instant(since, "occurred_at"):
            raise InputRefused(f"reason: {self.id} is {what} since {since}; {type_name} after that needs a --reason "
                               "(it is recorded and flagged as an important deviation)")

    def _check_awareness(self, payload: dict[str, Any], occurred: datetime | None, now: datetime | None,
                         onset_at: str | None = None) -> None:
        """Awareness of an AE lies between its onset and the time it is recorded (ICH E2A clocks start there)."""
        if "awareness_at" not in payload:
            return
        aware = parse_instant(payload["awareness_at"], "data.awareness_at")
        if onset_at is None and "ae_id" in payload and payload["ae_id"] in self.aes:
            onset_at = self.entries[self.aes[payload["ae_id"]][0]].occurred_at
        onset = parse_instant(onset_at, "occurred_at") if onset_at else occurred
        if onset is not None and aware < onset:
            raise InputRefused(f"data.awareness_at: {payload['awareness_at']} is before the onset ({onset.isoformat()})")
        if now is not None and aware > now:
            raise InputRefused(f"data.awareness_at: {payload['awareness_at']} is after the time of recording")

    def _check_target(self, type_name: str, payload: dict[str, Any], author: str, own_only: bool,
                      protocol: Protocol, actor: Actor) -> None:
        target_id = payload["target_event_id"]
        target = self.entries.get(target_id)
        verb = "correct" if type_name == "EntryCorrected" else "void"
        if target is None:
            raise InputRefused(f"data.target_event_id: no event {target_id} in {self.id}'s record")
        if target_id in self.voided:
            raise InputRefused(f"data.target_event_id: event {target_id} is already voided")
        if target.type in SIGNED_STATEMENTS:
            raise InputRefused(f"data.target_event_id: a {target.type} cannot be corrected or voided; "
                               "append a new one (a query is answered, closed or reopened)")
        if target.type in UNCORRECTABLE or (type_name == "EntryVoided" and target.type in UNVOIDABLE):
            done = "corrected" if type_name == "EntryCorrected" else "voided"
            raise InputRefused(f"data.target_event_id: a {target.type} cannot be {done}")
        if own_only and target.author != author:
            raise InputRefused(f"data.target_event_id: your role may only {verb} its own entries")
        check_edit(protocol, verb=verb, editor=author, editor_role=actor.role, author=target.author,
                   author_role=actor.role_of(target.author), target_type=target.type)
        if type_name == "EntryCorrected":
            self._check_correction(target, payload["changes"], protocol, actor)

    def _check_correction(self, target: EntryFacts, changes: dict[str, Any], protocol: Protocol,
                          actor: Actor) -> None:
        """A corrected entry must pass every check a new entry of its type passes (SPEC §4)."""
        validate_changes(target.type, changes)
        original = target.data
        for name in IDENTITY_FIELDS.get(target.type, ()):
            if name in changes and changes[name] != original.get(name):
                raise InputRefused(f"data.changes.{name}: a correction cannot change what the entry is about "
                                   f"({name}); void it and record the right entry")
        merged = {**original, **changes}
        try:
            corrected = validate_payload(target.type, merged, where="data.changes")
        except InputRefused as e:
            raise InputRefused(str(e)) from None
        check_against_protocol = _PROTOCOL_CHECKS.get(target.type)
        if check_against_protocol:
            try:
                check_against_protocol(self, corrected, protocol)
            except InputRefused as e:
                raise InputRefused(str(e).replace("data.", "data.changes.", 1)) from None
        if target.type in AE_EVENTS:
            self._check_awareness(corrected, parse_instant(target.occurred_at, "occurred_at"), actor.now,
                                  onset_at=None if target.type == "AdverseEventUpdated" else target.occurred_at)


def downgrades(current: dict[str, Any], update: dict[str, Any]) -> list[str]:
    """What an AE update lowers: grade, seriousness or causality (an inspector asks for a reason each time)."""
    lowered = []
    old, new = current.get("grade"), update.get("grade")
    if old is not None and new is not None and new < old:
        lowered.append(f"grade {old} -> {new}")
    if current.get("serious") is True and update.get("serious") is False:
        lowered.append("serious -> not serious")
    old, new = current.get("relatedness"), update.get("relatedness")
    if old in RELATEDNESS_ORDER and new in RELATEDNESS_ORDER and \
            RELATEDNESS_ORDER.index(new) < RELATEDNESS_ORDER.index(old):
        lowered.append(f"relatedness {old} -> {new}")
    return lowered


def validate_changes(target_type: str, changes: dict[str, Any]) -> None:
    """Each changed field must exist on the target's type and be valid there."""
    model = CATALOGUE[target_type].model
    for name, value in changes.items():
        info = model.model_fields.get(name)
        if info is None:
            raise InputRefused(f"data.changes.{name}: {target_type} has no field {name!r}")
        try:
            TypeAdapter(Annotated[info.annotation, info]).validate_python(value)  # type: ignore[arg-type]
        except ValidationError as e:
            raise InputRefused(f"data.changes.{name}: {e.errors()[0]['msg']}") from None


# -- payload checks that depend on the protocol ---------------------------------------------


def _check_lab(_: Participant, p: dict[str, Any], protocol: Protocol) -> None:
    analyte = protocol.analyte(p["analyte"])
    if analyte is None:
        known = ", ".join(a.id for a in protocol.analytes)
        raise InputRefused(f"data.analyte: {p['analyte']!r} is not in the protocol ({known})")
    value = p["value"]
    if isinstance(value, str):
        if value not in analyte.qualitative:
            raise InputRefused(f"data.value: {value!r} is not a result for {analyte.id} ({', '.join(analyte.qualitative) or 'numbers only'})")
        return
    if not analyte.units:
        raise InputRefused(f"data.value: {analyte.id} is qualitative ({', '.join(analyte.qualitative)})")
    if p["unit"] not in analyte.units:
        raise InputRefused(f"data.unit: {analyte.id} is recorded in {', '.join(analyte.units)}, not {p['unit']!r}")
    if (analyte.min is not None and value < analyte.min) or (analyte.max is not None and value > analyte.max):
        raise InputRefused(f"data.value: {value} {p['unit']} is outside the plausible range of {analyte.id}")


def _check_screening(_: Participant, p: dict[str, Any], protocol: Protocol) -> None:
    if protocol.criterion(p["criterion"]) is None:
        raise InputRefused(f"data.criterion: {p['criterion']!r} is not a criterion of the protocol")


def _check_screen_failed(_: Participant, p: dict[str, Any], protocol: Protocol) -> None:
    for c in p["failed_criteria"]:
        if protocol.criterion(c) is None:
            raise InputRefused(f"data.failed_criteria: {c!r} is not a criterion of the protocol")


def _check_infusion(_: Participant, p: dict[str, Any], protocol: Protocol) -> None:
    if protocol.dose(p["dose_number"]) is None:
        raise InputRefused(f"data.dose_number: the protocol has no dose {p['dose_number']}")
    product = protocol.investigational_product()
    if p["route"] not in product.routes:
        raise InputRefused(f"data.route: {p['route']!r} is not a route of {product.name} ({', '.join(product.routes)})")
    product.check(p.get("product", {}))


def _check_visit(_: Participant, p: dict[str, Any], protocol: Protocol) -> None:
    if protocol.visit(p["visit"]) is None:
        known = ", ".join(v.id for v in protocol.visits)
        raise InputRefused(f"data.visit: {p['visit']!r} is not a protocol visit ({known})")


def _check_registration(_: Participant, p: dict[str, Any], protocol: Protocol) -> None:
    born = p.get("birth_date")
    if born is not None and not str(born).startswith(f"{p['birth_year']:04d}-"):
        raise InputRefused(f"data.birth_date: {born} is not in birth_year {p['birth_year']}")
    if born is not None:
        parse_instant(f"{born}T00:00:00+00:00", "data.birth_date")


_PROTOCOL_CHECKS = {
    "ParticipantRegistered": _check_registration,
    "LabResultRecorded": _check_lab,
    "ScreeningAssessed": _check_screening,
    "ScreenFailed": _check_screen_failed,
    "InfusionAdministered": _check_infusion,
    "VisitCompleted": _check_visit,
}
