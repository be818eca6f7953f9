"""The inspection package (SPEC §12): one zip an inspector verifies offline, with no database.

Contents:

* ``log.jsonl``: the signed log (``ledger.signed_log`` rows);
* ``checkpoint.txt``: the latest checkpoint as ``trial-ledger checkpoint``
  stored it, with whatever cosignature lines it carries;
* ``report.html``, ``odm.xml``, ``audit.csv``: built by ``outputs`` from the
  records decoded from ``log.jsonl``'s own bytes (so a record's position is
  its line number, which is the global position wherever the store's ids
  have no gaps);
* ``manifest.txt``: ``<sha256>  <file>`` per file, as a C2SP signed note by
  the checkpoint (root) key.

``verify_package`` runs the same ``outputs`` over the log it just verified
and compares byte for byte, so what the inspector reads is what was signed.
Nothing depends on the wall clock, and zip entries carry a fixed date, so a
package regenerated from the same log is byte-identical.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from itertools import zip_longest
from dataclasses import dataclass, field
from typing import IO

from domain.signers import SignerRegistry
from ledger import checkpoint as notes
from ledger.errors import LedgerError
from ledger.keys import Signer
from ledger.note import Vkey
from ledger.notes import sign_note, verify_note, witness_quorum
from ledger.signed_log import SignedLogFile, encode
from ledger.verified_store import LogDoesNotVerify, VerifiedStore
from projections import audit as audit_rows
from projections.odm import odm_stages, write_odm
from projections.report import checkpoint_view
from projections.report import stages as report_stages
from projections.verified_log import VerifiedLog

LOG, CHECKPOINT, REPORT, ODM, AUDIT, MANIFEST = (
    "log.jsonl", "checkpoint.txt", "report.html", "odm.xml", "audit.csv", "manifest.txt")
REGENERATED = (REPORT, ODM, AUDIT)
FILES = (LOG, CHECKPOINT, *REGENERATED)
MANIFEST_TITLE = "trial-ledger inspection package v1"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
CHUNK = 1 << 20


class PackageError(LedgerError):
    """A package that does not verify; the message names the file (exit 1)."""

    exit_code = 1


def write_audit_csv(log: VerifiedLog, out: IO[str]) -> int:
    """The audit trail as CSV, row by row in log order; returns the number of rows."""
    writer = csv.DictWriter(out, fieldnames=audit_rows.COLUMNS, lineterminator="\n")
    writer.writeheader()
    n = 0
    for row in log.audit():
        writer.writerow(row)
        n += 1
    return n


def audit_csv(log: VerifiedLog) -> str:
    out = io.StringIO()
    write_audit_csv(log, out)
    return out.getvalue()


def odm_xml(log: VerifiedLog) -> str:
    out = io.StringIO()
    write_odm(log, out)
    return out.getvalue()


def _spooled(write: Callable[[IO[str]], object]) -> IO[bytes]:
    """What ``write`` writes, as UTF-8 in a temporary file (rewound): a file of any size, never in memory."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller, who closes it
    text = io.TextIOWrapper(spool, encoding="utf-8", newline="", write_through=True)
    write(text)
    text.flush()
    text.detach()
    spool.seek(0)
    return spool


def regenerate(log: VerifiedLog) -> dict[str, IO[bytes]]:
    """The three human-facing files, as a pure function of the verified log: the one path for both sides.

    The report and the ODM file are written in step, participant by participant, so each participant's
    stream is read and its deviations folded once for both (``VerifiedLog`` keeps the last one).
    """
    def both(report: IO[str]) -> None:
        def odm(odm_out: IO[str]) -> None:
            for _step in zip_longest(report_stages(log, report), odm_stages(log, odm_out)):
                pass
        files[ODM] = _spooled(odm)

    files: dict[str, IO[bytes]] = {}
    files[REPORT] = _spooled(both)
    files[AUDIT] = _spooled(lambda out: write_audit_csv(log, out))
    return {name: files[name] for name in REGENERATED}


def outputs(log: VerifiedLog) -> dict[str, bytes]:
    """``regenerate``'s files as bytes (small logs, tests)."""
    out = {}
    for name, spool in regenerate(log).items():
        with spool:
            out[name] = spool.read()
    return out


def manifest_body(files: dict[str, bytes]) -> str:
    return _manifest_of({name: hashlib.sha256(blob).hexdigest() for name, blob in files.items()})


def _manifest_of(digests: dict[str, str]) -> str:
    lines = [f"{digest}  {name}" for name, digest in sorted(digests.items())]
    return MANIFEST_TITLE + "\n" + "\n".join(lines) + "\n"


def _digest(spool: IO[bytes]) -> tuple[str, int]:
    spool.seek(0)
    h, size = hashlib.sha256(), 0
    while chunk := spool.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
    spool.seek(0)
    return h.hexdigest(), size


def build_package(source: VerifiedLog, checkpoint_note: str, signer: Signer, out: IO[bytes], *,
                  jobs: int | None = None) -> int:
    """Write the zip of a verified log to ``out`` (seekable); returns the number of events.

    Refuses (exit 1) a log that does not verify or a checkpoint that does not cover it. The signed
    log is written from the verified replay to a temporary file, verified again from that file's own
    bytes (so positions are line numbers, as ``verify-package`` will see them), and every other file
    is regenerated from it: nothing is held in memory but one participant.
    """
    with tempfile.TemporaryFile() as log_file:
        events = 0
        for record in source.records():
            log_file.write(encode(record))
            events += 1
        log_file.flush()
        log = _verified(SignedLogFile(log_file), checkpoint_note, jobs)
        if log.registry.root_public != signer.public_raw:
            raise PackageError("--key: the package is signed with the ledger's root key (the key of `init`)")
        spools: dict[str, IO[bytes]] = {LOG: log_file, CHECKPOINT: io.BytesIO(checkpoint_note.encode()),
                                        **regenerate(log)}
        try:
            sized = {name: _digest(spool) for name, spool in spools.items()}
            origin = notes.parse(checkpoint_note)[0].origin
            manifest = sign_note(_manifest_of({n: d for n, (d, _size) in sized.items()}), signer, origin).encode()
            spools[MANIFEST] = io.BytesIO(manifest)
            sized[MANIFEST] = ("", len(manifest))
            with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
                for name in (*FILES, MANIFEST):
                    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = 0o644 << 16
                    info.file_size = sized[name][1]  # as ``writestr`` sets it: the same bytes, zip64 alike
                    spools[name].seek(0)
                    with z.open(info, "w") as member:
                        shutil.copyfileobj(spools[name], member, CHUNK)
        finally:
            for name, spool in spools.items():
                if name != LOG:
                    spool.close()
    return events


def _verified(lines: SignedLogFile, checkpoint_note: str, jobs: int | None) -> VerifiedLog:
    """Decode, verify and check the checkpoint against the log; every failure names its file."""
    try:
        size = notes.parse(checkpoint_note)[0].size
    except notes.CheckpointError:
        size = None  # checkpoint_view says why
    try:
        vstore = VerifiedStore.open(lines, SignerRegistry(), jobs=jobs or os.cpu_count() or 1,  # type: ignore[arg-type]
                                    checkpoint_sizes=[size] if size else [])
    except LogDoesNotVerify as e:
        first = e.report.sorted()[0]
        raise PackageError(f"{LOG}: line {first.position} (event {first.event_id or '?'}): {first.reason}") from None
    except LedgerError as e:
        raise PackageError(f"{LOG}: {e}") from None
    if vstore.report.events == 0:
        raise PackageError(f"{LOG}: the log holds no events")
    log = VerifiedLog(vstore, checkpoint_note)
    view = checkpoint_view(log)
    if view is None or not view["ok"]:
        raise PackageError(f"{CHECKPOINT}: {view['status'] if view else 'missing'}")
    return log


@dataclass
class PackageVerdict:
    events: int
    checkpoint_size: int
    files: list[str]
    witnesses: list[str] = field(default_factory=list)
    root_fingerprint: str | None = None


def verify_package(blob: bytes, root_public: bytes, *, witnesses: Sequence[Vkey] = (), quorum: int = 0,
                   jobs: int | None = None) -> PackageVerdict:
    """Check a package offline; raise PackageError naming the first file that fails."""
    try:
        z = zipfile.ZipFile(io.BytesIO(blob))
        names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise PackageError(f"package: not a readable zip ({e})") from None
    if len(names) != len(set(names)):
        dup = next(n for n in names if names.count(n) > 1)
        raise PackageError(f"{dup}: appears twice in the archive")
    files: dict[str, bytes] = {}
    for name in names:
        try:
            files[name] = z.read(name)
        except Exception as e:  # noqa: BLE001 - a damaged member (CRC, zlib) is a finding, never a traceback
            raise PackageError(f"{name}: damaged in the archive ({type(e).__name__}: {e})") from None
    if MANIFEST not in files:
        raise PackageError(f"{MANIFEST}: missing")
    manifest = _manifest(files[MANIFEST], root_public)
    if set(files) != set(manifest) | {MANIFEST}:
        extra = sorted(set(files) ^ (set(manifest) | {MANIFEST}))
        raise PackageError(f"{extra[0]}: in the package but not the manifest, or the reverse")
    if set(manifest) != set(FILES):
        raise PackageError(f"{MANIFEST}: lists {sorted(manifest)}, a package holds {sorted(FILES)}")
    for name in FILES:
        if hashlib.sha256(files[name]).hexdigest() != manifest[name]:
            raise PackageError(f"{name}: its SHA-256 differs from the signed manifest")
    try:
        note = files[CHECKPOINT].decode("utf-8")
    except UnicodeDecodeError:
        raise PackageError(f"{CHECKPOINT}: not UTF-8 text") from None
    log = _verified(SignedLogFile(io.BytesIO(files[LOG])), note, jobs)
    if log.registry.root_public != root_public:
        raise PackageError(f"{LOG}: its genesis root key is not the pinned --public-key")
    good = witness_quorum(note, list(witnesses)) if witnesses else []
    if len(good) < quorum:
        raise PackageError(f"{CHECKPOINT}: {len(good)} valid cosignature(s) of the given witnesses, "
                           f"quorum {quorum}")
    for name, spool in regenerate(log).items():
        with spool:
            at = _first_difference(spool, files[name])
        if at is not None:
            raise PackageError(f"{name}: differs at byte {at} from the file regenerated from the log")
    return PackageVerdict(log.report.events, notes.parse(note)[0].size, sorted(files), good,
                          log.report.root_fingerprint)


def _first_difference(spool: IO[bytes], blob: bytes) -> int | None:
    """Where a regenerated file first differs from the packaged one (None if identical), read in chunks."""
    at = 0
    while chunk := spool.read(CHUNK):
        theirs = blob[at:at + len(chunk)]
        if chunk != theirs:
            return at + next((i for i, (a, b) in enumerate(zip(chunk, theirs, strict=False)) if a != b),
                             min(len(chunk), len(theirs)))
        at += len(chunk)
    return None if at == len(blob) else at


def _manifest(blob: bytes, root_public: bytes) -> dict[str, str]:
    try:
        text = blob.decode("utf-8")
        name = text.partition("\n\n")[2].split(" ")[1]
        body = verify_note(text, name, root_public)
    except (UnicodeDecodeError, IndexError, notes.CheckpointError) as e:
        raise PackageError(f"{MANIFEST}: its signature does not verify under the pinned key ({e})") from None
    lines = body.split("\n")[:-1]
    if not lines or lines[0] != MANIFEST_TITLE:
        raise PackageError(f"{MANIFEST}: not a {MANIFEST_TITLE} manifest")
    entries: dict[str, str] = {}
    for line in lines[1:]:
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or name in entries:
            raise PackageError(f"{MANIFEST}: malformed line {line!r}")
        entries[name] = digest
    return entries
