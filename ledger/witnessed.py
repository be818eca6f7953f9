"""Time bounded by witnesses: when was each entry really written? (SPEC §9)

A cosignature/v1 says: at time t, the log's tree of size N had root R. So
an entry at leaf index i was written *before* the earliest cosignature of
the first witnessed checkpoint that includes it (N > i), and *after* the
witnessing of the newest one that does not (N <= i). An entry's
``recorded_at`` is the writer's claim; outside that interval, beyond the
skew tolerance, it was backdated or post-dated.

Only cosignatures from keys the caller trusts count, and a witnessed
checkpoint counts only if its root is the root of the verified log at its
size (the caller checks that; a witnessed root the log no longer
reproduces is itself proof of a rewrite).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ledger import checkpoint as notes
from ledger import cosignature
from ledger.envelope import Record
from ledger.merkle import EMPTY_ROOT, CompactRange, leaf_hash
from ledger.note import NoteError, Vkey, split
from ledger.verify import Finding

SKEW_TOLERANCE = timedelta(minutes=5)


@dataclass(frozen=True)
class Witnessed:
    """A checkpoint with at least one trusted cosignature; ``time`` is the earliest of them."""

    size: int
    root: bytes
    cosignatures: tuple[cosignature.Cosigned, ...]
    note: str

    @property
    def time(self) -> int:
        return min(c.timestamp for c in self.cosignatures)


def witnessed_checkpoints(stored_notes: Iterable[str], vkeys: list[Vkey], origin: str | None = None) -> list[Witnessed]:
    out = []
    for note in stored_notes:
        try:
            cp, text, _ = notes.parse(note)
            sigs = split(note)[1]
        except NoteError:
            continue
        if origin is not None and cp.origin != origin:
            continue
        found = cosignature.verified(text, sigs, vkeys)
        if found:
            out.append(Witnessed(cp.size, cp.root, tuple(found), note))
    return sorted(out, key=lambda w: w.size)


class Intervals:
    """Per key (leaf index or log position), the witnessed interval it was written in.

    ``bounds`` holds (last key the checkpoint includes, witnessed time): a
    checkpoint of size N includes leaf indexes up to N - 1.
    """

    def __init__(self, bounds: Iterable[tuple[int, int]]):
        ordered = sorted(bounds)
        self.keys = [k for k, _ in ordered]
        self.prefix_max: list[int] = []
        for _, t in ordered:
            self.prefix_max.append(max(t, self.prefix_max[-1]) if self.prefix_max else t)
        self.suffix_min = [t for _, t in ordered]
        for n in range(len(self.suffix_min) - 2, -1, -1):
            self.suffix_min[n] = min(self.suffix_min[n], self.suffix_min[n + 1])

    def __bool__(self) -> bool:
        return bool(self.keys)

    def interval(self, key: int) -> tuple[int | None, int | None]:
        """(after, before) as POSIX seconds; None where no witnessed checkpoint bounds that side."""
        n = bisect.bisect_left(self.keys, key)  # keys[:n] < key: checkpoints that do not include it
        after = self.prefix_max[n - 1] if n > 0 else None
        before = self.suffix_min[n] if n < len(self.keys) else None
        return after, before


def iso(ts: int | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def outside(recorded_at: str, after: int | None, before: int | None,
            skew: timedelta = SKEW_TOLERANCE) -> str | None:
    """Why ``recorded_at`` lies outside (after, before) beyond ``skew``; None if inside."""
    try:
        at = datetime.fromisoformat(recorded_at)
    except (TypeError, ValueError):
        return None  # a malformed time is reported by the verifier itself
    if at.tzinfo is None:
        return None
    if after is not None and at < datetime.fromtimestamp(after, UTC) - skew:
        return f"recorded_at {recorded_at} is before {iso(after)}, when witnesses saw the log without it"
    if before is not None and at > datetime.fromtimestamp(before, UTC) + skew:
        return f"recorded_at {recorded_at} is after {iso(before)}, when witnesses had already seen it"
    return None


def fold(records: Iterable[Record], sizes: set[int]) -> dict[int, tuple[bytes, int]]:
    """Recompute, from the records themselves, the root at each size and the position of its last leaf."""
    out: dict[int, tuple[bytes, int]] = {0: (EMPTY_ROOT, -1)}
    compact = CompactRange()
    for record in records:
        compact.append(leaf_hash(record.hash))
        if compact.size in sizes:
            out[compact.size] = (compact.root(), record.position)
    return out


def holding(witnessed: list[Witnessed], folded: dict[int, tuple[bytes, int]]) -> list[Witnessed]:
    """The witnessed checkpoints whose root the log reproduces at their size."""
    return [w for w in witnessed if w.size in folded and folded[w.size][0] == w.root]


def check_records(records: Callable[[], Iterator[Record]], witnessed: list[Witnessed],
                  skew: timedelta = SKEW_TOLERANCE) -> tuple[list[Finding], int | None]:
    """Findings for ``verify``: witnessed roots the log does not reproduce, and entries outside their interval.

    Two streaming passes over the (already verified) records: the first
    recomputes the root at each witnessed size, the second checks every
    entry's ``recorded_at`` against the intervals of the checkpoints that held.
    Also returns the newest cosignature time over a checkpoint that held.
    """
    folded = fold(records(), {w.size for w in witnessed})
    findings = [Finding(0, "", f"witnessed checkpoint of size {w.size} (cosigned {iso(w.time)}) has a root the "
                               "log does not reproduce: rewritten after it was witnessed")
                for w in witnessed if w.size in folded and folded[w.size][0] != w.root]
    held = holding(witnessed, folded)
    newest = max((c.timestamp for w in held for c in w.cosignatures), default=None)
    intervals = Intervals((w.size - 1, w.time) for w in held)
    if not intervals:
        return findings, newest
    for index, record in enumerate(records()):
        try:
            recorded_at = record.envelope().recorded_at
        except ValueError:
            continue  # the verifier has reported the damaged row
        why = outside(recorded_at, *intervals.interval(index), skew=skew)
        if why is not None:
            findings.append(Finding(record.position, record.event_id, f"outside its witnessed interval: {why}"))
    return findings, newest
