"""The signed-log import reads its input exactly once: what it verified is what it inserts (issue 16)."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path

from domain.service import Trial
from ledger.store import Store
from tests.conftest import Cli, Keys, register


class FifoServer:
    """Serves ``contents[i]`` to the i-th reader of a FIFO (the last one to every later reader)."""

    def __init__(self, path: Path, contents: list[bytes]):
        self.path, self.contents = path, contents
        self.served = 0
        self.stop = threading.Event()
        os.mkfifo(path)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
                time.sleep(0.005)
                continue
            os.set_blocking(fd, True)
            blob = self.contents[min(self.served, len(self.contents) - 1)]
            self.served += 1
            try:
                os.write(fd, blob)
            except BrokenPipeError:
                pass  # the reader wanted only the first line
            finally:
                os.close(fd)
            time.sleep(0.05)  # let the reader see end-of-file before the next open

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def test_a_fifo_serving_a_good_log_then_an_edited_one_imports_the_good_one(trial: Trial, keys: Keys, run: Cli,
                                                                          tmp_path: Path) -> None:
    register(trial, keys, "S01-001")
    exported = tmp_path / "log.jsonl"
    assert run("export", "--format", "jsonl", "--out", str(exported)).exit_code == 0
    good = exported.read_bytes()
    rows = [json.loads(line) for line in good.splitlines()]
    # The edit an attacker wants in: the participant's birth year, in the signed state (signatures then break).
    rows[-1]["state"] = rows[-1]["state"].replace('"birth_year":1960', '"birth_year":1999')
    edited = b"".join(json.dumps(r, separators=(",", ":"), sort_keys=True).encode() + b"\n" for r in rows)
    assert edited != good

    fifo = FifoServer(tmp_path / "log.fifo", [good, good, edited])
    target = str(tmp_path / "target.db")
    try:
        r = Cli(target)("import", str(tmp_path / "log.fifo"))
    finally:
        fifo.close()
    assert fifo.served == 1, "the input was opened more than once"
    assert r.exit_code == 0, r.output
    store = Store(target)
    try:
        states = [rec.state for rec in store.records()]
    finally:
        store.close()
    assert b'"birth_year":1960' in states[-1] and all(b"\"birth_year\":1999" not in s for s in states)
    assert Cli(target)("verify").exit_code == 0


def test_an_edited_log_is_refused_and_creates_nothing(trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> None:
    """The FIFO serves the edited file first: it fails verification and no database is created."""
    register(trial, keys, "S01-001")
    exported = tmp_path / "log.jsonl"
    assert run("export", "--format", "jsonl", "--out", str(exported)).exit_code == 0
    good = exported.read_bytes()
    edited = good.replace(b'birth_year\\":1960', b'birth_year\\":1999').replace(b'"birth_year":1960',
                                                                                 b'"birth_year":1999')
    assert edited != good
    fifo = FifoServer(tmp_path / "log.fifo", [edited, good])
    target = tmp_path / "target.db"
    try:
        r = Cli(str(target))("import", str(tmp_path / "log.fifo"))
    finally:
        fifo.close()
    assert r.exit_code == 3 and "line" in r.stderr
    assert fifo.served == 1 and not target.exists()
