"""Who may sign what, as the log itself says (SPEC §2 roles, §4 refusals, §5.4).

The registry is rebuilt from the study stream's events: the genesis event
names the root key and the admin, ``SignerRegistered`` adds a key with a
role, ``SignerRevoked`` deauthorises it (21 CFR 11.300), ``ProtocolAmended``
may replace the protocol and its role table. The same class answers at
append time and, fed the global log in order, for ``verify``: one place
for every authorisation rule.
"""

from __future__ import annotations

import base64
import contextlib
import binascii
from dataclasses import dataclass, replace
from datetime import datetime

from ledger.envelope import Envelope
from ledger.keys import fingerprint, key_id
from ledger.verify import Unauthorised

from domain.documents import DocumentRegistry
from domain.events import CATALOGUE
from domain.protocol import PARTICIPANT_EVENTS, Protocol, parse_protocol
from domain.timeutil import parse_instant

STUDY_STREAM = "@study"


@dataclass(frozen=True)
class SignerEntry:
    user_id: str
    name: str
    role: str
    public_raw: bytes
    key_id: str
    valid_from: datetime | None
    registered_at: str
    revoked_at: str | None = None
    revoke_reason: str | None = None


def role_may_sign(protocol: Protocol, role: str, type_name: str) -> bool:
    spec = protocol.roles.get(role)
    if spec is None:
        return False
    is_participant = CATALOGUE.get(type_name) is not None and CATALOGUE[type_name].participant
    allowed = type_name in spec.may_sign or (PARTICIPANT_EVENTS in spec.may_sign and is_participant)
    # Whoever may amend the protocol may register its documents, so a protocol written before
    # documents existed can still be amended to a registered document (SPEC §10).
    allowed = allowed or (type_name == "DocumentRegistered" and "ProtocolAmended" in spec.may_sign)
    return allowed and type_name not in spec.except_


def _instant_or_none(text: str) -> datetime | None:
    try:
        return parse_instant(text, "occurred_at")
    except Exception:  # noqa: BLE001 - a hostile payload must never crash the verifier
        return None


def _raw_key(b64: object) -> bytes | None:
    if not isinstance(b64, str):
        return None
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


class SignerRegistry:
    """Signers, roles and the protocol in force at a point of the log."""

    def __init__(self) -> None:
        self.study_id: str | None = None
        self.protocol: Protocol | None = None
        self.protocol_sha256: str | None = None
        self.icf_version: str | None = None
        self.icf_versions: set[str] = set()  # every ICF version the protocol and its amendments named
        self.root_public_raw: bytes | None = None
        self.signers: dict[str, SignerEntry] = {}
        self.by_key: dict[str, str] = {}
        self.documents = DocumentRegistry()
        # (effective from, protocol): the genesis protocol, then each amendment's from its clinical time
        self.protocols: list[tuple[datetime | None, Protocol]] = []
        # (key_id, author, type, meaning) -> (key, entry) for grants already decided; emptied whenever a
        # study event changes the registry, so a grant is never reused across a registration,
        # revocation or amendment. verify asks once per event: this keeps it a dict lookup.
        self._granted: dict[tuple[str, str, str, str], tuple[bytes, SignerEntry]] = {}

    @classmethod
    def replay(cls, envelopes: list[Envelope]) -> SignerRegistry:
        registry = cls()
        for env in envelopes:
            registry.observe(env)
        return registry

    @property
    def initialised(self) -> bool:
        return self.root_public_raw is not None

    @property
    def root_public(self) -> bytes | None:
        return self.root_public_raw

    @property
    def root_fingerprint(self) -> str | None:
        return fingerprint(self.root_public_raw) if self.root_public_raw else None

    def role_of(self, user_id: str) -> str | None:
        """The role a user was registered with (the author of an entry, for who-may-edit-whom)."""
        entry = self.signers.get(user_id)
        return entry.role if entry is not None else None

    def checkpoint_keys(self, *, include_revoked: bool = False) -> list[bytes]:
        """Keys that may sign checkpoints: the root key and every key registered with role ``log``.

        A revoked log key signs no new checkpoint, but the checkpoints it signed before still verify
        (an inspector's checkpoint is checked against the log's own root anyway).
        """
        keys = [self.root_public_raw] if self.root_public_raw else []
        return keys + [s.public_raw for s in self.signers.values()
                       if s.role == "log" and (include_revoked or s.revoked_at is None)]

    def signer_for_key(self, kid: str) -> SignerEntry | None:
        user = self.by_key.get(kid)
        return self.signers.get(user) if user else None

    # -- Authority (ledger.verify) ---------------------------------------------------------

    def authorise(self, envelope: Envelope) -> bytes:
        granted = self._granted.get((envelope.key_id, envelope.author, envelope.type, envelope.meaning))
        if granted is not None:
            public, entry = granted
            if entry.valid_from is not None:
                self._check_valid_from(entry, envelope.recorded_at)
            return public
        public = self._authorise(envelope)
        signer = self.signer_for_key(envelope.key_id)
        if envelope.type != "StudyInitialised" and signer is not None:
            self._granted[(envelope.key_id, envelope.author, envelope.type, envelope.meaning)] = (public, signer)
        return public

    @staticmethod
    def _check_valid_from(entry: SignerEntry, recorded_at: str) -> None:
        """``recorded_at`` must be an aware time no earlier than the key's ``valid_from``.

        ``datetime.fromisoformat`` plus the comparison (a time without an
        offset cannot be compared with an aware one: TypeError) is what
        ``parse_instant`` checks, at half the cost on verify's hot path.
        """
        assert entry.valid_from is not None
        try:
            early = datetime.fromisoformat(recorded_at) < entry.valid_from
        except (TypeError, ValueError):  # not a string, not ISO 8601, or no UTC offset
            raise Unauthorised("recorded_at is not a valid time") from None
        if early:
            raise Unauthorised(f"key of {entry.user_id} is not valid before {entry.valid_from.isoformat()}")

    def _authorise(self, envelope: Envelope) -> bytes:
        if envelope.type == "StudyInitialised":
            return self._authorise_genesis(envelope)
        if not self.initialised or self.protocol is None:
            raise Unauthorised("no StudyInitialised before this event")
        entry = self.signer_for_key(envelope.key_id)
        if entry is None:
            raise Unauthorised(f"key {envelope.key_id} is not registered to any signer")
        if entry.user_id != envelope.author:
            raise Unauthorised(f"key {envelope.key_id} belongs to {entry.user_id}, not to {envelope.author}")
        if entry.revoked_at is not None:
            raise Unauthorised(f"signer {entry.user_id} was revoked at {entry.revoked_at}")
        if entry.valid_from is not None:
            self._check_valid_from(entry, envelope.recorded_at)
        if not role_may_sign(self.protocol, entry.role, envelope.type):
            raise Unauthorised(f"role {entry.role} ({entry.user_id}) may not sign {envelope.type}")
        meanings = self.protocol.roles[entry.role].meanings
        if meanings is not None and envelope.meaning not in meanings:
            raise Unauthorised(f"role {entry.role} ({entry.user_id}) may not sign with meaning {envelope.meaning!r}")
        return entry.public_raw

    def _authorise_genesis(self, envelope: Envelope) -> bytes:
        if self.initialised:
            raise Unauthorised("a second StudyInitialised")
        if (envelope.stream, envelope.position) != (STUDY_STREAM, 1):
            raise Unauthorised("StudyInitialised must open the study stream")
        raw = _raw_key(envelope.data.get("root_public_key"))
        if raw is None:
            raise Unauthorised("StudyInitialised holds no valid root_public_key")
        if envelope.key_id != key_id(raw) or envelope.author != envelope.data.get("admin_id"):
            raise Unauthorised("StudyInitialised is not signed by its own root key and admin")
        return raw

    def observe(self, envelope: Envelope) -> None:
        """Apply a study-level event; malformed data is ignored (verify reports it elsewhere)."""
        handler = getattr(self, f"_on_{envelope.type}", None)
        if handler is not None:
            self._granted.clear()
            with contextlib.suppress(Exception):  # a hostile payload must never crash the verifier
                handler(envelope)

    def _on_StudyInitialised(self, env: Envelope) -> None:
        if self.initialised:
            return
        data = env.data
        raw = _raw_key(data["root_public_key"])
        if raw is None:
            return
        self.root_public_raw = raw
        self.study_id = data["study_id"]
        self.protocol_sha256 = data["protocol_sha256"]
        if isinstance(data.get("protocol"), dict):
            self.protocol = parse_protocol(data["protocol"])
            self.icf_version = self.protocol.icf_version
            self.icf_versions.add(self.protocol.icf_version)
            self.protocols.append((None, self.protocol))
        admin = SignerEntry(
            user_id=data["admin_id"], name=data["admin_name"], role="admin", public_raw=raw,
            key_id=key_id(raw), valid_from=None, registered_at=env.recorded_at,
        )
        self._add(admin)

    def _on_SignerRegistered(self, env: Envelope) -> None:
        data = env.data
        raw = _raw_key(data["public_key"])
        if raw is None:
            return
        self._add(SignerEntry(
            user_id=data["user_id"], name=data["name"], role=data["role"], public_raw=raw,
            key_id=key_id(raw), valid_from=parse_instant(data["valid_from"], "valid_from"),
            registered_at=env.recorded_at,
        ))

    def _on_SignerRevoked(self, env: Envelope) -> None:
        entry = self.signers[env.data["user_id"]]
        self.signers[entry.user_id] = replace(entry, revoked_at=env.recorded_at, revoke_reason=env.reason)

    def _on_DocumentRegistered(self, env: Envelope) -> None:
        self.documents.observe(env)

    def _on_ProtocolAmended(self, env: Envelope) -> None:
        data = env.data
        if isinstance(data.get("protocol"), dict):
            self.protocol = parse_protocol(data["protocol"])
            self.protocols.append((_instant_or_none(env.occurred_at), self.protocol))
        self.protocol_sha256 = data["protocol_sha256"]
        self.icf_version = data["icf_version"]
        self.icf_versions.add(data["icf_version"])

    def protocol_at(self, occurred: datetime) -> Protocol | None:
        """The protocol whose rules govern an event that happened clinically at ``occurred``.

        Who may sign is decided by log position (``self.protocol``); what an
        entry must hold follows the amendment in force at its clinical time.
        """
        in_force = [p for since, p in self.protocols if since is None or since <= occurred]
        return in_force[-1] if in_force else self.protocol

    def _add(self, entry: SignerEntry) -> None:
        old = self.signers.get(entry.user_id)
        if old is not None:
            self.by_key.pop(old.key_id, None)
        self.signers[entry.user_id] = entry
        self.by_key[entry.key_id] = entry.user_id
