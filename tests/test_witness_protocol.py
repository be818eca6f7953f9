"""C2SP tlog-witness over real HTTP: a uvicorn server on 127.0.0.1, driven by a plain httpx client.

Each status code of add-checkpoint with its exact body, a cosignature checked by an independent
implementation of C2SP tlog-cosignature written here from the spec, the atomicity race of
tlog-witness §add-checkpoint, and state that survives ``kill -9`` of a server process.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.keys import generate, write_key_pair
from ledger.witness.app import MAX_BODY, running
from ledger.witness.core import Witness
from ledger.witness.state import WitnessState
from tests.conftest import PASSPHRASE
from tests.witness_helpers import ORIGIN, ToyLog

NAME = "witness.test/w1"


@pytest.fixture
def log() -> ToyLog:
    toy = ToyLog()
    toy.grow(5)
    return toy


@pytest.fixture
def witness(tmp_path: Path, log: ToyLog) -> Iterator[Witness]:
    state = WitnessState(tmp_path / "w1.db")
    yield Witness(NAME, generate(), state, {ORIGIN: [log.signer.public_raw]})
    state.close()


@pytest.fixture
def url(witness: Witness) -> Iterator[str]:
    with running(witness) as base:
        yield base + "/add-checkpoint"


def post(url: str, body: bytes) -> httpx.Response:
    return httpx.post(url, content=body, timeout=10, trust_env=False)


def independent_cosignature_check(line: str, name: str, public: bytes, checkpoint_body: str) -> int:
    """tlog-cosignature, from the spec text alone: returns the timestamp or raises."""
    assert line.startswith("\u2014 ") and line.endswith("\n")
    key_name, blob_b64 = line[2:-1].split(" ")
    assert key_name == name
    blob = base64.b64decode(blob_b64, validate=True)
    assert len(blob) == 4 + 8 + 64
    assert blob[:4] == hashlib.sha256(name.encode() + b"\n" + b"\x04" + public).digest()[:4]
    (timestamp,) = struct.unpack(">Q", blob[4:12])
    signed = b"cosignature/v1\n" + b"time " + str(timestamp).encode() + b"\n" + checkpoint_body.encode()
    Ed25519PublicKey.from_public_bytes(public).verify(blob[12:], signed)
    return timestamp


def body_of(note: str) -> str:
    return note[:note.rindex("\n\n") + 1]


def test_200_returns_a_cosignature_an_independent_verifier_accepts(url: str, witness: Witness, log: ToyLog) -> None:
    r = post(url, log.body(0))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    ts = independent_cosignature_check(r.text, NAME, witness.signer.public_raw, body_of(log.note()))
    assert ts > 1_600_000_000
    altered = body_of(log.note()).replace("\n5\n", "\n6\n")
    with pytest.raises(InvalidSignature):
        independent_cosignature_check(r.text, NAME, witness.signer.public_raw, altered)
    # Extending the log from the cosigned size, with the consistency proof, is cosigned again.
    log.grow(7)
    r2 = post(url, log.body(5))
    assert r2.status_code == 200, r2.text
    independent_cosignature_check(r2.text, NAME, witness.signer.public_raw, body_of(log.note()))
    # The same checkpoint again (old size = size, same root, empty proof) is fine too.
    assert post(url, log.body(12)).status_code == 200


def test_404_unknown_origin(url: str) -> None:
    other = ToyLog(origin="example.test/other")
    other.grow(3)
    r = post(url, other.body(0))
    assert (r.status_code, r.text) == (404, "unknown log origin example.test/other\n")


def test_403_no_trusted_signature(url: str, log: ToyLog) -> None:
    impostor = ToyLog(signer=generate(), leaves=list(log.leaves))
    r = post(url, impostor.body(0))
    assert (r.status_code, r.text) == (403, "no signature from a key trusted for this log\n")


def test_400_old_size_above_checkpoint_size(url: str, log: ToyLog) -> None:
    r = post(url, log.body(9, proof=[]))
    assert (r.status_code, r.text) == (400, "old size 9 is above the checkpoint size 5\n")


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "no empty line between the proof and the checkpoint"),
    (b"old 01\n\n", "the first line must be 'old <size>' in decimal without leading zeroes"),
    (b"new 0\n\n", "the first line must be 'old <size>' in decimal without leading zeroes"),
    (b"old " + b"9" * 5000 + b"\n\n", "the first line must be 'old <size>' in decimal without leading zeroes"),
    (b"old \xd9\xa3\n\n", "the first line must be 'old <size>' in decimal without leading zeroes"),
    (b"old 0\nnot-base64!\n\n", "not base64"),
    (b"old 0\n" + b"AAAA\n" + b"\n", "a consistency proof line is not a 32-byte hash"),
    (b"old 0\n" + (base64.b64encode(bytes(32)) + b"\n") * 64 + b"\n", "more than 63 consistency proof lines"),
])
def test_400_malformed_body(url: str, log: ToyLog, body: bytes, reason: str) -> None:
    r = post(url, body + log.note().encode() if body.endswith(b"\n\n") else body)
    assert (r.status_code, r.text) == (400, f"malformed request: {reason}\n")


@pytest.mark.parametrize("size", ["05", "9" * 5000, "\u0665"])
def test_400_malformed_checkpoint(url: str, log: ToyLog, size: str) -> None:
    r = post(url, b"old 0\n\n" + log.note().replace("\n5\n", f"\n{size}\n").encode())
    assert (r.status_code, r.text) == (400, "malformed request: checkpoint origin or size is malformed\n")


def test_409_wrong_old_size_reports_the_stored_size(url: str, log: ToyLog) -> None:
    assert post(url, log.body(0)).status_code == 200
    log.grow(3)
    for old in (0, 3):
        r = post(url, log.body(old))
        assert r.status_code == 409
        assert r.headers["content-type"] == "text/x.tlog.size"
        assert r.text == "5\n"


def test_409_same_size_other_root_is_kept_as_evidence(url: str, witness: Witness, log: ToyLog) -> None:
    assert post(url, log.body(0)).status_code == 200
    forked = ToyLog(signer=log.signer, leaves=list(log.leaves[:4]))
    forked.grow(1, tag="fork")
    r = post(url, forked.body(5, proof=[]))
    assert (r.status_code, r.text, r.headers["content-type"]) == (409, "5\n", "text/x.tlog.size")
    evidence = witness.state.evidence()
    assert [e["reason"] for e in evidence] == ["a second root for size 5"]
    assert evidence[0]["request"] == forked.body(5, proof=[]).decode()


def test_422_failed_consistency_proof_is_kept_as_evidence(url: str, witness: Witness, log: ToyLog) -> None:
    assert post(url, log.body(0)).status_code == 200
    rewritten = ToyLog(signer=log.signer)
    rewritten.grow(8, tag="rewrite")
    r = post(url, rewritten.body(5))
    assert r.status_code == 422
    assert r.text.startswith("consistency proof does not verify: ")
    assert witness.state.latest(ORIGIN).size == 5  # not cosigned, not stored
    assert [e["reason"].split(":")[0] for e in witness.state.evidence()] == ["consistency proof fails"]


def test_422_nonempty_proof_from_zero(url: str, log: ToyLog) -> None:
    r = post(url, log.body(0, proof=[bytes(32)]))
    assert (r.status_code, r.text) == (422, "consistency proof does not verify: a proof from size 0 must be empty\n")


def test_body_size_is_bounded(url: str) -> None:
    r = post(url, b"x" * (MAX_BODY + 1))
    assert r.status_code == 413


def test_only_post(url: str) -> None:
    assert httpx.get(url, trust_env=False).status_code == 405


def test_race_many_concurrent_clients_never_roll_the_size_back(url: str, witness: Witness, log: ToyLog) -> None:
    """tlog-witness §add-checkpoint: checking the old size and storing the new one are atomic.

    With an atomic witness the cosigned (old -> new) steps form one chain from the first stored
    size, each step growing: no two successes share an old size, and the stored size is the chain's
    end. A witness that checks and stores separately lets two requests pass the same old size, and
    the later store rolls the size back.
    """
    assert post(url, log.body(0)).status_code == 200
    for _round in range(3):  # a few rounds: a non-atomic witness loses this race most times, not always
        base = witness.state.latest(ORIGIN).size
        log.grow(40)
        results: list[tuple[int, int, int]] = []
        lock = threading.Lock()
        start = threading.Barrier(16)

        def client(target: int, base: int = base, results: list[tuple[int, int, int]] = results,
                   lock: threading.Lock = lock, start: threading.Barrier = start) -> None:
            old = base
            start.wait()
            with httpx.Client(timeout=30, trust_env=False) as c:
                for _ in range(20):  # bounded: follow the 409s, stop once the witness holds our size or more
                    if old > target:
                        return
                    r = c.post(url, content=log.body(old, target))
                    with lock:
                        results.append((r.status_code, old, target))
                    if r.status_code != 409:
                        return
                    old = int(r.text)

        threads = [threading.Thread(target=client, args=(base + 1 + 2 * i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(status in (200, 409) for status, _, _ in results)
        steps = [(old, new) for status, old, new in results if status == 200]
        chain = dict(steps)
        assert len(chain) == len(steps), f"two requests were cosigned from the same old size: {steps}"
        size, walked = base, 0
        while size in chain:
            assert chain[size] > size
            size, walked = chain[size], walked + 1
        assert walked == len(steps) and witness.state.latest(ORIGIN).size == size == base + 31
        assert post(url, log.body(base, base + 1)).text == f"{size}\n"


def _serve(state: Path, log: ToyLog, tmp: Path) -> tuple[subprocess.Popen[str], str]:
    key = tmp / "w.key"
    if not key.exists():
        write_key_pair(generate(), "w", key, PASSPHRASE)
        pub = tmp / "log.pub"
        pub.write_text(log.signer.public_b64 + " log\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cli.main import main; main()", "witness", "serve", "--name", NAME,
         "--key", str(key), "--state", str(state), "--log", f"{ORIGIN}={tmp / 'log.pub'}",
         "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TRIAL_LEDGER_PASSPHRASE": PASSPHRASE})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, line.split()[-1] + "/add-checkpoint"


def test_state_survives_kill_9(tmp_path: Path, log: ToyLog) -> None:
    state = tmp_path / "state.db"
    proc, url = _serve(state, log, tmp_path)
    try:
        for _ in range(50):  # uvicorn may take a moment after the socket is bound
            try:
                r = post(url, log.body(0))
                break
            except httpx.ConnectError:
                threading.Event().wait(0.05)
        assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    proc, url = _serve(state, log, tmp_path)
    try:
        for _ in range(50):
            try:
                r = post(url, log.body(0))
                break
            except httpx.ConnectError:
                threading.Event().wait(0.05)
        assert (r.status_code, r.text) == (409, "5\n")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def test_witness_cli_vkey_and_refusals(tmp_path: Path) -> None:
    from click.testing import CliRunner, Result

    from cli.main import cli
    from ledger.cosignature import vkey_for
    from ledger.keys import read_private

    key = tmp_path / "w.key"
    write_key_pair(generate(), "w", key, PASSPHRASE)
    env = {"TRIAL_LEDGER_PASSPHRASE": PASSPHRASE}
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(cli, list(args), env=env, obj={})

    r = run("witness", "vkey", "--name", NAME, "--key", str(key))
    assert r.exit_code == 0 and r.stdout.strip() == str(vkey_for(NAME, read_private(key, PASSPHRASE)))
    assert r.stdout.startswith(NAME + "+") and len(r.stdout.strip().split("+", 2)[1]) == 8
    r = run("witness", "serve", "--name", NAME, "--key", str(key), "--state", str(tmp_path / "s.db"),
            "--log", "no-equals-sign", "--listen", "127.0.0.1:0")
    assert r.exit_code == 2 and "ORIGIN=PUBKEYFILE" in r.stderr
    r = run("witness", "serve", "--name", "has space", "--key", str(key), "--state", str(tmp_path / "s.db"),
            "--log", f"{ORIGIN}={tmp_path / 'missing.pub'}")
    assert r.exit_code == 2 and "--name" in r.stderr
    r = run("witness", "serve", "--name", NAME, "--key", str(key), "--state", str(tmp_path / "s.db"),
            "--log", f"{ORIGIN}={tmp_path / 'missing.pub'}", "--listen", "127.0.0.1:0")
    assert r.exit_code != 0 and "missing.pub" in r.stderr and not (tmp_path / "s.db").exists()
    r = run("witness", "evidence", "--state", str(tmp_path / "nothing.db"))
    assert r.exit_code == 2 and not (tmp_path / "nothing.db").exists()
