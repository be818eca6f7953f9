"""The trial's application service: turns commands into signed, chained events.

A thin layer in the style of eventsourcing's applications: it reads the
study stream (signers, protocol) and the participant's stream, lets the
aggregate refuse what may not be written, builds the envelope, and hands it
to the ledger's store, which chains and signs it inside the write lock.
When another writer took the same stream position first, it re-reads and
retries a bounded number of times.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from dataclasses import dataclass
from typing import Any


from ledger.envelope import Envelope
from ledger.errors import InputRefused, PositionTaken, StoreBusy
from ledger.keys import Signer, public_from_b64, raw_public_bytes
from ledger.store import Store
from ledger.verify import Unauthorised

from domain import datamanagement
from domain.consenting import check_amendment, check_consent_entry
from domain.events import MEANINGS, event_type, validate_payload
from domain.authority import check_meaning, default_meaning
from domain.identifiers import canonical_event_id
from domain.participant import Actor, Participant, check_participant_id
from domain.participant_states import ParticipantStates
from domain.protocol import Protocol, parse_protocol
from domain.registry_check import RegistryHead, attest, bound_registry, ensure_heads
from domain.rules import Entry, IcfVersion, ProtocolVersion, Tracked, deviation_history
from domain import witnesses
from domain.signers import STUDY_STREAM, SignerRegistry, role_may_sign
from domain.text_guard import refuse_bad_text
from domain.timeutil import iso, parse_instant, refuse_future, utc_now

MAX_ATTEMPTS = 50
BACKOFF_BASE_S = 0.005
BACKOFF_CAP_S = 0.25


@dataclass(frozen=True)
class Command:
    """One event to append, as a user or an import line states it."""

    type: str
    participant: str | None
    data: dict[str, Any]
    occurred_at: str | None = None
    meaning: str | None = None
    reason: str | None = None
    event_id: str | None = None
    # True when the caller has already shown that no text in the command holds a NUL or a lone
    # surrogate: an import line whose JSON has no \u0000 or \udXXX escape (UTF-8 JSON admits
    # them no other way; domain.text_guard.NEEDS_TEXT_SCAN).
    text_checked: bool = False


class Trial:
    """Commands in, signed events out; ``clock`` gives ``recorded_at`` (the system clock, except in the demo)."""

    def __init__(self, store: Store, clock: Callable[[], datetime] = utc_now):
        self.store = store
        self.clock = clock
        self._registry_head: RegistryHead | None = None
        self._versions_key: tuple[Any, ...] | None = None
        self._versions: list[ProtocolVersion] = []

    # -- reading ----------------------------------------------------------------------------

    def registry(self) -> SignerRegistry:
        return SignerRegistry.replay(self.store.stream(STUDY_STREAM))

    def protocol(self) -> Protocol:
        registry = self.registry()
        if registry.protocol is None:
            raise InputRefused("--db: the ledger is not initialised (run `trial-ledger init`)")
        return registry.protocol

    def writer_registry(self) -> tuple[SignerRegistry, int]:
        """The registry (and study-stream length) an append is authorised by: bound by the chain.

        Not ``registry()``: that replays the study rows as stored. This one
        refuses (exit 3) when a study row is forged, reordered, relabelled or
        deleted; see ``domain.registry_check``. The verified head is cached on
        this Trial, so later appends walk only the rows added since.
        """
        self._registry_head = bound_registry(self.store, self._registry_head)
        return self._registry_head.fresh_registry(), len(self._registry_head.study)

    def participant(self, participant: str) -> Participant:
        # Rows at ids <= 0 are outside the chain (verify names them); the writer never builds on them.
        return Participant.replay(participant, [r.envelope() for r in self.store.stream_records(participant)
                                                if r.position > 0])

    def icf_versions(self, upto: int | None = None) -> list[IcfVersion]:
        """The ICF version in force from each global position on (genesis, then amendments)."""
        versions = []
        for record in self.store.stream_records(STUDY_STREAM):
            if upto is not None and record.position > upto:
                break
            version = icf_version_of(record.envelope(), record.position)
            if version is not None:
                versions.append(version)
        return versions

    def registry_at(self, position: int) -> SignerRegistry:
        """Signers and protocol as they stood once the log reached ``position``."""
        return SignerRegistry.replay([r.envelope() for r in self.store.stream_records(STUDY_STREAM)
                                      if r.position <= position])

    def deviations(self, participant: str, upto: int | None = None,
                   protocol: Protocol | None = None) -> list[Tracked]:
        """Every deviation ever raised for one participant, open or resolved, on the log up to ``upto``.

        Each event is judged when it joins the log, under the protocol version
        in force at its clinical time (``domain.rules.book``); ``protocol`` is
        used only for a ledger whose genesis embeds no protocol document.
        """
        entries = [Entry(r.envelope(), r.position) for r in self.store.stream_records(participant)
                   if upto is None or r.position <= upto]
        return deviation_history(participant, entries, self.protocol_versions(upto, protocol))

    def protocol_versions(self, upto: int | None = None, fallback: Protocol | None = None) -> list[ProtocolVersion]:
        """The protocol versions of the study stream up to ``upto``, each with the clinical time it took effect."""
        key = (upto, self.store.stream_length(STUDY_STREAM), id(fallback))
        if self._versions_key == key:
            return self._versions
        records = [r for r in self.store.stream_records(STUDY_STREAM) if upto is None or r.position <= upto]
        versions = protocol_versions_of([(r.position, r.envelope()) for r in records], fallback, self.protocol)
        self._versions_key, self._versions = key, versions
        return versions

    # -- writing ----------------------------------------------------------------------------

    def initialise(self, protocol: Protocol, *, study_id: str, admin_id: str, admin_name: str,
                   signer: Signer, event_id: str | None = None) -> Envelope:
        for name, value in (("--study-id", study_id), ("--admin-id", admin_id), ("--admin-name", admin_name)):
            refuse_bad_text(value, name)
        if self.store.stream_length(STUDY_STREAM) > 0:
            raise InputRefused("init: this ledger is already initialised")
        data = {
            "study_id": study_id, "protocol_id": protocol.protocol_id,
            "protocol_version": protocol.version, "protocol_sha256": protocol.sha256(),
            "root_public_key": signer.public_b64, "admin_id": admin_id, "admin_name": admin_name,
            "protocol": protocol.document(),
        }
        now = self.clock()
        env = Envelope(
            event_id=event_id or str(uuid.uuid4()), type="StudyInitialised", stream=STUDY_STREAM, position=1,
            occurred_at=iso(now), recorded_at=iso(now), author=admin_id, key_id=signer.key_id,
            meaning="authorship", reason=None, data=validate_payload("StudyInitialised", data),
        )
        self._save([env], signer)
        ensure_heads(self.store)  # the writer heads (domain.registry_check) live beside the log from the start
        return env

    def append(self, command: Command, signer: Signer) -> Envelope:
        """Append one event, retrying when another writer took its stream position."""
        for attempt in range(MAX_ATTEMPTS):
            env = self.decide([command], signer)[0]
            try:
                self._save([env], signer)
            except PositionTaken:
                self._refuse_duplicate_id(env.event_id if command.event_id is not None else None)
                # Full jitter, so two tight writers do not collide in step forever.
                time.sleep(random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** attempt)))
                continue
            self.attest(signer, [env])
            return env
        raise StoreBusy(f"gave up after {MAX_ATTEMPTS} attempts: other writers kept taking the same position")

    def append_batch(self, commands: list[Command], signer: Signer) -> list[Envelope]:
        """Decide and append several commands by one signer in one transaction (no retry)."""
        envelopes = self.decide(commands, signer)
        self._save(envelopes, signer)
        self.attest(signer, envelopes)
        return envelopes

    def attest(self, signer: Signer, envelopes: Sequence[Envelope], *, study_added: int | None = None,
               last_study: Envelope | None = None) -> None:
        """Sign a writer head for what was just appended onto the head this Trial verified
        (``domain.registry_check``: the next writer's check then starts there, not at the newest study row).

        ``envelopes`` ends with the last event appended; an import, which does not keep every event, passes
        only that one with ``study_added`` (how many study events it appended) and ``last_study``.
        """
        if self._registry_head is None or not envelopes:
            return
        if study_added is None:
            study = [e for e in envelopes if e.stream == STUDY_STREAM]
            study_added, last_study = len(study), (study[-1] if study else None)
        attest(self.store, signer, self._registry_head, envelopes[-1].event_id, study_added,
               last_study.event_id if last_study is not None else None)

    def decide(self, commands: list[Command], signer: Signer) -> list[Envelope]:
        """Turn commands into envelopes, refusing the first one that may not be written."""
        decider = self.decider(signer)
        out = []
        for n, command in enumerate(commands, 1):
            try:
                out.append(decider.decide(command))
            except InputRefused as e:
                if len(commands) > 1:
                    raise InputRefused(f"command {n}: {e}") from None
                raise
        return out

    def decider(self, signer: Signer, *, track_event_ids: bool = False) -> Decider:
        return Decider(self, signer, track_event_ids=track_event_ids)

    def _decide_one(self, command: Command, signer: Signer, registry: SignerRegistry, author: str,
                    states: ParticipantStates, study_length: int) -> Envelope:
        if not command.text_checked:
            for name in ("type", "participant", "occurred_at", "meaning", "reason", "event_id"):
                refuse_bad_text(getattr(command, name), name)
            refuse_bad_text(command.data, "data")
        et = event_type(command.type)
        protocol = registry.protocol
        assert protocol is not None
        now = self.clock()
        occurred = parse_instant(command.occurred_at, "occurred_at") if command.occurred_at else now
        refuse_future(occurred, now)
        role_entry = registry.signer_for_key(signer.key_id)
        assert role_entry is not None
        if not role_may_sign(protocol, role_entry.role, command.type):  # before its meaning: the first reason
            raise InputRefused(f"--key: role {role_entry.role} ({role_entry.user_id}) may not sign {command.type}")
        meaning = command.meaning or default_meaning(protocol, role_entry.role, et.default_meaning)
        if meaning not in MEANINGS:
            raise InputRefused(f"meaning: must be one of {', '.join(MEANINGS)}")
        check_meaning(protocol, role_entry.role, meaning)
        event_id = canonical_event_id(command.event_id) if command.event_id is not None else None
        self._refuse_duplicate_id(event_id)
        own_only = command.type in protocol.roles[role_entry.role].own_entries_only \
            if role_entry.role in protocol.roles else False
        if et.participant:
            participant = check_participant_id(command.participant)
            state = states.of(participant)
            actor = Actor(author, role_entry.role, registry.role_of, occurred, now)
            payload = state.check(command.type, command.data, author=author, reason=command.reason,
                                  protocol=registry.protocol_at(occurred) or protocol, own_entries_only=own_only,
                                  actor=actor)
            target = state.entries.get(str(payload.get("target_event_id")))
            check_consent_entry(command.type, payload, registry, target.type if target else None,
                                lambda: self.store.stream(participant))
            stream, position = participant, state.length + 1
        else:
            if command.participant:
                raise InputRefused(f"participant: {command.type} is a study-level event and takes no participant")
            if et.reason_required and not (command.reason and command.reason.strip()):
                raise InputRefused(f"reason: {command.type} requires a reason")
            payload = self._check_study_event(command.type, command.data, registry, protocol)
            stream, position = STUDY_STREAM, study_length + 1
        # Every field was built or validated above, so skip a second validation.
        env = Envelope.model_construct(
            event_id=event_id or str(uuid.uuid4()), type=command.type, stream=stream,
            position=position, occurred_at=iso(occurred), recorded_at=iso(now), author=author,
            key_id=signer.key_id, meaning=meaning, reason=command.reason or None, data=payload,
        )
        try:
            registry.authorise(env)
        except Unauthorised as e:
            raise InputRefused(f"--key: {e}") from None
        return env

    def _check_study_event(self, type_name: str, data: dict[str, Any], registry: SignerRegistry,
                           protocol: Protocol) -> dict[str, Any]:
        if type_name == "StudyInitialised":
            raise InputRefused("type: StudyInitialised is written by `trial-ledger init` only")
        payload = validate_payload(type_name, data)
        if type_name == "SignerRegistered":
            if payload["role"] not in protocol.roles:
                raise InputRefused(f"data.role: {payload['role']!r} is not a role of the protocol "
                                   f"({', '.join(sorted(protocol.roles))})")
            public_from_b64(payload["public_key"])
            parse_instant(payload["valid_from"], "data.valid_from")
            existing = registry.signers.get(payload["user_id"])
            if existing is not None and existing.revoked_at is None:
                raise InputRefused(f"data.user_id: {payload['user_id']} is already a registered signer")
            for other in registry.signers.values():
                if other.public_raw == _raw(payload["public_key"]):
                    raise InputRefused(f"data.public_key: this key is already registered to {other.user_id}")
        elif type_name == "SignerRevoked":
            existing = registry.signers.get(payload["user_id"])
            if existing is None:
                raise InputRefused(f"data.user_id: {payload['user_id']} is not a registered signer")
            if existing.revoked_at is not None:
                raise InputRefused(f"data.user_id: {payload['user_id']} is already revoked")
        elif type_name == "DocumentRegistered":
            registry.documents.check_registration(payload)
        elif type_name == "ProtocolAmended":
            check_amendment(payload, registry)
        elif type_name in witnesses.TYPES:
            witnesses.WitnessSet.replay(self.store.stream(STUDY_STREAM)).check(type_name, payload)
        return payload

    def _refuse_duplicate_id(self, event_id: str | None) -> None:
        if event_id is not None and self.store.record_by_event_id(event_id) is not None:
            raise InputRefused(f"event_id: {event_id} is already in the ledger")

    def _save(self, envelopes: list[Envelope], signer: Signer) -> None:
        self.store.append(envelopes, signer)


class Decider:
    """Decides a sequence of commands against the ledger plus the ones decided before them.

    It keeps only compact facts per participant, so an import of any length
    is checked in bounded memory.
    """

    def __init__(self, trial: Trial, signer: Signer, *, track_event_ids: bool = False):
        self.trial = trial
        self.signer = signer
        self.registry, self.study_length = trial.writer_registry()
        if self.registry.protocol is None:
            raise InputRefused("--db: the ledger is not initialised (run `trial-ledger init`)")
        entry = self.registry.signer_for_key(signer.key_id)
        if entry is None:
            raise InputRefused(f"--key: key {signer.key_id} is not registered to any signer")
        self.author = entry.user_id
        self.states = ParticipantStates(trial.participant)
        self.seen_ids: set[str] | None = set() if track_event_ids else None
        self.locks = datamanagement.Locks.replay(trial.store.stream(STUDY_STREAM))

    def decide(self, command: Command) -> Envelope:
        et = event_type(command.type)
        datamanagement.check_lock(self.locks, command.type, command.participant, et.participant)
        env = self.trial._decide_one(command, self.signer, self.registry, self.author, self.states,
                                     self.study_length)
        state = None if env.stream == STUDY_STREAM else self.states.of(env.stream)
        datamanagement.check(env, store=self.trial.store, registry=self.registry, locks=self.locks, state=state)
        if self.seen_ids is not None:
            if env.event_id in self.seen_ids:
                raise InputRefused(f"event_id: {env.event_id} appears twice")
            if command.event_id is not None:
                self.seen_ids.add(env.event_id)
        if state is None:
            self.study_length += 1
            self.registry.observe(env)
            self.locks.apply(env)
        else:
            state.apply(env)
        return env


def icf_version_of(env: Envelope, position: int) -> IcfVersion | None:
    """The ICF version a study event puts in force (genesis or amendment), or None for other events."""
    if env.type == "StudyInitialised" and isinstance(env.data.get("protocol"), dict):
        return IcfVersion(position, str(env.data["protocol"].get("icf_version")))
    if env.type == "ProtocolAmended":
        return IcfVersion(position, str(env.data.get("icf_version")), _effective(env.occurred_at),
                          env.data.get("reconsent_required") is True)
    return None


def _effective(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return value if value.tzinfo is not None else None


def _raw(b64: str) -> bytes:
    return raw_public_bytes(public_from_b64(b64))


def protocol_versions_of(study: list[tuple[int, Envelope]], fallback: Protocol | None,
                         genesis: Callable[[], Protocol]) -> list[ProtocolVersion]:
    """The protocol versions among the study stream's (position, envelope) pairs, each with the clinical time
    it took effect: one function for the store-backed Trial and the in-memory verified log."""
    versions: list[ProtocolVersion] = []
    for position, env in study:
        if env.type not in ("StudyInitialised", "ProtocolAmended"):
            continue
        document = env.data.get("protocol")
        current = versions[-1].protocol if versions else fallback
        try:
            protocol = parse_protocol(document) if isinstance(document, dict) else current
        except InputRefused:
            protocol = current
        if protocol is None:
            protocol = genesis()
        icf = env.data.get("icf_version") if env.type == "ProtocolAmended" else protocol.icf_version
        effective = parse_instant(env.occurred_at, "occurred_at")
        versions.append(ProtocolVersion(position, effective, protocol, str(icf), env.event_id,
                                        env.author, env.reason, env.data.get("reconsent_required") is True))
    return versions
