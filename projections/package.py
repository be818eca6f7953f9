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
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field

from ledger import checkpoint as notes
from ledger.envelope import Record
from ledger.errors import LedgerError
from ledger.keys import Signer
from ledger.note import Vkey
from ledger.notes import sign_note, verify_note, witness_quorum
from ledger.signed_log import decode_lines, encode
from projections import audit as audit_rows
from projections.odm import write_odm
from projections.report import build as build_report
from projections.report import checkpoint_view
from projections.verified_log import VerifiedLog, verify

LOG, CHECKPOINT, REPORT, ODM, AUDIT, MANIFEST = (
    "log.jsonl", "checkpoint.txt", "report.html", "odm.xml", "audit.csv", "manifest.txt")
REGENERATED = (REPORT, ODM, AUDIT)
FILES = (LOG, CHECKPOINT, *REGENERATED)
MANIFEST_TITLE = "trial-ledger inspection package v1"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class PackageError(LedgerError):
    """A package that does not verify; the message names the file (exit 1)."""

    exit_code = 1


def audit_csv(log: VerifiedLog) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=audit_rows.COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in log.audit():
        writer.writerow(row)
    return out.getvalue()


def odm_xml(log: VerifiedLog) -> str:
    out = io.StringIO()
    write_odm(log, out)
    return out.getvalue()


def outputs(log: VerifiedLog) -> dict[str, bytes]:
    """The three human-facing files, as a pure function of the verified log: the one path for both sides."""
    return {REPORT: build_report(log).encode(), ODM: odm_xml(log).encode(), AUDIT: audit_csv(log).encode()}


def manifest_body(files: dict[str, bytes]) -> str:
    lines = [f"{hashlib.sha256(blob).hexdigest()}  {name}" for name, blob in sorted(files.items())]
    return MANIFEST_TITLE + "\n" + "\n".join(lines) + "\n"


def build_package(records: Sequence[Record], checkpoint_note: str, signer: Signer, *,
                  jobs: int | None = None) -> bytes:
    """The zip of a verified log. Refuses (exit 1) a log that does not verify or a checkpoint that does not cover it."""
    log_bytes = b"".join(encode(r) for r in records)
    log = _verified(log_bytes, checkpoint_note, jobs)
    if log.registry.root_public != signer.public_raw:
        raise PackageError("--key: the package is signed with the ledger's root key (the key of `init`)")
    files = {LOG: log_bytes, CHECKPOINT: checkpoint_note.encode(), **outputs(log)}
    origin = notes.parse(checkpoint_note)[0].origin
    files[MANIFEST] = sign_note(manifest_body(files), signer, origin).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in (*FILES, MANIFEST):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, files[name])
    return out.getvalue()


def _verified(log_bytes: bytes, checkpoint_note: str, jobs: int | None) -> VerifiedLog:
    """Decode, verify and check the checkpoint against the log; every failure names its file."""
    try:
        records, report = verify(decode_lines(io.BytesIO(log_bytes)), jobs=jobs)
    except LedgerError as e:
        raise PackageError(f"{LOG}: {e}") from None
    if report.events == 0:
        raise PackageError(f"{LOG}: the log holds no events")
    if not report.ok:
        first = report.sorted()[0]
        raise PackageError(f"{LOG}: line {first.position} (event {first.event_id or '?'}): {first.reason}")
    log = VerifiedLog(records, report, checkpoint_note)
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
    log = _verified(files[LOG], note, jobs)
    if log.registry.root_public != root_public:
        raise PackageError(f"{LOG}: its genesis root key is not the pinned --public-key")
    good = witness_quorum(note, list(witnesses)) if witnesses else []
    if len(good) < quorum:
        raise PackageError(f"{CHECKPOINT}: {len(good)} valid cosignature(s) of the given witnesses, "
                           f"quorum {quorum}")
    for name, regenerated in outputs(log).items():
        if regenerated != files[name]:
            at = next((i for i, (a, b) in enumerate(zip(regenerated, files[name], strict=False)) if a != b),
                      min(len(regenerated), len(files[name])))
            raise PackageError(f"{name}: differs at byte {at} from the file regenerated from the log")
    return PackageVerdict(log.report.events, notes.parse(note)[0].size, sorted(files), good,
                          log.report.root_fingerprint)


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
