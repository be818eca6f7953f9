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
from array import array
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
        yield decode_line(number, raw)


def decode_line(number: int, raw: bytes) -> Record:
    """The record of one signed-log line, at position ``number``. Raises InputRefused."""
    try:
        row: Any = json.loads(raw)
        state = row["state"].encode("utf-8")
        env = Envelope.from_canonical(state)
        if any("\x00" in text for text in (env.stream, env.type, env.event_id, str(row["key_id"]))):
            raise InputRefused(f"line {number}: text may not contain a NUL character (\\u0000)")
        return Record(number, env.stream, env.position, env.type, env.event_id, state,
                      bytes.fromhex(row["prev_hash"]), bytes.fromhex(row["hash"]),
                      base64.b64decode(row["signature"], validate=True), str(row["key_id"]))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeError):
        raise InputRefused(f"line {number}: not a signed-log row") from None


class SignedLogFile:
    """A signed log file read like a store (``records``, ``stream_records``), for ``VerifiedStore``.

    A record's position is its line number, as ``decode_lines`` gives it. The
    first full read remembers, per stream, where its lines are (line number and
    byte offset, 16 bytes a line), so a stream is read back by seeking; every
    read is an untrusted read that ``VerifiedStore`` re-checks against what it
    verified.
    """

    db = None
    postgres = False

    def __init__(self, handle: IO[bytes]):
        self.handle = handle
        self.index: dict[str, tuple[array[int], array[int]]] | None = None
        self.lines = 0

    def count(self) -> int:
        if self.index is None:
            for _ in self.records():
                pass
        return self.lines

    def records(self, after: int = 0, *, batch: int = 2000, until: int | None = None) -> Iterator[Record]:
        del batch  # read line by line; the file is local
        index: dict[str, tuple[array[int], array[int]]] = {}
        offset, number = 0, 0
        while True:
            self.handle.seek(offset)  # stream reads may move the handle between two rows of this one
            raw = self.handle.readline()
            if not raw:
                break
            number += 1
            if until is not None and number > until:
                return  # a partial read builds no index
            record = decode_line(number, raw)
            numbers, offsets = index.setdefault(record.stream, (array("q"), array("q")))
            numbers.append(number)
            offsets.append(offset)
            offset += len(raw)
            if number > after:
                yield record
        self.index, self.lines = index, number

    def stream_records(self, stream: str) -> list[Record]:
        if self.index is None:
            self.count()
        assert self.index is not None
        numbers, offsets = self.index.get(stream, (array("q"), array("q")))
        out = []
        for number, offset in zip(numbers, offsets, strict=True):
            self.handle.seek(offset)
            out.append(decode_line(number, self.handle.readline()))
        return out

    def record_by_event_id(self, event_id: str) -> Record | None:
        return next((r for r in self.records() if r.event_id == event_id), None)


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
