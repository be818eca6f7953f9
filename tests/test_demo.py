"""`trial-ledger demo` in a fresh directory, as `make demo` runs it: 24 enrolled, the planted deviations,
verify 0, and verify 1 once one byte of one stored row is flipped."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).with_name("trial-ledger")


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("demo")
    result = run(cwd, "--db", "demo.db", "demo", "--seed", "7")
    assert result.returncode == 0, result.stderr
    return cwd, result.stdout


def test_demo_output(demo_dir: tuple[Path, str]) -> None:
    _, out = demo_dir
    assert "enrolled: 24 of 24" in out
    assert "screen failures: 4" in out
    assert "dose 2 on study day 9, outside its window" in out
    assert "LabResultRecorded entered" in out and "after it occurred" in out
    assert "before any signed consent" in out
    # a deviation raised, then resolved by a correction, keeps its resolution and reason
    assert "resolved  visit D90 on study day 28" in out
    assert "by inv-li: visit id mis-keyed: this was the day-30 visit" in out
    # a SUSAR with its expedited-reporting clock, stopped by the safety report
    assert "S01-014-AE1 (acute pancreatitis): SUSAR: expedited report within 15 days, due 2010-11-07" in out
    assert "reported 2010-10-29" in out
    assert "verify: OK" in out and "root key fingerprint:" in out
    assert "try next:" in out
    assert "database LOCKED" in out and "sign-offs: current" in out and "stale 1" in out
    assert "queries: 1 open" in out
    assert "cosigned checkpoint (2 of 2, quorum met)" in out
    assert out.count("\u2014 ethics-committee.example/witness ") == 1 and out.count("\u2014 cro.example/witness ") == 1


def test_demo_deviations_open_hides_the_resolved_one(demo_dir: tuple[Path, str]) -> None:
    cwd, _ = demo_dir
    every = run(cwd, "--db", "demo.db", "deviations").stdout
    still_open = run(cwd, "--db", "demo.db", "deviations", "--open").stdout
    assert "S01-006" in every and "S01-006" not in still_open
    assert "dose_outside_window" in still_open


def test_demo_keys_work_for_further_commands(demo_dir: tuple[Path, str]) -> None:
    cwd, _ = demo_dir
    keys = cwd / "demo-keys"
    assert (keys / "lab-zhao.key").exists()
    env_run = subprocess.run(
        [str(BIN), "--db", "demo.db", "append", "LabResultRecorded", "--participant", "S01-001",
         "--data", '{"analyte": "CPEPTIDE", "value": 0.7, "unit": "nmol/L"}', "--key", str(keys / "lab-zhao.key"),
         "--reason", "stored sample analysed after completion"],  # S01-001 completed: terminal
        cwd=cwd, capture_output=True, text=True, env={"TRIAL_LEDGER_PASSPHRASE": "demo-passphrase", "PATH": ""})
    assert env_run.returncode == 3 and "is locked by DatabaseLocked" in env_run.stderr  # the demo ends locked
    ae_data = ('{"ae_id": "S01-001-AE9", "term": "headache", "grade": 1, "serious": false, '
               '"relatedness": "unlikely", "expected": true, "awareness_at": "2011-12-20T09:00:00+08:00"}')
    ae = subprocess.run(
        [str(BIN), "--db", "demo.db", "append", "AdverseEventReported", "--participant", "S01-001",
         "--data", ae_data, "--occurred-at", "2011-12-20T08:00:00+08:00", "--key", str(keys / "inv-li.key")],
        cwd=cwd, capture_output=True, text=True, env={"TRIAL_LEDGER_PASSPHRASE": "demo-passphrase", "PATH": ""},
        check=False)
    assert ae.returncode == 0, ae.stderr  # safety follow-up is accepted under the lock


def test_demo_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    heads = []
    for name in ("a.db", "b.db"):
        assert run(tmp_path, "--db", name, "demo", "--seed", "11", "--participants", "3",
                   "--no-witnesses").returncode == 0
        heads.append(run(tmp_path, "--db", name, "--json", "verify").stdout)
    assert heads[0] == heads[1]


def test_demo_refuses_a_non_empty_ledger(demo_dir: tuple[Path, str]) -> None:
    cwd, _ = demo_dir
    r = run(cwd, "--db", "demo.db", "demo")
    assert r.returncode == 3 and "empty ledger" in r.stderr


def test_flipping_one_byte_fails_verify(demo_dir: tuple[Path, str], tmp_path: Path) -> None:
    cwd, _ = demo_dir
    copy = tmp_path / "copy.db"
    src = sqlite3.connect(cwd / "demo.db")
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    assert run(tmp_path, "--db", str(copy), "verify").returncode == 0
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        dst.execute("UPDATE ledger_events SET state = x'00' WHERE rowid = 500")
    dst.execute("DROP TRIGGER ledger_events_no_update")  # an attacker with owner rights
    row = dst.execute("SELECT rowid, state FROM ledger_events WHERE rowid = 500").fetchone()
    flipped = bytearray(row[1])
    flipped[40] ^= 0x01
    dst.execute("UPDATE ledger_events SET state = ? WHERE rowid = 500", (bytes(flipped),))
    dst.commit()
    dst.close()
    r = run(tmp_path, "--db", str(copy), "verify")
    assert r.returncode == 1 and "position 500" in r.stderr
