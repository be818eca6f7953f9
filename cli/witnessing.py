"""CLI plumbing for witnesses: collecting cosignatures at checkpoint time and counting them for inspectors."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from domain.signers import STUDY_STREAM
from domain.witnesses import WitnessSet
from ledger import cosignature
from ledger.merkle_log import MerkleLog
from ledger.note import NoteError, Vkey, parse_vkey, split
from ledger.store import Store
from ledger.verify import Report
from ledger.witnessed import check_records, iso, witnessed_checkpoints
from projections.witnessed import stored_notes

if TYPE_CHECKING:  # domain.cosigning is imported by the commands that collect cosignatures, not by every command
    from domain.cosigning import Collection


def collect_for(store: Store, tree: MerkleLog, note: str) -> Collection | None:
    """Ask the log's registered witnesses to cosign ``note``; None when the log has no witnesses."""
    from domain.cosigning import collect

    witnesses = WitnessSet.replay(store.stream(STUDY_STREAM))
    if not witnesses.witnesses:
        return None
    return collect(tree, note, witnesses)


def report_collection(ctx: click.Context, collection: Collection) -> None:
    """One line per witness; exit 1 below the quorum, naming every refusal."""
    for o in collection.outcomes:
        if o.signature is not None:
            click.echo(f"cosigned by {o.name} at {datetime.fromtimestamp(o.timestamp or 0, UTC).isoformat()}",
                       err=True)
        else:
            click.echo(f"refused by {o.name}: {o.refusal}", err=True)
    if collection.met:
        click.echo(f"OK: {collection.cosigned} of {len(collection.outcomes)} witnesses cosigned "
                   f"(quorum {collection.quorum})", err=True)
        return
    alarm = any(o.alarm for o in collection.outcomes)
    click.echo(f"FAIL: {collection.cosigned} cosignatures, quorum {collection.quorum}"
               + ("; SPLIT-VIEW ALARM: the log no longer extends what the witnesses saw" if alarm else ""),
               err=True)
    ctx.exit(1)


def read_vkey(value: str, param_hint: str = "--witness") -> Vkey:
    """A vkey string, or a file holding one."""
    text = value
    if "+" not in value:
        try:
            text = Path(value).read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise click.BadParameter(f"{value}: {getattr(e, 'strerror', None) or e}",
                                     param_hint=param_hint) from None
    try:
        return parse_vkey(text)
    except NoteError as e:
        raise click.BadParameter(str(e), param_hint=param_hint) from None


def witness_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--quorum", type=click.IntRange(0, 100), default=None,
                     help="Cosignatures required from the --witness keys (default: all of them).")(f)
    return click.option("--witness", "witness_keys", multiple=True, metavar="VKEY",
                        help="A witness verifier key you trust (string or file); repeatable.")(f)


def check_cosignatures(note: str, witness_keys: tuple[str, ...], quorum: int | None) -> tuple[bool, dict[str, Any]]:
    """Count the cosignatures from the inspector's keys over exactly this checkpoint body; print their times."""
    if quorum is not None and not witness_keys and quorum > 0:
        raise click.UsageError("--quorum needs --witness keys")
    vkeys = [read_vkey(k) for k in witness_keys]
    needed = len(vkeys) if quorum is None else quorum
    try:
        text, sigs = split(note)
    except NoteError as e:
        return False, {"error": str(e), "cosignatures": [], "quorum": needed}
    found = cosignature.verified(text, sigs, vkeys)
    rows = [{"witness": c.vkey.name, "time": c.time.isoformat(), "timestamp": c.timestamp} for c in found]
    newest = max((c.time for c in found), default=None)
    return len(found) >= needed, {"cosignatures": rows, "quorum": needed,
                                  "newest_witnessed": newest.isoformat() if newest else None}


def verify_witnessed(note: str | None, witness_keys: tuple[str, ...],
                     quorum: int | None) -> tuple[bool, dict[str, Any] | None]:
    """For ``verify``: nothing to check without --witness; --witness needs --checkpoint."""
    if not witness_keys and quorum is None:
        return True, None
    if note is None:
        raise click.UsageError("--witness and --quorum need --checkpoint FILE")
    return check_cosignatures(note, witness_keys, quorum)


def add_time_findings(store: Store, report: Report, witness_keys: tuple[str, ...], held: str | None) -> str | None:
    """Entries whose recorded_at lies outside their witnessed interval, and witnessed roots the log lost.

    With --witness the inspector's keys decide which cosignatures count; without, the witnesses the
    (verified) log registered. The inspector's own --checkpoint counts as well as the stored ones.
    Returns the newest time a witness vouched for a state of this log (ISO), if any.
    """
    vkeys = [read_vkey(k) for k in witness_keys] if witness_keys else \
        [w.vkey for w in WitnessSet.replay(store.stream(STUDY_STREAM)).witnesses.values()]
    if not vkeys:
        return None
    witnessed = witnessed_checkpoints([*stored_notes(store), *([held] if held else [])], vkeys)
    findings, newest = check_records(store.records, witnessed)
    for finding in findings:
        report.add(finding)
    return iso(newest)


def echo_cosignatures(ctx: click.Context, ok: bool, info: dict[str, Any] | None) -> None:
    if info is None or ctx.obj.get("json"):
        return
    for row in info["cosignatures"]:
        click.echo(f"cosigned by {row['witness']} at {row['time']}")
    if info.get("newest_witnessed"):
        click.echo(f"newest witnessed time: {info['newest_witnessed']}")


def shortfall(info: dict[str, Any] | None) -> str:
    assert info is not None
    return (f"{len(info['cosignatures'])} valid cosignatures from the given witnesses over this checkpoint, "
            f"quorum {info['quorum']}" + (f" ({info['error']})" if info.get("error") else ""))
