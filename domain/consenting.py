"""Refusals for consent and amendment entries (SPEC §10, ICH E6(R3), EMA A5.3.2).

A consent is taken by a person the ledger knows: ``obtained_by`` must be a
registered, unrevoked signer whose role the protocol allows to obtain
consent. It names the signed form by hash whenever that ICF version is
registered. An amendment names a registered protocol document; rules it
embeds must be that file's (see ``DocumentRegistry.check_amendment``) and
say the same version and ICF. ``witness`` stays a
free name: an impartial witness is usually not a user of the system.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ledger.envelope import Envelope
from ledger.errors import InputRefused

from domain.protocol import Protocol, parse_protocol
from domain.signers import SignerRegistry, role_may_sign


def may_obtain_consent(protocol: Protocol, role: str) -> bool:
    spec = protocol.roles.get(role)
    if spec is None:
        return False
    if spec.may_obtain_consent is not None:
        return spec.may_obtain_consent
    return role_may_sign(protocol, role, "ConsentSigned")


def check_consent_entry(type_name: str, payload: dict[str, Any], registry: SignerRegistry,
                        target_type: str | None, stream: Callable[[], list[Envelope]]) -> None:
    """Check a consent, or a correction of one (corrections are checked like new entries).

    A correction is checked on the fields it changes, against the consent as
    corrected so far, so fixing a witness's name is not refused because the
    person who took consent has since left.
    """
    if type_name == "ConsentSigned":
        check_consent(payload, registry)
        return
    if type_name != "EntryCorrected" or target_type != "ConsentSigned":
        return
    target_id, changes = payload["target_event_id"], payload["changes"]
    consent: dict[str, Any] = {}
    for env in stream():
        if env.event_id == target_id:
            consent = dict(env.data)
        elif env.type == "EntryCorrected" and env.data.get("target_event_id") == target_id:
            consent.update(env.data.get("changes") or {})
    consent.update(changes)
    if "obtained_by" in changes:
        check_obtained_by(consent, registry)
    if "icf_version" in changes or "document_sha256" in changes:
        check_icf_version(consent, registry)
        registry.documents.check_consent(consent)


def check_consent(payload: dict[str, Any], registry: SignerRegistry) -> None:
    check_obtained_by(payload, registry)
    check_icf_version(payload, registry)
    registry.documents.check_consent(payload)


def check_icf_version(payload: dict[str, Any], registry: SignerRegistry) -> None:
    """Once a study registers its ICFs, a consent names a version the study knows, spelled as it knows it.

    Otherwise " 2.0" or "v2.0" would step around the registered document's hash.
    """
    registered = {d.version for d in registry.documents.documents if d.kind == "icf"}
    known = registered | registry.icf_versions
    if registered and payload["icf_version"] not in known:
        raise InputRefused(f"data.icf_version: {payload['icf_version']!r} is not an ICF version of this study "
                           f"({', '.join(sorted(known))})")


def check_obtained_by(payload: dict[str, Any], registry: SignerRegistry) -> None:
    protocol = registry.protocol
    assert protocol is not None
    who = payload["obtained_by"]
    entry = registry.signers.get(who)
    if entry is None:
        raise InputRefused(f"data.obtained_by: {who!r} is not a registered signer (give the user id of the "
                           "investigator or coordinator who took consent)")
    if entry.revoked_at is not None:
        raise InputRefused(f"data.obtained_by: signer {who} was revoked at {entry.revoked_at}")
    if not may_obtain_consent(protocol, entry.role):
        allowed = sorted(r for r in protocol.roles if may_obtain_consent(protocol, r))
        raise InputRefused(f"data.obtained_by: {who} is a {entry.role}; the protocol lets only "
                           f"{', '.join(allowed) or 'no role'} obtain consent")


def check_amendment(payload: dict[str, Any], registry: SignerRegistry) -> None:
    registry.documents.check_amendment(payload)
    if payload.get("reconsent_required") and payload["icf_version"] == registry.icf_version:
        raise InputRefused(f"data.reconsent_required: ICF {payload['icf_version']} is already in force; "
                           "re-consent needs a new ICF version")
    document = payload.get("protocol")
    if document is None:
        return
    new = parse_protocol(document, source="data.protocol")
    if new.version != payload["protocol_version"]:
        raise InputRefused(f"data.protocol: the embedded protocol is version {new.version}, "
                           f"not {payload['protocol_version']}")
    if new.icf_version != payload["icf_version"]:
        raise InputRefused(f"data.icf_version: {payload['icf_version']} is not the embedded protocol's "
                           f"ICF version ({new.icf_version})")
    if "admin" not in new.roles or "ProtocolAmended" not in new.roles["admin"].may_sign:
        raise InputRefused("data.protocol: the new protocol must still let the admin amend it")
