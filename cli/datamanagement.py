"""Data-management commands (SPEC §11): queries, sdv, signoff, verify-source, security-log."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from cli.text import one_line
from cli.options import (
    emit,
    key_option,
    load_signer,
    open_store,
    passphrase_file_option,
)
from cli.refusals import note_attempt
from cli.read import IsoTime
from domain.datamanagement import stored_casebook_hash
from domain.service import Command, Trial
from domain.signers import STUDY_STREAM
from ledger import security_log
from ledger.errors import InputRefused
from projections import datamanagement as dm

@click.command()
@click.option("--participant", default=None)
@click.option("--status", type=click.Choice(["open", "answered", "closed"]), default=None)
@click.pass_context
def queries(ctx: click.Context, participant: str | None, status: str | None) -> None:
    """Data queries with their thread and age in days (until closed)."""
    rows = dm.load(open_store(ctx)).queries(participant, status)
    text = "\n".join(
        f"{q['participant']:<10} {q['query_id']:<12} {q['status']:<9} {q['age_days']:>4} d  "
        f"raised by {q['raised_by']} on {q['target_event_id']}: {q['thread'][0].get('text', '')}"
        + "".join(f"\n{'':<24}{t['type']} by {t['by']} at {t['at']}: "
                  f"{t.get('text') or t.get('reason') or ''}"
                  + (f" (correction {t['correction_event_id']})" if t.get("correction_event_id") else "")
                  for t in q["thread"][1:])
        for q in rows)
    emit(ctx, rows, text or "no queries")


@click.command()
@click.option("--participant", default=None)
@click.pass_context
def sdv(ctx: click.Context, participant: str | None) -> None:
    """Source data verification per participant: verified, stale, not verified; the stale entries."""
    view = dm.load(open_store(ctx))
    ids = [participant] if participant else view.participant_ids()
    if participant and participant not in view.participant_ids():
        raise InputRefused(f"participant: {participant} is not in the ledger")
    rows = [view.sdv(p) for p in ids]
    lines = []
    for r in rows:
        lines.append(f"{r['participant']:<10} verified {r['verified']:>3}  stale {r['stale']:>3}  "
                     f"not verified {r['not_verified']:>3}")
        lines.extend(f"  STALE {s['type']} {s['target_event_id']}: verified by {s['verified_by']} at "
                     f"{s['verified_at']}, then {s['change']} {s['changed_by']} ({s['reason']})"
                     for s in r["stale_entries"])
    emit(ctx, rows, "\n".join(lines) or "no participants")


@click.command()
@click.argument("participant")
@click.option("--up-to", "up_to", type=click.IntRange(min=1), default=None,
              help="Stream position the signature covers (default: the whole record as stored now).")
@key_option
@passphrase_file_option
@click.pass_context
def signoff(ctx: click.Context, participant: str, up_to: int | None, key: Path, passphrase_file: Path | None) -> None:
    """Investigator's approval of a participant's casebook: signs a hash the library computes over it."""
    note_attempt(ctx, "signoff", "CasebookSigned", participant)
    store = open_store(ctx)
    length = store.stream_length(participant)
    if length == 0:
        raise InputRefused(f"participant: {participant} is not registered")
    up_to = up_to or length
    data = {"up_to_position": up_to, "casebook_hash": stored_casebook_hash(store, participant, min(up_to, length))}
    env = Trial(store).append(Command("CasebookSigned", participant, data, meaning="approval"),
                              load_signer(key, passphrase_file))
    emit(ctx, {"event_id": env.event_id, **data},
         f"signed {participant}'s casebook up to position {up_to}: {data['casebook_hash']}")


@click.command("verify-source")
@click.argument("event_id")
@key_option
@passphrase_file_option
@click.pass_context
def verify_source(ctx: click.Context, event_id: str, key: Path, passphrase_file: Path | None) -> None:
    """Monitor's source data verification of one entry: signs the entry's chain hash."""
    note_attempt(ctx, "verify-source", "SourceVerified")
    store = open_store(ctx)
    record = store.record_by_event_id(event_id)
    if record is None:
        raise InputRefused(f"EVENT_ID: no event {event_id} in the ledger")
    if record.stream == STUDY_STREAM:
        raise InputRefused(f"EVENT_ID: {event_id} is a study-level event, not a participant's source data")
    note_attempt(ctx, "verify-source", "SourceVerified", record.stream)
    data = {"target_event_id": event_id, "target_hash": record.hash.hex()}
    env = Trial(store).append(Command("SourceVerified", record.stream, data), load_signer(key, passphrase_file))
    emit(ctx, {"event_id": env.event_id, **data}, f"verified {event_id} of {record.stream} against source")


@click.command("security-log")
@click.option("--since", type=IsoTime(), default=None, help="Refusals recorded at or after this time.")
@click.pass_context
def security_log_cmd(ctx: click.Context, since: datetime | None) -> None:
    """Refused write attempts (21 CFR 11.300(d)); bursts of refusals for one key are FLAGGED."""
    rows = security_log.read(open_store(ctx), since)
    emit(ctx, rows, "\n".join(_refusal_line(r) for r in rows) or "no refused attempts")


def _refusal_line(r: dict[str, Any]) -> str:
    line = (f"{r['recorded_at']}  {'FLAGGED ' if r['flagged'] else ''}{r['user_id'] or '?'} key {r['key_id'] or '?'}  "
            f"{r['command']} {r['event_type'] or '-'} {r['participant'] or '-'}: {r['reason']}")
    return one_line(line)  # what a refused caller typed, escaped: a newline can never forge a second entry


COMMANDS = (queries, sdv, signoff, verify_source, security_log_cmd)
