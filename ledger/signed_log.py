"""The raw signed log as JSON Lines: export, and import into an empty ledger (a migration).

Each line is RFC 8785 JSON of one stored row: the canonical envelope bytes
(as text), ``prev_hash``, ``hash``, ``signature`` and ``key_id``. Import
re-verifies everything — chain, hashes, signatures, authorisation — before
writing, and writes the rows verbatim, so hashes and signatures survive the
move (ICH E6(R3) 4.2.5: migration keeps the metadata). A row that fails is
refused with its line number and nothing is written.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ledger.canonical import canonical_bytes
from ledger.envelope import Envelope, Record
from ledger.errors import InputRefused
from ledger.snapshot import Source, opened, read_once
from ledger.store import Store
from ledger.verify import Authority, verify_records

SIGNED_FIELDS = {"state", "prev_hash", "hash", "signature", "key_id"}


def encode(r: Record) -> bytes:
    """One line of the signed log (with its newline)."""
    return canonical_bytes({
        "state": r.state.decode("utf-8"), "prev_hash": r.prev_hash.hex(), "hash": r.hash.hex(),
        "signature": base64.b64encode(r.signature).decode(), "key_id": r.key_id,
    }) + b"\n"


def export(store: Store, out: IO[bytes]) -> int:
    n = 0
    for r in store.records():
        out.write(encode(r))
        n += 1
    return n


def is_signed_log(source: Source) -> bool:
    try:
        with opened(source) as f:
            first = f.readline()
        return isinstance(row := json.loads(first), dict) and set(row) >= SIGNED_FIELDS
    except (OSError, ValueError, RecursionError, InputRefused):
        return False


def _records(source: IO[bytes]) -> Iterator[Record]:
    with opened(source) as f:
        yield from decode_lines(f)


def decode_lines(lines: Iterable[bytes]) -> Iterator[Record]:
    """Records of signed-log lines; each record's position is its line number. Raises InputRefused."""
    for number, raw in enumerate(lines, 1):
        try:
            row: Any = json.loads(raw)
            state = row["state"].encode("utf-8")
            env = Envelope.from_canonical(state)
            if any("\x00" in text for text in (env.stream, env.type, env.event_id, str(row["key_id"]))):
                raise InputRefused(f"line {number}: text may not contain a NUL character (\\u0000)")
            yield Record(number, env.stream, env.position, env.type, env.event_id, state,
                         bytes.fromhex(row["prev_hash"]), bytes.fromhex(row["hash"]),
                         base64.b64decode(row["signature"], validate=True), str(row["key_id"]))
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeError):
            raise InputRefused(f"line {number}: not a signed-log row") from None


def import_signed_log(source: Source, authority: Authority, open_target: Callable[[], Store],
                      jobs: int | None = None) -> int:
    """Verify every row of an exported log, then write them verbatim into an empty ledger.

    The input is read exactly once (``ledger.snapshot``): both passes read
    the same private copy, so the rows inserted are the rows verified. The
    target is opened only once the file has verified, so a refused file
    leaves no new database behind.
    """
    if isinstance(source, Path):
        with read_once(source) as copy:
            return _import(copy, str(source), authority, open_target, jobs)
    return _import(source, getattr(source, "name", "input"), authority, open_target, jobs)


def _import(copy: IO[bytes], name: str, authority: Authority, open_target: Callable[[], Store],
            jobs: int | None) -> int:
    report = verify_records(_records(copy), authority, jobs=jobs)
    if report.events == 0:
        raise InputRefused(f"{name}: no events to import")
    if not report.ok:
        first = report.sorted()[0]
        raise InputRefused(f"line {first.position}: {first.reason}")
    store = open_target()
    if store.count():
        raise InputRefused("--db: a signed log can only be imported into an empty ledger")
    return store.insert_verbatim(_records(copy))
