"""The participant aggregate: one stream per participant, and the refusals of SPEC §4.

It is rebuilt by folding the participant's envelopes and keeps only what the
refusal rules need (event types, authors, voids, AE grades), so a long import
can check thousands of participants in bounded memory. What happened but
breaks the protocol is not refused here: see ``domain.rules``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError

from ledger.envelope import Envelope
from ledger.errors import InputRefused

from domain.datamanagement import QueryBook
from domain.events import CATALOGUE, event_type, validate_payload
from domain.protocol import Protocol
from domain.timeutil import parse_instant

PARTICIPANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
UNCORRECTABLE = ("EntryCorrected", "EntryVoided", "ParticipantRegistered")
AE_EVENTS = ("AdverseEventReported", "AdverseEventUpdated")
RELATEDNESS_ORDER = ("unrelated", "unlikely", "possible", "probable", "definite")
DOWNGRADABLE = ("grade", "serious", "relatedness")


def check_participant_id(participant: object) -> str:
    if not isinstance(participant, str) or not PARTICIPANT_ID.match(participant):
        raise InputRefused(
            "participant: must be a pseudonymous id such as S01-004 "
            "(letters, digits, '.', '_' or '-', at most 64)"
        )
    return participant


@dataclass(slots=True, frozen=True)
class EntryFacts:
    """Two interned strings per entry: a million-line import keeps a million of these."""

    type: str
    author: str


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
        self.entries[env.event_id] = EntryFacts(sys.intern(env.type), sys.intern(env.author))
        data = env.data
        self.queries.apply(env)
        if env.type == "ParticipantRegistered":
            self.sex = data.get("sex")
        elif env.type == "EntryVoided":
            self.voided.add(str(data.get("target_event_id")))
        elif env.type == "EntryCorrected":
            corrected = self.ae_values.get(str(data.get("target_event_id")))
            if corrected is not None:
                corrected.update({k: v for k, v in dict(data.get("changes") or {}).items() if k in DOWNGRADABLE})
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

    # -- refusals (SPEC §4) ---------------------------------------------------------------

    def check(self, type_name: str, data: dict[str, Any], *, author: str, reason: str | None,
              protocol: Protocol, own_entries_only: bool) -> dict[str, Any]:
        """Refuse what may not be written; return the validated payload."""
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
        if type_name in ("EntryCorrected", "EntryVoided"):
            self._check_target(type_name, payload, author, own_entries_only)
        if type_name == "AdverseEventUpdated":
            if payload["ae_id"] not in self.aes:
                raise InputRefused(f"data.ae_id: no adverse event {payload['ae_id']!r} was reported for {self.id}")
            lowered = downgrades(self.ae_current(payload["ae_id"]), payload)
            if lowered and not (reason and reason.strip()):
                raise InputRefused(f"reason: a downgrade ({'; '.join(lowered)}) of {payload['ae_id']} requires a reason")
        return payload

    def _check_target(self, type_name: str, payload: dict[str, Any], author: str, own_only: bool) -> None:
        target_id = payload["target_event_id"]
        target = self.entries.get(target_id)
        if target is None:
            raise InputRefused(f"data.target_event_id: no event {target_id} in {self.id}'s record")
        if target_id in self.voided:
            raise InputRefused(f"data.target_event_id: event {target_id} is already voided")
        if target.type in UNCORRECTABLE:
            raise InputRefused(f"data.target_event_id: a {target.type} cannot be corrected or voided")
        if own_only and target.author != author:
            raise InputRefused(f"data.target_event_id: your role may only {type_name[5:].lower()} its own entries")
        if type_name == "EntryCorrected":
            validate_changes(target.type, payload["changes"])



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


_PROTOCOL_CHECKS = {
    "LabResultRecorded": _check_lab,
    "ScreeningAssessed": _check_screening,
    "ScreenFailed": _check_screen_failed,
    "InfusionAdministered": _check_infusion,
    "VisitCompleted": _check_visit,
}
