"""Contract tests: each eventsourcing hook ledger/adapter.py relies on (adapter.HOOKS), on both back ends.

If an eventsourcing upgrade renames or changes one of them, a test here fails
and names it, before anything subtler breaks elsewhere.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from domain.service import Trial
from ledger.adapter import HOOKS, ChainedPostgresApplicationRecorder, to_stored
from ledger.envelope import Envelope
from ledger.errors import PositionTaken, StoreBusy, StoreConflict, StoreError
from ledger.rows import EVENT_COLUMNS
from ledger.store import Store
from tests.conftest import Keys, initialise



def _envelope(stream: str, position: int, signer_key_id: str) -> Envelope:
    return Envelope(event_id=str(uuid.uuid4()), type="ParticipantRegistered", stream=stream, position=position,
                    occurred_at="2010-09-01T01:00:00+00:00", recorded_at=datetime.now(UTC).isoformat(),  # the log's clock runs forward
                    author="inv1", key_id=signer_key_id, meaning="authorship", reason=None,
                    data={"site": "S01", "sex": "M", "birth_year": 1960})


def test_every_hook_is_listed() -> None:
    assert len(HOOKS) == 8


def test_settings_come_from_the_location_only(db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """InfrastructureFactory(Environment(name, settings)) reads only what it is given; table names follow the name."""
    for key in ("LEDGER_SQLITE_DBNAME", "SQLITE_DBNAME", "LEDGER_POSTGRES_SCHEMA", "POSTGRES_SCHEMA"):
        monkeypatch.setenv(key, str(tmp_path / "elsewhere"))
    store = Store(db)
    try:
        datastore = store.backend.recorder.datastore
        if store.postgres:
            assert datastore.schema == store.location.schema
            assert store.backend.recorder.events_table_name == "ledger_events"
            store.ensure_tracking()
            assert store.backend.tracking_table == "ledger_tracking"
        else:
            assert store.backend.factory.env.get("SQLITE_DBNAME") == db and datastore.pool.db_name == db
            assert store.backend.recorder.events_table_name == "ledger_events"
        assert not (tmp_path / "elsewhere").exists()
    finally:
        store.close()


def test_create_statements_make_the_chained_table(db: str) -> None:
    """construct_create_table_statements (SQLite) / sql_create_statements[create_table_statement_index] (PG)."""
    store = Store(db)
    try:
        if store.postgres:
            rows = store.fetch("SELECT column_name AS c FROM information_schema.columns WHERE table_schema = ? "
                               "AND table_name = 'ledger_events'", (store.location.schema,))
            triggers = store.fetch("SELECT tgname AS t FROM pg_trigger WHERE tgrelid = to_regclass(?)",
                                   (store.events_table,))
            assert {t["t"] for t in triggers} >= {"ledger_events_no_update_delete", "ledger_events_no_truncate"}
        else:
            rows = store.fetch("SELECT name AS c FROM pragma_table_info('ledger_events')")
            triggers = store.fetch("SELECT name AS t FROM sqlite_master WHERE type = 'trigger'")
            assert {t["t"] for t in triggers} >= {"ledger_events_no_update", "ledger_events_no_delete"}
        assert set(EVENT_COLUMNS) <= {r["c"] for r in rows}
    finally:
        store.close()


def test_insert_hook_receives_the_sealer(db: str) -> None:
    """_insert_events (SQLite) / _insert_stored_events (PG) are called with insert_events' kwargs."""
    store = Store(db)
    try:
        stored = [to_stored(_envelope("S01-001", 1, "k"))]
        with pytest.raises(StoreError, match="must be saved with sealer"):
            store.backend.recorder.insert_events(stored)
        assert store.count() == 0
    finally:
        store.close()


def test_insert_returns_global_positions_and_seals_each_row(db: str, keys: Keys) -> None:
    """The RETURNING ids (PG: _fetch_ids_after_insert_events) and lastrowid (SQLite) are the positions."""
    trial = initialise(db, keys)
    try:
        head = trial.store.head_position()
        envs = [_envelope("S01-001", 1, keys.signers["inv1"].key_id),
                _envelope("S01-002", 1, keys.signers["inv1"].key_id)]
        positions = trial.store.append(envs, keys.signers["inv1"])
        assert positions == [head + 1, head + 2]
        records = [trial.store.record_at(p) for p in positions]
        assert [r.event_id for r in records if r] == [e.event_id for e in envs]
        assert records[1] is not None and records[0] is not None and records[1].prev_hash == records[0].hash
    finally:
        trial.store.close()


def test_a_taken_stream_position_is_position_taken(db: str, keys: Keys) -> None:
    """eventsourcing's IntegrityError never crosses the port."""
    trial = initialise(db, keys)
    try:
        signer = keys.signers["inv1"]
        trial.store.append([_envelope("S01-001", 1, signer.key_id)], signer)
        with pytest.raises(PositionTaken):
            trial.store.append([_envelope("S01-001", 1, signer.key_id)], signer)
    finally:
        trial.store.close()


def test_lock_table_takes_the_exclusive_lock(db: str) -> None:
    """_lock_table (PG) takes LOCK TABLE … EXCLUSIVE; on SQLite the write transaction is BEGIN IMMEDIATE."""
    store = Store(db)
    try:
        with store.backend.transaction(write=True) as c:
            store.backend.lock_log(c)
            if store.postgres:
                assert isinstance(store.backend.recorder, ChainedPostgresApplicationRecorder)
                with psycopg.connect(**store.location.connect_kwargs()) as other:  # type: ignore[arg-type]
                    modes = {r[0] for r in other.execute(
                        "SELECT mode FROM pg_locks WHERE relation = to_regclass(%s)", (store.events_table,))}
                assert "ExclusiveLock" in modes
            else:
                import sqlite3

                other = sqlite3.connect(db, timeout=0)
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
                other.close()
    finally:
        store.close()


def test_a_held_write_lock_is_store_busy(sqlite_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    Store(sqlite_db).close()
    monkeypatch.setenv("TRIAL_LEDGER_LOCK_TIMEOUT", "0")
    holder, waiter = Store(sqlite_db), Store(sqlite_db)
    try:
        with holder.write_transaction() as c:
            c.execute("SELECT 1")
            with pytest.raises(StoreBusy, match="busy"), waiter.write_transaction() as w:
                w.execute("SELECT 1")
    finally:
        holder.close()
        waiter.close()


def test_tracking_insert_in_a_transaction(db: str) -> None:
    """TrackingRecorder._insert_tracking: atomic with the caller's transaction; a stale position conflicts."""
    store = Store(db)
    try:
        store.ensure_tracking()
        assert store.tracked_position("probe") == 0
        with store.write_transaction() as c:
            store.track(c, "probe", 5)
        assert store.tracked_position("probe") == 5
        with pytest.raises(StoreConflict), store.write_transaction() as c:
            store.track(c, "probe", 5)
        def track_then_fail() -> None:
            with store.write_transaction() as c:
                store.track(c, "probe", 9)
                raise RuntimeError("roll back")

        with pytest.raises(RuntimeError, match="roll back"):
            track_then_fail()
        assert store.tracked_position("probe") == 5
        with store.write_transaction() as c:
            store.forget_position(c, "probe")
        assert store.tracked_position("probe") == 0
    finally:
        store.close()


def test_projections_and_domain_never_import_eventsourcing() -> None:
    """Only ledger/adapter.py touches eventsourcing (names with an underscore, or at all)."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for package in ("ledger", "domain", "projections", "cli"):
        for path in (root / package).rglob("*.py"):
            text = path.read_text()
            if path.name != "adapter.py" and ("import eventsourcing" in text or "from eventsourcing" in text):
                offenders.append(str(path.relative_to(root)))
            for hook in ("_insert_events", "_insert_stored_events", "_lock_table", "_insert_tracking",
                         "_notify_channel"):
                if path.name != "adapter.py" and hook in text:
                    offenders.append(f"{path.relative_to(root)}: {hook}")
    assert offenders == []


def test_trial_appends_through_the_port(db: str, keys: Keys) -> None:
    trial: Trial = initialise(db, keys)
    try:
        assert trial.store.count() == 6
    finally:
        trial.store.close()
