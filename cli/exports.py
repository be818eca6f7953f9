"""export (ODM, raw signed log, audit CSV, inspection package) and report (self-contained HTML) (SPEC §6, §12).

ODM, CSV, the package and the report are built from the verified log
(``projections.log_source.load``), never from the projection tables.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from cli.options import emit, load_signer, open_store, passphrase_file_option
from cli.read import IsoTime
from ledger import checkpoint as notes
from ledger.errors import InputRefused, IntegrityFailure
from ledger.signed_log import export as export_signed_log
from projections import log_source
from projections.package import PackageError, audit_csv, build_package, odm_xml
from projections.report import build as build_report
from projections.report import failed_page
from projections.verified import open_verified


def _write(out: Path, blob: bytes) -> None:
    try:
        out.write_bytes(blob)
    except OSError as e:
        raise InputRefused(f"--out {out}: {e.strerror}") from None


@click.command()
@click.option("--format", "fmt", type=click.Choice(["odm", "jsonl", "csv", "package"]), required=True)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option("--key", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="For --format package: the root key that signs the manifest (the checkpoint key).")
@passphrase_file_option
@click.option("--jobs", type=click.IntRange(1, 64), default=None)
@click.pass_context
def export(ctx: click.Context, fmt: str, out: Path, key: Path | None, passphrase_file: Path | None,
           jobs: int | None) -> None:
    """CDISC ODM 1.3.2 with audit records and signatures, the raw signed log, the audit trail as CSV, or the
    inspection package (signed log, checkpoint, report, ODM, CSV and a signed manifest in one zip)."""
    if fmt == "package" and key is None:
        raise click.UsageError("--format package needs --key (the root key that signs the manifest)")
    store = open_store(ctx)
    if fmt == "jsonl":
        verified = open_verified(store, jobs=jobs)  # IntegrityFailure (exit 1) before a byte is written
        try:
            with out.open("wb") as handle:
                n = export_signed_log(verified.vstore, handle)  # type: ignore[arg-type]
        except OSError as e:
            raise InputRefused(f"--out {out}: {e.strerror}") from None
        emit(ctx, {"format": fmt, "out": str(out), "count": n}, f"exported {n} signed events to {out}")
        return
    signer = load_signer(key, passphrase_file) if key is not None else None
    log = log_source.load(store, jobs=jobs)
    if not log.report.ok:
        raise PackageError(f"the log does not verify ({log.report.sorted()[0].line()}); run `trial-ledger verify`")
    if fmt == "package":
        if log.checkpoint_note is None:
            raise InputRefused("no checkpoint yet: run `trial-ledger checkpoint` first (and collect cosignatures)")
        assert signer is not None
        blob = build_package(log.records, log.checkpoint_note, signer, jobs=jobs)
        _write(out, blob)
        covered = notes.parse(log.checkpoint_note)[0].size
        stale = "" if covered == len(log.records) else \
            f"; its checkpoint covers only {covered} (run `trial-ledger checkpoint` for a current one)"
        emit(ctx, {"format": fmt, "out": str(out), "count": len(log.records), "bytes": len(blob),
                   "checkpoint_size": covered},
             f"exported an inspection package of {len(log.records)} events to {out}{stale}")
        return
    text = odm_xml(log) if fmt == "odm" else audit_csv(log)
    _write(out, text.encode())
    n = len(log.participants) if fmt == "odm" else text.count("\n") - 1
    what = "participants" if fmt == "odm" else "audit rows"
    emit(ctx, {"format": fmt, "out": str(out), "count": n}, f"exported {n} {what} to {out}")


@click.command()
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option("--as-of", type=IsoTime(), default=None,
              help="The record as it stood at this recorded time: every section, and the verdict of that prefix.")
@click.option("--jobs", type=click.IntRange(1, 64), default=None)
@click.pass_context
def report(ctx: click.Context, out: Path, as_of: datetime | None, jobs: int | None) -> None:
    """One self-contained HTML inspection report (inline CSS and SVG, no network, no JavaScript)."""
    try:
        log = log_source.load(open_store(ctx), as_of=as_of, jobs=jobs)
        if not log.report.ok:
            first = log.report.sorted()[0].line() if log.report.findings else "the log does not verify"
            raise IntegrityFailure(f"the log does not verify: {first}")
    except IntegrityFailure as e:  # the page says FAILED and shows nothing read from the ledger; exit 1
        _write(out, failed_page(str(e)).encode("utf-8"))
        raise
    html = build_report(log, as_of=as_of)
    _write(out, html.encode("utf-8"))
    emit(ctx, {"out": str(out), "bytes": len(html.encode())}, f"wrote {out} ({len(html.encode()) // 1024} KiB)")


COMMANDS = (export, report)
