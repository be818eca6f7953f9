"""Ed25519 signing in worker processes, overlapped with the importer's own work.

A chained hash never depends on a signature, so a bulk import can chain a
batch in the main process, have a worker sign its hashes while the main
process decides the next batch, and insert the batch when the signatures
are back. The bytes, the order and the single transaction are unchanged;
only the waiting moves. Ed25519 is deterministic (RFC 8032 §5.1.6), so a
worker's signature is byte-for-byte the one the main process would make.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from multiprocessing.pool import Pool
from types import TracebackType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.keys import Signer

INLINE_BELOW = 256  # a batch smaller than this is signed in place: not worth a round trip

_worker_key: Ed25519PrivateKey | None = None


def _load_key(raw: bytes) -> None:
    global _worker_key
    _worker_key = Ed25519PrivateKey.from_private_bytes(raw)


def _sign_all(digests: Sequence[bytes]) -> list[bytes]:
    assert _worker_key is not None
    return [_worker_key.sign(d) for d in digests]


class SigningPool:
    """Signs lists of hashes with one key; a worker pool is started only for large batches."""

    def __init__(self, signer: Signer, workers: int | None = None):
        self.signer = signer
        self.workers = workers if workers is not None else max(0, (os.cpu_count() or 1) - 1)
        self.pool: Pool | None = None

    def __enter__(self) -> SigningPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.pool is not None:
            if exc_type is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()

    def submit(self, digests: list[bytes]) -> Callable[[], list[bytes]]:
        """Start signing; the returned function gives the signatures in order."""
        if self.workers == 0 or len(digests) < INLINE_BELOW:
            signatures = [self.signer.sign(d) for d in digests]
            return lambda: signatures
        pending = self._pool().apply_async(_sign_all, (digests,))
        return pending.get

    def _pool(self) -> Pool:
        if self.pool is None:
            raw = self.signer.private_key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
            # fork: the key reaches the workers by inheritance, never through a pipe or a file.
            # A worker reads its tasks from a pipe whose only writer is this process, so
            # if this process is killed the worker sees end-of-file and exits: it cannot
            # linger holding our inherited database connection (tested).
            self.pool = multiprocessing.get_context("fork").Pool(self.workers, initializer=_load_key,
                                                                 initargs=(raw,))
            probe = b"\x00" * 32
            if self.pool.apply(_sign_all, ([probe],)) != [self.signer.sign(probe)]:
                raise RuntimeError("signing worker disagrees with the key it was given")
        return self.pool
