"""Audit-trail rows (SPEC §7; 21 CFR 11.10(e), EMA 6.2.1): who, what, when, why, old → new.

One row per event; a correction gives one row per changed field, with the
value it replaced. Values are RFC 8785 JSON text, so a row reads the same
in every export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain.timeutil import epoch_us, utc_text
from ledger.canonical import canonical_bytes
from ledger.envelope import Envelope, Record

COLUMNS = (
    "position", "seq", "event_id", "recorded_at", "occurred_at", "user_id", "user_name", "role",
    "participant", "event_type", "field", "old_value", "new_value", "reason", "meaning",
    "target_event_id", "hash", "signature_verified",
)


def as_json(value: Any) -> str | None:
    return None if value is None else canonical_bytes(value).decode()


@dataclass(frozen=True)
class Signer:
    user_id: str
    name: str
    role: str


def signer_of(registry: Any, env: Envelope) -> Signer:
    """Who signed ``env``, as ``registry`` (the signer registry at that point of the log) knew them."""
    if env.type == "StudyInitialised":
        return Signer(env.author, str(env.data.get("admin_name")), "admin")
    entry = registry.signer_for_key(env.key_id)
    if entry is not None:
        return Signer(entry.user_id, entry.name, entry.role)
    return Signer(env.author, "(unknown signer)", "(none)")


def entry_label(type_name: str | None, data: dict[str, Any] | None) -> str:
    """What an entry is about, in the words of its form: "FBG" for a lab, "dose 2", "I5", the AE id."""
    data = data or {}
    for key, fmt in (("analyte", "{}"), ("criterion", "{}"), ("dose_number", "dose {}"), ("ae_id", "{}"),
                     ("visit", "visit {}"), ("icf_version", "ICF {}")):
        if data.get(key) is not None:
            return fmt.format(data[key])
    return type_name or "entry"


def rows_for(record: Record, env: Envelope, signer: Signer, verified: bool,
             target_data: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The audit rows of one event; ``target_data`` is the corrected/voided entry's current data."""
    base = {
        "position": record.position, "event_id": env.event_id, "recorded_at": utc_text(env.recorded_at),
        "occurred_at": env.occurred_at, "user_id": env.author, "user_name": signer.name, "role": signer.role,
        "participant": None if env.stream.startswith("@") else env.stream, "event_type": env.type,
        "reason": env.reason, "meaning": env.meaning, "target_event_id": None, "hash": record.hash.hex(),
        "signature_verified": verified, "recorded_us": epoch_us(env.recorded_at),
    }
    if env.type == "EntryCorrected":
        changes = env.data.get("changes") or {}
        old = target_data or {}
        return [
            {**base, "seq": n, "field": name, "old_value": as_json(old.get(name)), "new_value": as_json(value),
             "target_event_id": env.data.get("target_event_id")}
            for n, (name, value) in enumerate(sorted(changes.items()))
        ] or [{**base, "seq": 0, "field": None, "old_value": None, "new_value": None}]
    if env.type == "EntryVoided":
        return [{**base, "seq": 0, "field": None, "old_value": as_json(target_data), "new_value": None,
                 "target_event_id": env.data.get("target_event_id")}]
    return [{**base, "seq": 0, "field": None, "old_value": None, "new_value": as_json(env.data)}]
