"""export (ODM, raw signed log, audit CSV) and report (self-contained HTML) (SPEC §6)."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from ledger.errors import InputRefused, IntegrityFailure
from ledger.signed_log import export as export_signed_log
from projections import audit as audit_rows
from projections.odm import OdmWriter, participants_of
from projections.verified import open_verified
from projections.report import build as build_report
from projections.report import failed_page

from cli.options import emit, open_store
from cli.read import IsoTime


@click.command()
@click.option("--format", "fmt", type=click.Choice(["odm", "jsonl", "csv"]), required=True)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option("--jobs", type=click.IntRange(1, 64), default=None, help="Signature-checking processes.")
@click.pass_context
def export(ctx: click.Context, fmt: str, out: Path, jobs: int | None) -> None:
    """CDISC ODM 1.3.2 with audit records and signatures, the raw signed log, or the audit trail as CSV.

    The log is verified first; nothing is written if it does not verify.
    """
    verified = open_verified(open_store(ctx), jobs=jobs)
    try:
        handle: Any = out.open("wb") if fmt == "jsonl" else out.open("w", encoding="utf-8", newline="")
    except OSError as e:
        raise InputRefused(f"--out {out}: {e.strerror}") from None
    with handle:
        if fmt == "jsonl":
            n = export_signed_log(verified.vstore, handle)  # type: ignore[arg-type]
        elif fmt == "odm":
            participants = participants_of(verified.trial)
            OdmWriter(verified.trial).write(handle, participants)
            n = len(participants)
        else:
            writer = csv.DictWriter(handle, fieldnames=audit_rows.COLUMNS, lineterminator="\n")
            writer.writeheader()
            n = 0
            for row in verified.audit():
                writer.writerow(row)
                n += 1
    what = {"odm": "participants", "jsonl": "signed events", "csv": "audit rows"}[fmt]
    emit(ctx, {"format": fmt, "out": str(out), "count": n}, f"exported {n} {what} to {out}")


@click.command()
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option("--as-of", type=IsoTime(), default=None, help="The record as it stood at this recorded time.")
@click.option("--jobs", type=click.IntRange(1, 64), default=None)
@click.pass_context
def report(ctx: click.Context, out: Path, as_of: datetime | None, jobs: int | None) -> None:
    """One self-contained HTML inspection report (inline CSS and SVG, no network, no JavaScript)."""
    try:
        html = build_report(open_verified(open_store(ctx), jobs=jobs, checkpoints=True), as_of=as_of)
    except IntegrityFailure as e:  # the page says FAILED and shows nothing read from the ledger; exit 1
        _write_report(out, failed_page(str(e)))
        raise
    _write_report(out, html)
    emit(ctx, {"out": str(out), "bytes": len(html.encode())}, f"wrote {out} ({len(html.encode()) // 1024} KiB)")


def _write_report(out: Path, html: str) -> None:
    try:
        out.write_text(html, encoding="utf-8")
    except OSError as e:
        raise InputRefused(f"--out {out}: {e.strerror}") from None


COMMANDS = (export, report)
