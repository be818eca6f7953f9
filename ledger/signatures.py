"""Ed25519 checks for many rows, inline or across processes (used by the projections).

``submit`` returns a function that yields the results in order, so the
caller can do other work while the pool verifies. The chained hash of each
row is recomputed here, in the caller's process (one SHA-256, ~1 µs); only
the signature checks travel, packed as one bytes object per chunk (key ‖
signature ‖ hash, :func:`ledger.keys.failed_signatures`), so nothing per
row is pickled. ``run`` lends the same pool to other per-item work that is
independent of the caller's fold (the projector's deviations).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import os
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from ledger.chain import link_hash
from ledger.envelope import Record
from ledger.keys import PACKED, failed_signatures

T = TypeVar("T")
INLINE_BELOW = 64  # checks: fewer than this are cheaper done here than sent to a worker


def _checked_pack(public: bytes, record: Record) -> bytes | None:
    """The packed check for one row, or None when the row fails before any signature is tried.

    Same verdict as hashing then :func:`ledger.keys.verify_signature`: a
    stored hash that is not ``SHA-256(state ‖ prev_hash)`` fails, and so does
    a key or signature of the wrong length.
    """
    if link_hash(record.state, record.prev_hash) != record.hash:
        return None
    part = public + record.signature + record.hash
    return part if len(part) == PACKED and len(public) == 32 else None


class SignatureChecks:
    def __init__(self, jobs: int | None):
        self.jobs = jobs or os.cpu_count() or 1
        self.pool = multiprocessing.get_context("fork").Pool(self.jobs) if self.jobs > 1 else None

    def __enter__(self) -> SignatureChecks:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()

    def submit(self, items: Sequence[tuple[bytes | None, Record]]) -> Callable[[], list[bool]]:
        """Start checking (key, record) pairs; a ``None`` key is never verified (False)."""
        results: list[bool] = [False] * len(items)
        parts: list[bytes] = []
        where: list[int] = []  # index in ``items`` of each packed check
        for i, (public, record) in enumerate(items):
            if public is None:
                continue
            part = _checked_pack(public, record)
            if part is not None:
                parts.append(part)
                where.append(i)
        for i in where:
            results[i] = True  # until a chunk reports it failed
        if self.pool is None or len(where) < INLINE_BELOW:
            for index in failed_signatures(b"".join(parts)):
                results[where[index]] = False
            return lambda: results
        size = -(-len(parts) // (self.jobs * 2))
        pending = [(start, self.pool.apply_async(failed_signatures, (b"".join(parts[start:start + size]),)))
                   for start in range(0, len(parts), size)]

        def collect() -> list[bool]:
            for start, chunk in pending:
                for index in chunk.get():
                    results[where[start + index]] = False
            return results
        return collect

    def run(self, fn: Callable[..., T], *args: Any) -> Callable[[], T]:
        """``fn(*args)`` in a worker (inline without a pool); the returned function waits for its result.

        ``fn`` must be a module-level function: it travels by name.
        """
        if self.pool is None:
            result = fn(*args)
            return lambda: result
        pending: multiprocessing.pool.AsyncResult[T] = self.pool.apply_async(fn, args)
        return pending.get
