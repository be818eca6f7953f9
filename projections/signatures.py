"""Who signed each value, when and meaning what (21 CFR 11.50): for ``show`` and its ``--json``.

A pure function of one participant's records and the study stream's
records: each entry's signer (printed name and role as registered at that
point of the log), the recorded time in UTC and in the site's local offset
(the offset of the entry's clinical time), the meaning, and the
corrections, voids and AE reassessments signed on it later.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

from domain.signers import SignerRegistry
from domain.timeutil import parse_time
from ledger.envelope import Envelope, Record
from projections.audit import signer_of

AMENDING = ("EntryCorrected", "EntryVoided")


def _times(env: Envelope) -> tuple[str, str]:
    recorded, occurred = parse_time(env.recorded_at), parse_time(env.occurred_at)
    if recorded is None:
        return env.recorded_at, env.recorded_at
    local_tz = occurred.tzinfo if occurred is not None and occurred.tzinfo is not None else UTC
    return recorded.astimezone(UTC).isoformat(), recorded.astimezone(local_tz).isoformat()


def signatures(records: Sequence[Record], study_records: Sequence[Record]) -> dict[str, dict[str, Any]]:
    """event id -> its signature, with ``changes``: the signed corrections, voids and updates that followed."""
    registry = SignerRegistry()
    study = iter(sorted(study_records, key=lambda r: r.position))
    pending = next(study, None)
    out: dict[str, dict[str, Any]] = {}
    ae_entries: dict[str, str] = {}
    for record in sorted(records, key=lambda r: r.position):
        while pending is not None and pending.position < record.position:
            registry.observe(pending.envelope())
            pending = next(study, None)
        env = record.envelope()
        signer = signer_of(registry, env)
        utc, local = _times(env)
        sig: dict[str, Any] = {"event_id": env.event_id, "event_type": env.type, "user_id": signer.user_id,
               "name": signer.name, "role": signer.role, "meaning": env.meaning, "recorded_at_utc": utc,
               "recorded_at_local": local, "reason": env.reason, "position": record.position, "changes": []}
        out[env.event_id] = sig
        target = None
        if env.type in AMENDING:
            target = str(env.data.get("target_event_id"))
        elif env.type == "AdverseEventUpdated":
            target = ae_entries.get(str(env.data.get("ae_id")))
        elif env.type == "AdverseEventReported":
            ae_entries[str(env.data.get("ae_id"))] = env.event_id
        if target in out:
            out[target]["changes"].append({k: v for k, v in sig.items() if k != "changes"})
    return out


def line(sig: dict[str, Any], verb: str = "signed") -> str:
    """``signed by Zhao Min (lab), 2010-09-13T03:40:52+00:00 UTC / 11:40:52+08:00 local, meaning authorship``."""
    text = (f"{verb} by {sig['name']} ({sig['role']}), {sig['recorded_at_utc']} UTC / "
            f"{sig['recorded_at_local']} local, meaning {sig['meaning']}")
    return text + (f"; reason: {sig['reason']}" if sig.get("reason") and verb != "signed" else "")
