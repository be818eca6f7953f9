"""Verification of the whole log (SPEC §5.4), read as the spec states it.

For every row, in global order:

0. its id is positive (a row at id 0 or below sits outside the chain);
1. its ``prev_hash`` is the hash of the row before it (nothing deleted,
   inserted or reordered);
2. ``SHA-256(state ‖ prev_hash)`` equals its stored hash (content unchanged);
3. its state decodes to an envelope whose stream, position, type, event id
   and key id agree with the stored columns;
4. its stream position follows the previous event of the same stream;
5. the authority (the signer registry, supplied by the domain) says the
   author was registered, unrevoked and allowed that event type here;
   and its ``recorded_at`` does not run back from the previous event's
   beyond the clock-skew tolerance (``ledger.clock``);
6. its Ed25519 signature over the hash verifies under that key; these are
   checked in parallel across ``jobs`` processes.

Memory stays flat: rows are read in pages, and signature work is sent to
the workers in a bounded window. A damaged row is a finding with its
position, never an exception.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import ValidationError

from ledger.chain import GENESIS_PREV_HASH, link_hash
from ledger.clock import RecordedTimes
from ledger.envelope import Envelope, Record
from ledger.keys import failed_signatures, verify_signature

MAX_FINDINGS_KEPT = 1000
FIRST_ID = -(2**63)  # read from the lowest id a row can have: rows at ids <= 0 are findings, never skipped
SIGNATURE_CHUNK = 512


class Unauthorised(Exception):
    """The authority refuses an event; ``str()`` says why."""


class Authority(Protocol):
    """What the verifier needs to know about signers, built from the log itself."""

    def authorise(self, envelope: Envelope) -> bytes:
        """The raw public key that must have signed ``envelope``; raise Unauthorised if none may."""

    def observe(self, envelope: Envelope) -> None:
        """Take the effect of ``envelope`` (a registration, a revocation) into account."""

    @property
    def root_fingerprint(self) -> str | None: ...

    @property
    def root_public(self) -> bytes | None: ...


@dataclass(frozen=True)
class Finding:
    position: int
    event_id: str
    reason: str

    def line(self) -> str:
        return f"position {self.position} (event {self.event_id or '?'}): {self.reason}"


@dataclass
class Report:
    events: int = 0
    findings: list[Finding] = field(default_factory=list)
    finding_count: int = 0
    root_fingerprint: str | None = None
    head_position: int = 0
    head_hash: bytes = GENESIS_PREV_HASH
    tree_size: int = 0
    tree_root: bytes = b""

    @property
    def ok(self) -> bool:
        return self.finding_count == 0

    def add(self, finding: Finding) -> None:
        self.finding_count += 1
        if len(self.findings) < MAX_FINDINGS_KEPT:
            self.findings.append(finding)

    def sorted(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: f.position)


_decode = Envelope.__pydantic_validator__.validate_json  # Envelope.from_canonical without two wrapper calls


class _SignatureChecker:
    """Runs signature checks inline (jobs=1) or in a pool with a bounded window.

    A chunk travels to a worker as one bytes object (key ‖ signature ‖ hash
    per check, see :func:`ledger.keys.failed_signatures`) and comes back as
    the indexes that failed; who each check belongs to stays in the main
    process, so nothing per event is pickled.
    """

    def __init__(self, jobs: int, report: Report):
        self.report = report
        self.parts: list[bytes] = []
        self.owners: list[tuple[int, str]] = []
        self.pool = multiprocessing.get_context("fork").Pool(jobs) if jobs > 1 else None
        self.window: deque[tuple[multiprocessing.pool.AsyncResult[list[int]], list[tuple[int, str]]]] = deque()
        self.max_window = 2 * jobs

    def add(self, position: int, event_id: str, public: bytes, signature: bytes, digest: bytes) -> None:
        if len(public) != 32 or len(signature) != 64 or len(digest) != 32:
            # a damaged column: checked here, one by one, as before
            if not verify_signature(public, signature, digest):
                self._fail(position, event_id)
            return
        self.parts.append(public + signature + digest)
        self.owners.append((position, event_id))
        if len(self.owners) >= SIGNATURE_CHUNK:
            self._submit()

    def _submit(self) -> None:
        blob, owners = b"".join(self.parts), self.owners
        self.parts, self.owners = [], []
        if not owners:
            return
        if self.pool is None:
            self._collect(failed_signatures(blob), owners)
            return
        self.window.append((self.pool.apply_async(failed_signatures, (blob,)), owners))
        while len(self.window) >= self.max_window:
            pending, owners = self.window.popleft()
            self._collect(pending.get(), owners)

    def _collect(self, failures: list[int], owners: list[tuple[int, str]]) -> None:
        for index in failures:
            self._fail(*owners[index])

    def _fail(self, position: int, event_id: str) -> None:
        self.report.add(Finding(position, event_id, "signature does not verify under the signer's registered key"))

    def finish(self) -> None:
        self._submit()
        while self.window:
            pending, owners = self.window.popleft()
            self._collect(pending.get(), owners)
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


class _StreamHeads(dict[str, int]):
    """Last position seen per stream; unseen streams ask ``lookup`` (0 for a full verify)."""

    def __init__(self, lookup: Callable[[str], int] | None):
        super().__init__()
        self.lookup = lookup

    def __missing__(self, stream: str) -> int:
        value = self.lookup(stream) if self.lookup else 0
        self[stream] = value
        return value


def _columns_disagree(record: Record, env: Envelope) -> str | None:
    if (record.stream, record.stream_position, record.type, record.event_id, record.key_id) == \
            (env.stream, env.position, env.type, env.event_id, env.key_id):
        return None  # the common case, in one comparison
    pairs = (
        ("stream", record.stream, env.stream),
        ("stream position", record.stream_position, env.position),
        ("type", record.type, env.type),
        ("event_id", record.event_id, env.event_id),
        ("key_id", record.key_id, env.key_id),
    )
    for name, stored, signed in pairs:
        if stored != signed:
            return f"stored {name} {stored!r} differs from the signed envelope's {signed!r}"
    return None


def verify_records(
    records: Iterable[Record],
    authority: Authority,
    *,
    jobs: int | None = None,
    start_hash: bytes = GENESIS_PREV_HASH,
    start_position: int = 0,
    stream_head: Callable[[str], int] | None = None,
    on_progress: Callable[[int], None] | None = None,
    start_recorded_at: str | None = None,
) -> Report:
    """Verify rows in global order; see the module docstring for the checks.

    ``start_hash``, ``start_position`` and ``stream_head`` (a stream's last
    position before ``start_position``) let a caller resume after a prefix
    a checkpoint already vouches for.
    """
    jobs = jobs or os.cpu_count() or 1
    report = Report(head_position=start_position, head_hash=start_hash)
    heads = _StreamHeads(stream_head)
    prev_hash, prev_position = start_hash, start_position
    checker = _SignatureChecker(jobs, report)
    times = RecordedTimes(start_recorded_at)
    try:
        for record in records:
            report.events += 1
            _verify_one(record, prev_hash, prev_position, heads, authority, checker, report, times)
            prev_hash, prev_position = record.hash, record.position
            if on_progress and report.events % 1000 == 0:
                on_progress(report.events)
    finally:
        checker.finish()
    report.head_position, report.head_hash = prev_position, prev_hash
    report.root_fingerprint = authority.root_fingerprint
    return report


def _verify_one(
    record: Record,
    prev_hash: bytes,
    prev_position: int,
    heads: _StreamHeads,
    authority: Authority,
    checker: _SignatureChecker,
    report: Report,
    times: RecordedTimes,
) -> None:
    """The sequential checks of one row; written for the common case (no finding, no closure)."""
    if record.position <= 0:
        _fail(report, record, "row outside the chain: a stored id at or below 0 (the log's ids start at 1)")
    if record.prev_hash != prev_hash:
        _fail(report, record, f"chain broken: prev_hash does not match the event at position {prev_position}; "
                              "an event before it was deleted, inserted or reordered")
    if len(record.hash) != 32 or link_hash(record.state, prev_hash) != record.hash:
        _fail(report, record, "hash mismatch: the stored content or hash was changed")
    try:
        env = _decode(record.state)
    except (ValueError, ValidationError, UnicodeDecodeError, RecursionError):
        _fail(report, record, "state does not decode to a signed envelope")
        return
    disagreement = _columns_disagree(record, env)
    if disagreement:
        _fail(report, record, disagreement)
    stream, position = env.stream, env.position
    last = heads[stream]
    if position != last + 1:
        _fail(report, record, f"stream {stream!r} position {position} where {last + 1} was due")
    if position > last:
        heads[stream] = position
    backwards = times.step(env.recorded_at)
    if backwards:
        _fail(report, record, backwards)
    try:
        public_key = authority.authorise(env)
    except Unauthorised as e:
        _fail(report, record, f"unauthorised: {e}")
        public_key = None
    authority.observe(env)
    if public_key is not None:
        checker.add(record.position, record.event_id, public_key, record.signature, record.hash)


def _fail(report: Report, record: Record, reason: str) -> None:
    report.add(Finding(record.position, record.event_id, reason))
