"""Ed25519 checks for many rows, inline or across processes (used by the projections).

``submit`` returns a function that yields the results in order, so the
caller can do other work while the pool verifies.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from types import TracebackType

from ledger.chain import link_hash
from ledger.envelope import Record
from ledger.keys import verify_signature

Job = tuple[bytes, bytes, bytes, bytes, bytes]  # public key, state, prev_hash, hash, signature


def check(job: Job) -> bool:
    public, state, prev, digest, signature = job
    return link_hash(state, prev) == digest and verify_signature(public, signature, digest)


def _check_chunk(jobs: list[Job]) -> list[bool]:
    return [check(j) for j in jobs]


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
        """Start checking (key, record) pairs; a ``None`` key is never verified."""
        jobs = [(pub, r.state, r.prev_hash, r.hash, r.signature) for pub, r in items if pub is not None]
        if self.pool is None or len(jobs) < 64:
            results = _check_chunk(jobs)
            return lambda: _spread(items, results)
        size = max(1, len(jobs) // (self.jobs * 2))
        chunks = [jobs[i:i + size] for i in range(0, len(jobs), size)]
        pending = self.pool.map_async(_check_chunk, chunks)
        return lambda: _spread(items, [ok for chunk in pending.get() for ok in chunk])


def _spread(items: Sequence[tuple[bytes | None, Record]], results: list[bool]) -> list[bool]:
    it = iter(results)
    return [next(it) if pub is not None else False for pub, _r in items]
