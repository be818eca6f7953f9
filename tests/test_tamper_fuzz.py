"""Tampering, fuzzed (hypothesis): random mutations of a stored SQLite ledger by an attacker with owner rights.

Every mutation of the log is caught by `verify --checkpoint` (truncation only with the checkpoint, as
SPEC §5 says), and every mutation of the projections is repaired by `rebuild`. A rewrite re-signed with
a stolen key is caught against a checkpoint taken after that key's revocation.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.service import Command, Trial
from domain.signers import SignerRegistry
from ledger.store import Store
from ledger.verify_log import verify_log
from projections.projector import Projections
from tests.conftest import Cli, Keys, as_owner, initialise, make_keys, register
from tests.fuzzing import scaled, tried
from tests.tampering import KINDS, KeyClash, Sql, mutate_log

LOG_MUTATIONS = scaled(300, 10_000)
PROJECTION_MUTATIONS = scaled(60, 1_000)
TRIED: dict[str, int] = {"log": 0, "projections": 0}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:

    work = tmp_path_factory.mktemp("fuzz")
    keys = make_keys(work)
    db = str(work / "pristine.db")
    trial = initialise(db, keys)
    for p in range(4):
        register(trial, keys, f"S01-{p:03d}")
        for i in range(5):
            trial.append(
                Command("LabResultRecorded", f"S01-{p:03d}", {"analyte": "FBG", "value": 7 + i / 10, "unit": "mmol/L"}),
                keys.signers["lab1"],
            )
    run = Cli(db)
    assert run("checkpoint", "--key", str(keys.path("admin")), "--out", str(work / "cp.txt")).exit_code == 0
    Projections(trial.store).catch_up()
    dump = Projections(trial.store).table_dump()
    as_owner(trial.store)
    trial.store.close()
    return Path(db), (work / "cp.txt").read_text(), dump


def copy_of(pristine_db: Path, target: Path) -> sqlite3.Connection:
    shutil.copy(pristine_db, target)
    return sqlite3.connect(target, isolation_level=None)


def sqlite_sql(conn: sqlite3.Connection) -> Sql:
    def execute(statement: str, params: Sequence[object]) -> None:
        try:
            conn.execute(statement, params)
        except sqlite3.IntegrityError:
            raise KeyClash from None

    return Sql(execute, lambda q: conn.execute(q).fetchall(), "ledger_events", "rowid")


@settings(
    max_examples=LOG_MUTATIONS,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(KINDS), seed=st.integers(0, 2**32)
)
def test_every_log_mutation_is_detected(
    pristine: tuple[Path, str, dict], tmp_path_factory, kind: str, seed: int
) -> None:  # type: ignore[no-untyped-def]
    db_path, note, _dump = pristine
    target = tmp_path_factory.mktemp("m") / "m.db"
    conn = copy_of(db_path, target)
    mutate_log(sqlite_sql(conn), random.Random(seed), kind)
    conn.close()
    store = Store(str(target))
    report, _cp = verify_log(store, SignerRegistry(), jobs=1, note=note)
    store.close()
    TRIED["log"] += 1
    tried(f"sqlite log tampering ({kind})")
    assert not report.ok, (kind, seed)


@settings(
    max_examples=PROJECTION_MUTATIONS,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    table=st.sampled_from(["proj_participants", "proj_audit", "proj_deviations", "proj_summary"]),
    action=st.sampled_from(["delete", "update", "insert"]),
    seed=st.integers(0, 2**32),
)
def test_every_projection_mutation_is_repaired_by_rebuild(
    pristine: tuple[Path, str, dict], tmp_path_factory, table: str, action: str, seed: int
) -> None:  # type: ignore[no-untyped-def]
    db_path, _note, dump = pristine
    target = tmp_path_factory.mktemp("p") / "p.db"
    conn = copy_of(db_path, target)
    rng = random.Random(seed)
    rowids = [r[0] for r in conn.execute(f"SELECT rowid FROM {table}")]
    column = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")][-1]
    if action == "delete" and rowids:
        conn.execute(f"DELETE FROM {table} WHERE rowid = ?", (rng.choice(rowids),))
    elif action == "update" and rowids:
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", ("forged", rng.choice(rowids)))
    else:
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        conn.execute(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            tuple(f"forged-{i}" if i == 0 else 999999 for i in range(len(cols))),
        )
    conn.close()
    assert Cli(str(target))("rebuild").exit_code == 0
    store = Store(str(target))
    assert Projections(store).table_dump() == dump
    store.close()
    TRIED["projections"] += 1
    tried("sqlite projection tampering")


def test_rewrite_under_a_stolen_key_is_caught_after_revocation(tmp_path: Path, keys: Keys) -> None:
    """lab1's key is stolen; the sponsor revokes it and takes a checkpoint. The thief, who also holds the
    database, cuts the log back before the revocation and appends forged lab results re-signed with the
    stolen key. The chain alone verifies; the checkpoint does not."""
    db = str(tmp_path / "l.db")
    trial = initialise(db, keys)
    register(trial, keys, "S01-001")
    for v in (7.1, 7.2):
        trial.append(
            Command("LabResultRecorded", "S01-001", {"analyte": "FBG", "value": v, "unit": "mmol/L"}),
            keys.signers["lab1"],
        )
    cut = trial.store.head_position()
    trial.append(
        Command("SignerRevoked", None, {"user_id": "lab1"}, reason="key reported stolen"), keys.signers["admin"]
    )
    run = Cli(db)
    assert run("checkpoint", "--key", str(keys.path("admin")), "--out", str(tmp_path / "cp.txt")).exit_code == 0
    store = as_owner(trial.store)
    store.execute_raw(f"DELETE FROM {store._qualified} WHERE rowid > ?", (cut,))
    Trial(store).append(
        Command("LabResultRecorded", "S01-001", {"analyte": "FBG", "value": 4.2, "unit": "mmol/L"}),
        keys.signers["lab1"],
    )
    assert run("verify").exit_code == 0  # a consistent forgery: only a checkpoint held elsewhere can tell
    r = run("verify", "--checkpoint", str(tmp_path / "cp.txt"))
    assert r.exit_code == 1 and ("rewritten" in r.stderr or "truncated" in r.stderr)
    trial.store.close()


def test_mutation_counts_were_reached() -> None:
    """Runs after the fuzzers (file order): docs/reliability.md quotes these numbers."""
    if TRIED["log"]:
        assert TRIED["log"] >= LOG_MUTATIONS * 0.9
    if TRIED["projections"]:
        assert TRIED["projections"] >= PROJECTION_MUTATIONS * 0.9
