"""The one module that touches eventsourcing: recorders, factories, settings, write lock, tracking.

Everything above it talks to :class:`ledger.store.Store` (the storage port)
in ledger types and ledger errors. The hooks used here are listed in
:data:`HOOKS` and each one has a contract test (tests/test_storage_contract.py),
so an eventsourcing upgrade that moves one fails there, loudly, in one place.

How a write works: :meth:`Backend.save` hands a :class:`~ledger.sealing.Sealer`
to the recorder's ``insert_events``; inside the write lock our recorder
subclass reads the head of the global log, asks the sealer to hash and sign
each event at its real position, and inserts the events with their seals.

* SQLite has one writer. The write transaction is taken (``BEGIN IMMEDIATE``)
  before the head is read, so another process cannot append in between.
* PostgreSQL: the recorder takes ``LOCK TABLE … IN EXCLUSIVE MODE`` before
  inserting; the head is read after it.

Each stream is one eventsourcing aggregate: the primary key (stream, position)
rejects a second writer at the same stream position; that surfaces as
:class:`~ledger.errors.PositionTaken`.

Settings are built from ``--db`` alone: the process environment is NOT merged
in (eventsourcing's ``Application`` would merge ``os.environ`` and read
``LEDGER_*`` keys first), so no variable can redirect where data goes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import (
    InfrastructureFactory,
    IntegrityError,
    OperationalError,
    PersistenceError,
    StoredEvent,
    Tracking,
)
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteFactory
from eventsourcing.utils import Environment

from ledger.chain import GENESIS_PREV_HASH
from ledger.envelope import Envelope
from ledger.errors import PositionTaken, StoreBusy, StoreConflict, StoreError, UsageProblem
from ledger.location import Location
from ledger.rows import EVENT_COLUMNS, EVENTS_TABLE
from ledger.sealing import Seal, Sealer

APP_NAME = "Ledger"  # eventsourcing derives the PostgreSQL table names from it: ledger_events, ledger_tracking
HOOKS = (
    "SQLiteApplicationRecorder._insert_events(cursor, stored_events, **kwargs) inside insert_events' transaction",
    "SQLiteApplicationRecorder.construct_create_table_statements()",
    "PostgresApplicationRecorder._insert_stored_events(cursor, stored_events, **kwargs), then "
    "_fetch_ids_after_insert_events reads RETURNING notification_id",
    "PostgresApplicationRecorder._lock_table(cursor), _notify_channel(cursor)",
    "PostgresApplicationRecorder.sql_create_statements / create_table_statement_index",
    "TrackingRecorder._insert_tracking(cursor, Tracking) raising IntegrityError when the position is not new",
    "InfrastructureFactory(Environment(name, settings)) reading only the settings given",
    "datastore.transaction(commit=...) yielding a cursor; IntegrityError/OperationalError translations",
)


def __getattr__(name: str) -> Any:
    """The PostgreSQL recorder and factory, imported on first use (psycopg costs SQLite ledgers start-up)."""
    if name == "ChainedPostgresApplicationRecorder":
        return _postgres()[0]
    if name == "ChainedPostgresFactory":
        return _postgres()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _require_sealer(kwargs: dict[str, Any]) -> Sealer:
    sealer = kwargs.get("sealer")
    if not isinstance(sealer, Sealer):
        raise StoreError("internal: ledger events must be saved with sealer=Sealer(...)")
    return sealer


def stored_values(rows: Sequence[StoredEvent], seals: Sequence[Seal]) -> list[tuple[Any, ...]]:
    """Insert values in :data:`EVENT_COLUMNS` order."""
    return [(s.originator_id, s.originator_version, s.topic, s.state,
             seal.event_id, seal.prev_hash, seal.hash, seal.signature, seal.key_id)
            for s, seal in zip(rows, seals, strict=True)]


class ChainedSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    def __init__(self, datastore: Any, events_table_name: str = EVENTS_TABLE):
        super().__init__(datastore, events_table_name)
        t = self.events_table_name
        self.insert_events_statement = (
            f"INSERT INTO {t} ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})")
        self.select_head_statement = f"SELECT hash FROM {t} ORDER BY rowid DESC LIMIT 1"
        self.select_head_state_statement = f"SELECT state FROM {t} ORDER BY rowid DESC LIMIT 1"

    def construct_create_table_statements(self) -> list[str]:
        t = self.events_table_name
        return [
            f"CREATE TABLE IF NOT EXISTS {t} ("
            "originator_id TEXT, originator_version INTEGER, topic TEXT, state BLOB, "
            "event_id TEXT NOT NULL, prev_hash BLOB NOT NULL, hash BLOB NOT NULL, "
            "signature BLOB NOT NULL, key_id TEXT NOT NULL, "
            "PRIMARY KEY (originator_id, originator_version))",
            f"CREATE UNIQUE INDEX IF NOT EXISTS {t}_event_id ON {t} (event_id)",
            # Append-only: the log refuses UPDATE and DELETE. An attacker with owner
            # rights can drop these, which is why verify never relies on them.
            f"CREATE TRIGGER IF NOT EXISTS {t}_no_update BEFORE UPDATE ON {t} "
            f"BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END",
            f"CREATE TRIGGER IF NOT EXISTS {t}_no_delete BEFORE DELETE ON {t} "
            f"BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END",
        ]

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        sealer = _require_sealer(kwargs)
        # The library opened a deferred transaction; make it a write transaction
        # before reading the head, so no other process can append in between.
        c.execute("ROLLBACK")
        c.execute("BEGIN IMMEDIATE")
        return self.insert_sealed(c, stored_events, sealer.seal(self.read_head(c), stored_events,
                                                                self.read_head_state(c)))

    def read_head(self, c: Any) -> bytes:
        c.execute(self.select_head_statement)
        row = c.fetchone()
        return bytes(row[0]) if row else GENESIS_PREV_HASH

    def read_head_state(self, c: Any) -> bytes | None:
        """The head row's stored bytes: the sealer checks its recorded_at (ledger/clock.py)."""
        c.execute(self.select_head_state_statement)
        row = c.fetchone()
        return bytes(row[0]) if row else None

    def insert_sealed(self, c: Any, stored_events: Sequence[StoredEvent], seals: Sequence[Seal], *,
                      ids: bool = True) -> list[int]:
        if not ids:  # an import's batch: nobody reads the ids, and one statement is faster
            c.executemany(self.insert_events_statement, stored_values(stored_events, seals))
            return []
        positions = []
        for values in stored_values(stored_events, seals):
            c.execute(self.insert_events_statement, values)
            positions.append(c.lastrowid)
        return positions


@functools.cache
def _postgres() -> tuple[type[Any], type[InfrastructureFactory[Any]]]:
    """The PostgreSQL recorder and factory, defined on first use.

    psycopg and eventsourcing's PostgreSQL module cost ~100 ms of start-up,
    which an SQLite ledger (every ``append`` a user runs) should not pay.
    """
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresFactory
    from psycopg.sql import SQL, Identifier

    class ChainedPostgresApplicationRecorder(PostgresApplicationRecorder):
        def __init__(self, datastore: Any, *, events_table_name: str = EVENTS_TABLE):
            super().__init__(datastore, events_table_name=events_table_name)
            schema, table = Identifier(self.datastore.schema), Identifier(self.events_table_name)
            self.sql_create_statements[self.create_table_statement_index] = SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "originator_id text NOT NULL, originator_version bigint NOT NULL, "
                "topic text, state bytea, notification_id bigserial, "
                "event_id text NOT NULL, prev_hash bytea NOT NULL, hash bytea NOT NULL, "
                "signature bytea NOT NULL, key_id text NOT NULL, "
                "PRIMARY KEY (originator_id, originator_version))"
            ).format(schema=schema, table=table)
            self.sql_create_statements.append(
                SQL("CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {schema}.{table} (event_id)").format(
                    index=Identifier(f"{self.events_table_name}_event_id_idx"), schema=schema, table=table
                )
            )
            guard = Identifier(f"{self.events_table_name}_append_only")
            self.sql_create_statements.append(SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{guard}() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END; $$"
            ).format(schema=schema, guard=guard))
            for name, when in (("no_update_delete", "BEFORE UPDATE OR DELETE ON {schema}.{table} FOR EACH ROW"),
                               ("no_truncate", "BEFORE TRUNCATE ON {schema}.{table} FOR EACH STATEMENT")):
                self.sql_create_statements.append(SQL(
                    "CREATE OR REPLACE TRIGGER {trigger} " + when + " EXECUTE FUNCTION {schema}.{guard}()"
                ).format(trigger=Identifier(f"{self.events_table_name}_{name}"), schema=schema, table=table,
                         guard=guard))
            columns = SQL(", ").join(Identifier(c) for c in EVENT_COLUMNS)
            types = ("text", "bigint", "text", "bytea", "text", "bytea", "bytea", "bytea", "text")
            self.insert_events_statement = SQL(
                "INSERT INTO {schema}.{table} ({columns}) SELECT * FROM unnest(" +
                ", ".join(f"%s::{t}[]" for t in types) + ") RETURNING notification_id"
            ).format(schema=schema, table=table, columns=columns)
            self.select_head_statement = SQL(
                "SELECT hash FROM {schema}.{table} ORDER BY notification_id DESC LIMIT 1"
            ).format(schema=schema, table=table)
            self.select_head_state_statement = SQL(
                "SELECT state FROM {schema}.{table} ORDER BY notification_id DESC LIMIT 1"
            ).format(schema=schema, table=table)

        def _insert_stored_events(self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
            sealer = _require_sealer(kwargs)
            self.lock(curs)
            self._notify_channel(curs)
            self.insert_sealed(curs, stored_events, sealer.seal(self.read_head(curs), stored_events,
                                                                self.read_head_state(curs)))

        def lock(self, curs: Any) -> None:
            self._lock_table(curs)

        def read_head(self, curs: Any) -> bytes:
            curs.execute(self.select_head_statement)
            row = curs.fetchone()
            return bytes(row["hash"]) if row else GENESIS_PREV_HASH

        def read_head_state(self, curs: Any) -> bytes | None:
            """The head row's stored bytes: the sealer checks its recorded_at (ledger/clock.py)."""
            curs.execute(self.select_head_state_statement)
            row = curs.fetchone()
            return bytes(row["state"]) if row else None

        def insert_sealed(self, curs: Any, stored_events: Sequence[StoredEvent], seals: Sequence[Seal], *,
                          ids: bool = True) -> list[int]:
            """Insert with RETURNING; the library's caller fetches the ids."""
            columns = list(zip(*stored_values(stored_events, seals), strict=True))
            curs.execute(self.insert_events_statement, [list(col) for col in columns])
            return []



    class ChainedPostgresFactory(PostgresFactory):
        application_recorder_class = ChainedPostgresApplicationRecorder

    return ChainedPostgresApplicationRecorder, ChainedPostgresFactory


class ChainedSQLiteFactory(SQLiteFactory):
    application_recorder_class = ChainedSQLiteApplicationRecorder


def settings(location: Location, *, create_table: bool) -> dict[str, str]:
    """eventsourcing's settings, from ``--db`` alone (never from the process environment)."""
    base = {"ORIGINATOR_ID_TYPE": "text", "CREATE_TABLE": "y" if create_table else "n"}
    if location.postgres:
        base.update({
            "POSTGRES_DBNAME": location.dbname, "POSTGRES_HOST": location.host,
            "POSTGRES_PORT": str(location.port), "POSTGRES_USER": location.user,
            "POSTGRES_PASSWORD": location.password, "POSTGRES_SCHEMA": location.schema,
            "POSTGRES_LOCK_TIMEOUT": location.lock_timeout, "POSTGRES_CONNECT_TIMEOUT": "5",
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        })
    else:
        base.update({"SQLITE_DBNAME": location.path, "SQLITE_LOCK_TIMEOUT": location.lock_timeout})
    return base


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def log_exists(location: Location) -> bool:
    """Whether the events table is already there; creates nothing (no file, schema or table)."""
    if not location.postgres:
        if not os.path.exists(location.path):
            return False
        try:
            with contextlib.closing(sqlite3.connect(f"file:{location.path}?mode=ro", uri=True, timeout=10)) as conn:
                row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                   (EVENTS_TABLE,)).fetchone()
                return row is not None
        except sqlite3.Error:
            return False
    import psycopg  # only for a PostgreSQL ledger: ~100 ms of start-up that SQLite does not pay

    try:
        with psycopg.connect(**location.connect_kwargs()) as conn:  # type: ignore[arg-type]
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                               (f'"{location.schema}".{EVENTS_TABLE}',)).fetchone()
            return bool(row and row[0])
    except psycopg.Error as e:
        raise StoreError(f"--db: cannot reach PostgreSQL: {_first_line(e)}") from None


def ensure_schema(location: Location) -> None:
    if location.schema == "public":
        return
    import psycopg
    from psycopg.sql import SQL, Identifier

    try:
        with psycopg.connect(**location.connect_kwargs(), autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(location.schema)))
    except psycopg.Error as e:
        raise StoreError(f"--db: cannot reach PostgreSQL: {_first_line(e)}") from None


class Backend:
    """An opened ledger database: the eventsourcing recorders behind the storage port.

    ``create=False`` refuses (UsageProblem, exit 2) when there is no ledger,
    before anything is created: no file, no schema, no table.
    """

    def __init__(self, location: Location, *, create: bool):
        self.location = location
        exists = log_exists(location)
        if not exists and not create:
            raise UsageProblem(f"--db {location.db}: no ledger there (create one with `trial-ledger init`)")
        if not exists and location.postgres:
            ensure_schema(location)
        env = Environment(APP_NAME, settings(location, create_table=not exists))
        factory_class: type[InfrastructureFactory[Any]] = ChainedSQLiteFactory
        if location.postgres:
            factory_class = _postgres()[1]
        self.factory, recorder = self._open(factory_class, env)
        # Either recorder (the PostgreSQL one is defined on first use, so the union is not spelled out).
        self.recorder: Any = recorder
        self._tracking: Any = None

    def _open(self, factory_class: type[InfrastructureFactory[Any]],
              env: Environment) -> tuple[InfrastructureFactory[Any], Any]:
        """Two processes creating PostgreSQL objects at once can collide ("tuple concurrently updated"); retry."""
        for attempt in range(5):
            try:
                factory = factory_class(env)
                return factory, factory.application_recorder()  # runs the DDL when CREATE_TABLE is set
            except (PersistenceError, OSError) as e:
                if "concurrently" in str(e) and attempt < 4:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise StoreError(f"--db {self.location.db}: cannot open the ledger: {_first_line(e)}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.factory.close()

    # -- transactions -----------------------------------------------------------------------

    @contextmanager
    def transaction(self, *, write: bool, conflict: type[StoreConflict] = StoreConflict) -> Iterator[Any]:
        """A driver cursor; a write transaction holds the write lock from its first statement on SQLite."""
        datastore = self.recorder.datastore
        with self.translated(conflict):
            if self.location.postgres:
                with datastore.transaction(commit=write) as curs:
                    yield curs
                return
            with datastore.transaction(commit=write) as c:
                if write:
                    c.execute("ROLLBACK")
                    c.execute("BEGIN IMMEDIATE")
                yield c

    @contextmanager
    def read_cursor(self) -> Iterator[Any]:
        """A cursor for one read-only statement (PostgreSQL: a pooled autocommit connection)."""
        with self.translated():
            datastore: Any = self.recorder.datastore
            if self.location.postgres:
                with datastore.get_connection() as conn, conn.cursor() as curs:
                    yield curs
                return
            with datastore.transaction(commit=False) as c:
                yield c

    @contextmanager
    def translated(self, conflict: type[StoreConflict] = StoreConflict) -> Iterator[None]:
        """eventsourcing's persistence errors as ledger errors (``conflict`` for a uniqueness violation)."""
        try:
            yield
        except IntegrityError as e:
            raise conflict(f"refused by the database (another writer was first?): {_first_line(e)}") from None
        except OperationalError as e:
            if "lock" in str(e).lower():
                raise StoreBusy(f"the ledger is busy (write lock not granted): {_first_line(e)}") from None
            raise StoreError(f"--db {self.location.db}: {_first_line(e)}") from None
        except PersistenceError as e:
            raise StoreError(f"--db {self.location.db}: {_first_line(e)}") from None

    def lock_log(self, c: Any) -> None:
        """Take the append lock inside a write transaction (SQLite already holds it)."""
        if self.location.postgres:
            self.recorder.lock(c)

    # -- the events table ---------------------------------------------------------------------

    def save(self, envelopes: Sequence[Envelope], sealer: Sealer) -> list[int]:
        """Chain, sign and insert atomically; the global positions given."""
        stored = [to_stored(e) for e in envelopes]
        with self.translated(conflict=PositionTaken):
            ids = self.recorder.insert_events(stored, sealer=sealer)
        return list(ids or [])

    def read_head(self, c: Any) -> bytes:
        head: bytes = self.recorder.read_head(c)
        return head

    def read_head_state(self, c: Any) -> bytes | None:
        state: bytes | None = self.recorder.read_head_state(c)
        return state

    def insert_sealed(self, c: Any, stored: Sequence[StoredEvent], seals: Sequence[Seal]) -> None:
        self.recorder.insert_sealed(c, stored, seals, ids=False)

    def stream(self, stream: str, lte: int | None = None) -> list[bytes]:
        with self.translated():
            return [s.state for s in self.recorder.select_events(stream, lte=lte)]

    def stream_length(self, stream: str) -> int:
        with self.translated():
            last = self.recorder.select_events(stream, desc=True, limit=1)
        return last[0].originator_version if last else 0

    def head_position(self) -> int:
        with self.translated():
            return self.recorder.max_notification_id() or 0

    # -- tracked positions (projections) ------------------------------------------------------

    def ensure_tracking(self) -> None:
        """Open the tracking recorder and create its table if missing (DDL: outside any transaction)."""
        if self._tracking is None:
            with self.translated():
                tracking = self.factory.tracking_recorder()
                tracking.create_table()
            self._tracking = tracking

    @property
    def tracking(self) -> Any:
        self.ensure_tracking()
        return self._tracking

    @property
    def tracking_table(self) -> str:
        return str(getattr(self.tracking, "tracking_table_name", "tracking"))

    def tracked_position(self, name: str) -> int:
        with self.translated():
            return int(self.tracking.max_tracking_id(name) or 0)

    def track(self, c: Any, name: str, position: int) -> None:
        """Record ``position`` for ``name`` in the caller's transaction; StoreConflict if it is not new."""
        with self.translated():
            self.tracking._insert_tracking(c, Tracking(name, position))


def to_stored(envelope: Envelope) -> StoredEvent:
    """An envelope's canonical bytes as the event state, its type as the topic."""
    return StoredEvent(originator_id=envelope.stream, originator_version=envelope.position,
                       topic=envelope.type, state=envelope.canonical())
