"""export (ODM, raw signed log, audit CSV) and report (self-contained HTML) (SPEC §6)."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from domain.service import Trial
from ledger.errors import InputRefused
from ledger.signed_log import export as export_signed_log
from projections import audit as audit_rows
from projections.odm import OdmWriter, participants_of
from projections.projector import Projections
from projections.report import build as build_report

from cli.options import emit, open_store
from cli.read import IsoTime


@click.command()
@click.option("--format", "fmt", type=click.Choice(["odm", "jsonl", "csv"]), required=True)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.pass_context
def export(ctx: click.Context, fmt: str, out: Path) -> None:
    """CDISC ODM 1.3.2 with audit records and signatures, the raw signed log, or the audit trail as CSV."""
    store = open_store(ctx)
    try:
        handle: Any = out.open("wb") if fmt == "jsonl" else out.open("w", encoding="utf-8", newline="")
    except OSError as e:
        raise InputRefused(f"--out {out}: {e.strerror}") from None
    with handle:
        if fmt == "jsonl":
            n = export_signed_log(store, handle)
        elif fmt == "odm":
            trial = Trial(store)
            participants = participants_of(trial)
            OdmWriter(trial).write(handle, participants)
            n = len(participants)
        else:
            projections = Projections(store)
            projections.catch_up()
            writer = csv.DictWriter(handle, fieldnames=audit_rows.COLUMNS, lineterminator="\n")
            writer.writeheader()
            n = 0
            for row in projections.audit():
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
    html = build_report(Trial(open_store(ctx)), as_of=as_of, jobs=jobs)
    try:
        out.write_text(html, encoding="utf-8")
    except OSError as e:
        raise InputRefused(f"--out {out}: {e.strerror}") from None
    emit(ctx, {"out": str(out), "bytes": len(html.encode())}, f"wrote {out} ({len(html.encode()) // 1024} KiB)")


COMMANDS = (export, report)
