"""Bulk-import signing in worker processes: same signatures as the key itself, and no orphans."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ledger.keys import generate, verify_signature
from ledger.signing_pool import INLINE_BELOW, SigningPool

ROOT = Path(__file__).resolve().parent.parent


def test_workers_sign_exactly_as_the_key_does() -> None:
    signer = generate()
    digests = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(INLINE_BELOW * 2)]
    with SigningPool(signer, workers=1) as signing:
        got = signing.submit(digests)()
        assert signing.pool is not None  # the batch really went to a worker
    assert got == [signer.sign(d) for d in digests]
    assert all(verify_signature(signer.public_raw, s, d) for s, d in zip(got, digests, strict=True))


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def test_workers_die_when_the_importer_is_killed() -> None:
    """A killed importer's workers hold its database connection; they must go with it."""
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from ledger.keys import generate\n"
        "from ledger.signing_pool import INLINE_BELOW, SigningPool\n"
        "s = SigningPool(generate(), workers=2)\n"
        "s.submit([bytes(32)] * INLINE_BELOW)()\n"
        "print(' '.join(str(p.pid) for p in s.pool._pool), flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert len(workers) == 2 and all(_alive(p) for p in workers)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30  # a bound on waiting, not a timing assertion
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers)
