"""Recording refused writes in the security log (21 CFR 11.300(d)); the one place that does it.

Write commands call ``note_attempt`` with what they are trying (command, event type,
participant) and ``load_signer`` notes the key (its id from ``KEY.pub`` before the passphrase is
tried, so a wrong passphrase is attributed too). When the command ends in ``InputRefused``
(exit 3), ``LedgerGroup`` calls ``record_refusal``, which appends one row to
``ledger.security_log`` - only if the command had opened an existing ledger: a refused command
against a database that does not exist creates nothing, so it is not logged.
"""

from __future__ import annotations

from pathlib import Path

import click

from domain.signers import STUDY_STREAM, SignerRegistry
from ledger import security_log
from ledger.keys import key_id, public_from_b64, raw_public_bytes
from ledger.store import Store


def note_attempt(ctx: click.Context, command: str, event_type: str | None = None,
                 participant: str | None = None) -> None:
    """Mark this command as a write attempt, so a refusal is recorded."""
    ctx.obj.setdefault("attempt", {}).update(command=command, event_type=event_type, participant=participant)


def note_key(key: Path, kid: str | None = None) -> None:
    """Remember which key is used: from the decrypted key, or else from ``KEY.pub`` beside it."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.obj is None:
        return
    attempt = ctx.obj.setdefault("attempt", {})
    if kid is not None:
        attempt["key_id"] = kid
        return
    try:
        words = key.with_name(key.name + ".pub").read_text().split()
        attempt["key_id"] = key_id(raw_public_bytes(public_from_b64(words[0])))
        attempt["claimed_user"] = words[1] if len(words) > 1 else None
    except Exception:  # noqa: BLE001 - no readable .pub: the key stays unknown
        pass


def record_refusal(ctx: click.Context, reason: str) -> None:
    """Append the refusal to the security log, if this was a write attempt on an existing ledger."""
    obj = ctx.obj or {}
    attempt = obj.get("attempt")
    if not attempt or not attempt.get("command") or not obj.get("ledger_opened"):
        return
    store = None
    try:
        store = Store(obj["db"], create=False)
        if store.head_position() == 0:
            return  # no ledger here (nothing initialised): a refusal adds no table to it
        user = attempt.get("claimed_user")
        if attempt.get("key_id"):
            entry = SignerRegistry.replay(store.stream(STUDY_STREAM)).signer_for_key(attempt["key_id"])
            user = entry.user_id if entry is not None else user
        security_log.record(store, security_log.Refusal(
            recorded_at=security_log.now_iso(), user_id=user, key_id=attempt.get("key_id"),
            command=attempt["command"], event_type=attempt.get("event_type"),
            participant=attempt.get("participant"), reason=reason))
    except Exception as e:  # noqa: BLE001 - the refusal stands even if it cannot be logged; say so
        click.echo(f"warning: refusal not written to the security log ({type(e).__name__}: {e})", err=True)
    finally:
        if store is not None:
            store.close()
