"""export (ODM, raw signed log, audit CSV, inspection package) and report (self-contained HTML) (SPEC §6, §12).

ODM, CSV, the package and the report are built from the verified log
(``projections.log_source.load``), never from the projection tables, and written to a
temporary file that replaces ``--out`` only once the whole output is written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import click

from cli.options import emit, load_signer, open_store, passphrase_file_option
from cli.read import IsoTime
from ledger import checkpoint as notes
from ledger.errors import InputRefused, IntegrityFailure
from ledger.signed_log import export as export_signed_log
from projections import log_source
from projections.odm import write_odm
from projections.package import PackageError, build_package, write_audit_csv
from projections.report import failed_page
from projections.report import write as write_report
from projections.verified import open_verified


def _write(out: Path, blob: bytes) -> None:
    try:
        out.write_bytes(blob)
    except OSError as e:
        raise InputRefused(f"--out {out}: {e.strerror}") from None


@contextmanager
def _replacing(out: Path, *, binary: bool = False) -> Iterator[IO[Any]]:
    """A temporary file beside ``out`` that becomes ``out`` only if the block completes.

    Outputs are written as they are computed, so a failure part-way (a row changed after it was
    verified) must never leave a partial file under the name an inspector opens.
    """
    try:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent or Path("."))
    except OSError as e:
        raise InputRefused(f"--out {out}: {e.strerror}") from None
    tmp = Path(name)
    try:
        handle: IO[Any] = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")
        with handle:
            yield handle
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # as a plain write would have created it, not mkstemp's 0600
        os.replace(tmp, out)
    except OSError as e:
        raise InputRefused(f"--out {out}: {e.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)


class _Lines:
    """A text file that counts the newlines written through it."""

    def __init__(self, handle: IO[str]):
        self.handle, self.count = handle, 0

    def write(self, text: str) -> int:
        self.count += text.count("\n")
        return self.handle.write(text)


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
    try:
        log = log_source.load(store, jobs=jobs)
    except log_source.LogFailed as e:
        raise PackageError(f"the log does not verify ({e.report.sorted()[0].line()}); run `trial-ledger verify`"
                           ) from None
    if fmt == "package":
        if log.checkpoint_note is None:
            raise InputRefused("no checkpoint yet: run `trial-ledger checkpoint` first (and collect cosignatures)")
        assert signer is not None
        with _replacing(out, binary=True) as handle:
            events = build_package(log, log.checkpoint_note, signer, handle, jobs=jobs)
            size = handle.tell()
        covered = notes.parse(log.checkpoint_note)[0].size
        stale = "" if covered == events else \
            f"; its checkpoint covers only {covered} (run `trial-ledger checkpoint` for a current one)"
        emit(ctx, {"format": fmt, "out": str(out), "count": events, "bytes": size,
                   "checkpoint_size": covered},
             f"exported an inspection package of {events} events to {out}{stale}")
        return
    with _replacing(out) as handle:
        if fmt == "odm":
            n = write_odm(log, handle)
        else:
            lines = _Lines(handle)
            write_audit_csv(log, lines)  # type: ignore[arg-type]
            n = lines.count - 1  # the count it has always reported: lines after the header
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
        with _replacing(out) as handle:
            write_report(log, handle, as_of=as_of)
            size = handle.tell()
    except IntegrityFailure as e:  # the page says FAILED and shows nothing read from the ledger; exit 1
        _write(out, failed_page(str(e)).encode("utf-8"))
        raise
    emit(ctx, {"out": str(out), "bytes": size}, f"wrote {out} ({size // 1024} KiB)")


COMMANDS = (export, report)
