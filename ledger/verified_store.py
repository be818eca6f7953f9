"""The one read path for everything shown, exported or proven (SPEC §5.4).

``VerifiedStore.open`` first verifies the whole log exactly as ``verify``
does (every row from the lowest id: chain link, hash, decode, stream
positions, authorisation, signatures in parallel). If anything fails it
raises ``IntegrityFailure`` naming the first finding, and nothing is read.
Otherwise it keeps a small binding of what it verified:

* the head (position, hash) and the number of rows;
* the chained hash every ``MARK_EVERY`` rows (one per page);
* per stream, a SHA-256 over its rows' (position, hash) and its length;
* the Merkle root at any tree sizes asked for (stored checkpoints).

Its reading methods mirror ``Store``'s (so ``Trial`` works on either), but
every row they return is re-checked against that binding: a global replay
re-hashes each page and must meet the page's mark before the page is
handed out, and a stream read must reproduce the stream's digest. A row
added, changed or removed after verification (or outside the chain) is an
``IntegrityFailure``, never a value shown. Rows appended by a legitimate
writer after verification lie past the verified head and are left out.
Memory: one page, plus a digest per stream and a mark per page.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ledger import checkpoint as notes
from ledger.chain import GENESIS_PREV_HASH, link_hash
from ledger.envelope import Envelope, Record
from ledger.errors import IntegrityFailure
from ledger.merkle import CompactRange, leaf_hash
from ledger.store import Store
from ledger.verify import FIRST_ID, Authority, Report, verify_records

MARK_EVERY = 2000
RECENT_STREAMS = 4
PARALLEL_FROM = 4000  # rows: below this one process checks signatures faster than a pool starts
CHECKPOINTS_TABLE = "merkle_checkpoints"
MAX_STORED_CHECKPOINTS = 1000


def _stream_digest() -> hashlib._Hash:
    return hashlib.sha256()


def _bind(digest: hashlib._Hash, record: Record) -> None:
    """Every column a reader may use: ``state`` and ``prev_hash`` are bound through ``hash`` (re-hashed on read).

    The header columns are unsigned copies ``verify`` checked against the
    envelope, and ``signature`` is what a package exports, so a change to
    any of them after verification must fail the read-back too.
    """
    header = (record.position, record.stream, record.stream_position, record.type, record.event_id, record.key_id)
    digest.update(repr(header).encode() + b"\0" + _raw(record.hash) + b"\0" + _raw(record.signature))


def _raw(value: object) -> bytes:
    return value if isinstance(value, bytes) else repr(value).encode()  # a damaged column: verify reports it


@dataclass
class Binding:
    """What verification saw: enough to recognise the same rows again, not the rows themselves."""

    head_position: int = 0
    head_hash: bytes = GENESIS_PREV_HASH
    rows: int = 0
    marks: dict[int, tuple[int, bytes, bytes]] = field(default_factory=dict)  # rows -> (position, hash, page digest)
    tail: bytes = b""  # digest of the rows after the last mark
    streams: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # stream -> (length, digest)
    roots: dict[int, bytes] = field(default_factory=dict)  # tree size -> root


class LogDoesNotVerify(IntegrityFailure):
    """``VerifiedStore.open`` found the log does not verify; ``report`` holds the findings (nothing is read)."""

    def __init__(self, message: str, report: Report):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class VerifiedCheckpoint:
    tree_size: int
    root: bytes
    note: str


class VerifiedStore:
    """Read-only view of a verified log; see the module docstring."""

    def __init__(self, store: Store, report: Report, binding: Binding, root_public: bytes | None = None,
                 checkpoint_keys: Sequence[bytes] = ()):
        self.store = store
        self.root_public = root_public
        self.checkpoint_keys = list(checkpoint_keys) or ([root_public] if root_public else [])
        self.report = report
        self.binding = binding
        self.db = store.db
        self._recent: OrderedDict[str, list[Record]] = OrderedDict()
        self.head_record: Record | None = None  # the last verified row (its hash is the head hash)

    @classmethod
    def open(cls, store: Store, authority: Authority, *, jobs: int | None = None,
             checkpoint_sizes: Iterable[int] = (), on_progress: Callable[[int], None] | None = None,
             prefix: Callable[[Iterator[Record]], Iterator[Record]] | None = None) -> VerifiedStore:
        """Verify every row and keep the binding; raises LogDoesNotVerify on the first finding.

        ``prefix`` cuts the rows to a leading part of the log (``report --as-of``): only that part is
        verified and bound, and every later read stops at its head.
        """
        if jobs is None:
            jobs = (os.cpu_count() or 1) if store.count() >= PARALLEL_FROM else 1
        binding = Binding()
        wanted = set(checkpoint_sizes)
        digests: dict[str, tuple[int, hashlib._Hash]] = {}
        compact = CompactRange()
        last: list[Record] = []
        page = [_stream_digest()]

        def observed(records: Iterator[Record]) -> Iterator[Record]:
            for record in records:
                last[:] = [record]
                binding.rows += 1
                compact.append(leaf_hash(record.hash))
                if compact.size in wanted:
                    binding.roots[compact.size] = compact.root()
                _bind(page[0], record)
                if binding.rows % MARK_EVERY == 0:
                    binding.marks[binding.rows] = (record.position, record.hash, page[0].digest())
                    page[0] = _stream_digest()
                length, digest = digests.get(record.stream, (0, _stream_digest()))
                _bind(digest, record)
                digests[record.stream] = (length + 1, digest)
                yield record

        rows: Iterator[Record] = iter(store.records(after=FIRST_ID))
        report = verify_records(observed(prefix(rows) if prefix else rows), authority, jobs=jobs,
                                on_progress=on_progress)
        if not report.ok:
            first = report.sorted()[0]
            more = f" ({report.finding_count} findings; `trial-ledger verify --json` lists them)" \
                if report.finding_count > 1 else ""
            raise LogDoesNotVerify(f"the log does not verify, so nothing is shown: {first.line()}{more}", report)
        report.tree_size, report.tree_root = compact.size, compact.root()
        binding.head_position, binding.head_hash = report.head_position, report.head_hash
        binding.streams = {s: (n, d.digest()) for s, (n, d) in digests.items()}
        binding.tail = page[0].digest()
        # A registered log key may sign checkpoints too (its old ones still count after revocation).
        keys: list[bytes] = getattr(authority, "checkpoint_keys", lambda **_: [])(include_revoked=True)
        opened = cls(store, report, binding, authority.root_public, keys)
        opened.head_record = last[0] if last else None
        return opened

    # -- the verified global log ------------------------------------------------------------

    def records(self, after: int = 0, *, batch: int = MARK_EVERY, until: int | None = None) -> Iterator[Record]:
        """The verified rows in global order (those after ``after``, up to ``until``), page by page.

        The replay always starts at the first row, because only the chain from
        genesis binds a row; each page is re-hashed and must meet its mark
        before any of it is yielded.
        """
        b = self.binding
        page: list[Record] = []
        digest = _stream_digest()
        prev, count = GENESIS_PREV_HASH, 0
        for record in self.store.records(after=FIRST_ID, until=b.head_position):
            if record.prev_hash != prev or link_hash(record.state, record.prev_hash) != record.hash:
                raise self._changed(record.position)
            prev = record.hash
            count += 1
            page.append(record)
            _bind(digest, record)
            if count in b.marks:
                if b.marks[count] != (record.position, record.hash, digest.digest()):
                    raise self._changed(record.position)
                yield from self._window(page, after, until)
                page, digest = [], _stream_digest()
        if (count, prev, digest.digest()) != (b.rows, b.head_hash, b.tail):
            raise self._changed(b.head_position)
        yield from self._window(page, after, until)

    @staticmethod
    def _window(page: list[Record], after: int, until: int | None) -> list[Record]:
        return [r for r in page if r.position > after and (until is None or r.position <= until)]

    def page(self, after: int, limit: int) -> list[Record]:
        out = []
        for record in self.records(after=after):
            out.append(record)
            if len(out) >= limit:
                break
        return out

    def leaf_hashes(self) -> list[bytes]:
        """Every verified leaf hash, for proofs built from the log itself (32 bytes a row)."""
        return [leaf_hash(r.hash) for r in self.records()]

    # -- verified streams -------------------------------------------------------------------

    def stream_records(self, stream: str) -> list[Record]:
        """One stream's verified rows in stream order; the read must reproduce the stream's digest.

        The last few streams read are kept (a participant's deviations read the
        small study stream each time); a kept read was checked when it was made.
        """
        if stream in self._recent:
            self._recent.move_to_end(stream)
            return list(self._recent[stream])
        rows = self._read_stream(stream)
        self._recent[stream] = rows
        if len(self._recent) > RECENT_STREAMS:
            self._recent.popitem(last=False)
        return list(rows)

    def _read_stream(self, stream: str) -> list[Record]:
        length, expected = self.binding.streams.get(stream, (0, _stream_digest().digest()))
        rows = [r for r in self.store.stream_records(stream) if 0 < r.position <= self.binding.head_position]
        rows.sort(key=lambda r: r.position)
        digest = _stream_digest()
        for record in rows:
            if link_hash(record.state, record.prev_hash) != record.hash:
                raise self._changed(record.position)
            _bind(digest, record)
        if len(rows) != length or digest.digest() != expected:
            raise IntegrityFailure(f"stream {stream!r} changed after it was verified; run `trial-ledger verify`")
        return rows

    def stream(self, stream: str, *, lte: int | None = None) -> list[Envelope]:
        return [r.envelope() for r in self.stream_records(stream) if lte is None or r.stream_position <= lte]

    def streams(self) -> list[str]:
        return sorted(self.binding.streams)

    def stream_length(self, stream: str) -> int:
        return self.binding.streams.get(stream, (0, b""))[0]

    def stream_position_at(self, stream: str, position: int) -> int:
        return max((r.stream_position for r in self.stream_records(stream) if r.position <= position), default=0)

    def record_by_event_id(self, event_id: str) -> Record | None:
        found = self.store.record_by_event_id(event_id)
        if found is None:
            return None
        for record in self.stream_records(found.stream):
            if record.event_id == event_id:
                return record
        return None

    def head_position(self) -> int:
        return self.binding.head_position

    def count(self) -> int:
        return self.binding.rows

    @property
    def postgres(self) -> bool:
        return self.store.postgres

    def _changed(self, position: int) -> IntegrityFailure:
        return IntegrityFailure(f"position {position}: the log changed after it was verified; "
                                "run `trial-ledger verify`")

    # -- checkpoints --------------------------------------------------------------------------

    def root(self, size: int) -> bytes | None:
        """The Merkle root of the first ``size`` verified rows, when it was asked for at open."""
        if size == self.binding.rows:
            return self.report.tree_root
        return self.binding.roots.get(size)


def stored_checkpoint_sizes(store: Store) -> list[tuple[int, str]]:
    """Candidate (size, note) pairs from the stored checkpoints table: a writable table, so only a hint."""
    if not store.table_exists(CHECKPOINTS_TABLE):
        return []
    try:
        rows = store.fetch(f"SELECT tree_size, note FROM {store.table(CHECKPOINTS_TABLE)} "
                           f"ORDER BY tree_size DESC LIMIT {MAX_STORED_CHECKPOINTS}")
    except Exception:  # noqa: BLE001 - a damaged cache table is simply not used
        return []
    out = []
    for row in rows:
        try:
            out.append((int(row["tree_size"]), str(row["note"])))
        except (TypeError, ValueError):
            continue
    return out


def verified_checkpoint(vstore: VerifiedStore, candidates: Sequence[tuple[int, str]]) -> VerifiedCheckpoint | None:
    """The newest stored checkpoint, once every stored one is shown to be signed and reproduced; else None.

    The table is writable, so each row must be a checkpoint note signed by
    the ledger's root key, of a size the verified log reaches, whose root
    the verified log reproduces. A row that is not is a tampered cache:
    IntegrityFailure naming the table, never a figure on the page. (A
    deleted row cannot be told from none: the report then says none is stored.)
    """
    newest = None
    for size, note in candidates:
        why = None
        try:
            cp = notes.parse(note)[0]
            why = _signed_by_one_of(note, vstore.checkpoint_keys) if vstore.checkpoint_keys \
                else "the ledger has no root key"
        except notes.CheckpointError as e:
            why = str(e)
        else:
            if cp.size != size or size <= 0:
                why = "its size differs from the note's"
            elif vstore.root(size) != cp.root:
                why = "the verified log does not reproduce its root"
        if why is not None:
            raise IntegrityFailure(f"stored table {CHECKPOINTS_TABLE}: the row of tree size {size} is not a "
                                   f"checkpoint of this verified log ({why}); nothing is shown")
        if newest is None:
            newest = VerifiedCheckpoint(size, cp.root, note)
    return newest


def _signed_by_one_of(note: str, keys: Sequence[bytes]) -> str | None:
    """None if one of ``keys`` signed the note, else why not."""
    why = "not signed by the root key or a registered log key"
    for key in keys:
        try:
            notes.verify(note, key)
            return None
        except notes.CheckpointError as e:
            why = str(e)
    return why
