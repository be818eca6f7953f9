"""Concurrent writers: PostgreSQL 4 processes × 250 appends, SQLite 2 processes, shared and own participants."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from domain.signers import SignerRegistry
from ledger.store import Store
from ledger.verify_log import verify_log
from tests.conftest import PASSPHRASE, Cli, Keys, initialise, register

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from domain.service import Command, Trial
    from ledger.keys import read_private
    from ledger.store import Store

    db, key, passphrase, tag, n = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    trial = Trial(Store(db))
    signer = read_private(key, passphrase)
    own = f"OWN-{tag}"
    trial.append(Command("ParticipantRegistered", own, {"site": "S", "sex": "M", "birth_year": 1960}), signer)
    for i in range(n - 1):
        target = ("SHARED-1", "SHARED-2", own)[i % 3]
        env = trial.append(Command("LabResultRecorded", target, {"analyte": "FBG", "value": 7 + i % 50 / 10,
                                                                "unit": "mmol/L"}), signer)
        print(env.event_id, flush=True)
""")


def run_writers(db: str, keys: Keys, tmp_path: Path, writers: int, per_writer: int) -> list[str]:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    users = ["inv1", "coord1", "inv1", "coord1"][:writers]  # roles that may register participants
    procs = [subprocess.Popen([sys.executable, str(script), db, str(keys.path(u)), PASSPHRASE, str(n), str(per_writer)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n, u in enumerate(users)]
    acked = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        acked += out.split()
    return acked


def check(db: str, keys: Keys, tmp_path: Path, acked: list[str], expected: int) -> None:
    store = Store(db)
    assert len(acked) == expected
    assert all(store.record_by_event_id(e) is not None for e in acked)
    for stream in ("SHARED-1", "SHARED-2"):
        positions = [r.stream_position for r in store.stream_records(stream)]
        assert positions == list(range(1, len(positions) + 1)), "a position holds two events, or one is missing"
    run = Cli(db)
    assert run("checkpoint", "--key", str(keys.path("admin")), "--out", str(tmp_path / "cp.txt")).exit_code == 0
    report, _cp = verify_log(store, SignerRegistry(), jobs=2, note=(tmp_path / "cp.txt").read_text())
    assert report.ok, report.sorted()[:3]
    store.close()


def prepare(db: str, keys: Keys) -> None:
    trial = initialise(db, keys)
    register(trial, keys, "SHARED-1")
    register(trial, keys, "SHARED-2")
    trial.store.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_four_writers(pg_url: str, keys: Keys, tmp_path: Path) -> None:
    prepare(pg_url, keys)
    acked = run_writers(pg_url, keys, tmp_path, writers=4, per_writer=250)
    check(pg_url, keys, tmp_path, acked, expected=4 * 249)


@pytest.mark.slow
def test_sqlite_two_writers(sqlite_db: str, keys: Keys, tmp_path: Path) -> None:
    prepare(sqlite_db, keys)
    acked = run_writers(sqlite_db, keys, tmp_path, writers=2, per_writer=250)
    check(sqlite_db, keys, tmp_path, acked, expected=2 * 249)


def test_busy_store_is_reported_not_hung(sqlite_db: str, keys: Keys) -> None:
    """A writer that cannot get the lock in time gets exit 4 and one line, and writes nothing."""
    import sqlite3

    prepare(sqlite_db, keys)
    before = Store(sqlite_db).count()
    holder = sqlite3.connect(sqlite_db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        r = Cli(sqlite_db)("append", "LabResultRecorded", "--participant", "SHARED-1", "--data",
                           '{"analyte": "FBG", "value": 8, "unit": "mmol/L"}', "--key", str(keys.path("lab1")),
                           env={"TRIAL_LEDGER_LOCK_TIMEOUT": "1"})
        assert r.exit_code == 4 and "busy" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert Store(sqlite_db).count() == before
