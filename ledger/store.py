"""Storage: eventsourcing's SQLite and PostgreSQL application recorders, chained.

This module is the one place that touches the library's internals. The
``Sealer`` handed to ``Application.save(..., sealer=...)`` reaches the
recorder's ``insert_events``; inside the store's write lock the recorder
reads the head of the global log, asks the sealer to hash and sign each
event at its real position, and inserts the events with their seals.

* SQLite has one writer. The write transaction is taken (``BEGIN
  IMMEDIATE``) before the head is read, so another process cannot append
  between our read and our insert.
* PostgreSQL: eventsourcing's recorder already takes ``LOCK TABLE … IN
  EXCLUSIVE MODE`` before inserting; we read the head after it.

Each stream is one eventsourcing aggregate: the primary key
(stream, position) rejects a second writer at the same stream position with
``eventsourcing.persistence.IntegrityError``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import psycopg
from eventsourcing.application import Application
from eventsourcing.persistence import (
    IntegrityError,
    Mapper,
    OperationalError,
    PersistenceError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresFactory
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteFactory
from psycopg.sql import SQL, Identifier

from ledger.chain import GENESIS_PREV_HASH, link_hash
from ledger.clock import refuse_backwards
from ledger.envelope import Envelope, Record
from ledger.errors import StoreBusy, StoreError
from ledger.keys import Signer
from ledger.signing_pool import SigningPool

EVENTS_TABLE = "ledger_events"
EXTRA_COLUMNS = ("event_id", "prev_hash", "hash", "signature", "key_id")


@dataclass(frozen=True, slots=True)
class Seal:
    event_id: str
    prev_hash: bytes
    hash: bytes
    signature: bytes
    key_id: str


class Sealer:
    """Chains and signs a batch of envelopes, once the head is known.

    It is called inside the write lock, so it must stay cheap: one SHA-256
    and one Ed25519 signature per event.
    """

    def __init__(self, signer: Signer, envelopes: Sequence[Envelope]):
        self.signer = signer
        self.envelopes = envelopes

    def seal(self, head: bytes, stored: Sequence[StoredEvent], head_state: bytes | None = None) -> list[Seal]:
        links = self.chain(head, stored, head_state)
        return self.seals(links, [self.signer.sign(digest) for _prev, digest in links])

    def chain(self, head: bytes, stored: Sequence[StoredEvent],
              head_state: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """(prev_hash, hash) of each event from ``head`` on; no signature is needed for the next link."""
        if len(stored) != len(self.envelopes):
            raise ProgrammingError("sealer and stored events differ in length")
        refuse_backwards(head_state, self.envelopes)  # issue 16: recorded time never runs back (ledger/clock.py)
        links = []
        prev = head
        for envelope, event in zip(self.envelopes, stored, strict=True):
            if (event.originator_id, event.originator_version) != (envelope.stream, envelope.position):
                raise ProgrammingError("sealer and stored events are out of step")
            digest = link_hash(event.state, prev)
            links.append((prev, digest))
            prev = digest
        return links

    def seals(self, links: Sequence[tuple[bytes, bytes]], signatures: Sequence[bytes]) -> list[Seal]:
        key_id = self.signer.key_id
        return [Seal(envelope.event_id, prev, digest, signature, key_id)
                for envelope, (prev, digest), signature in zip(self.envelopes, links, signatures, strict=True)]


class EnvelopeMapper(Mapper[str]):
    """Stores an envelope's canonical bytes as the event state, its type as the topic."""

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        assert isinstance(domain_event, Envelope)
        return StoredEvent(
            originator_id=domain_event.stream,
            originator_version=domain_event.position,
            topic=domain_event.type,
            state=domain_event.canonical(),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        return Envelope.from_canonical(stored_event.state)


def _require_sealer(kwargs: dict[str, Any]) -> Sealer:
    sealer = kwargs.get("sealer")
    if not isinstance(sealer, Sealer):
        raise ProgrammingError("ledger events must be saved with sealer=Sealer(...)")
    return sealer


class ChainedSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    def __init__(self, datastore: Any, events_table_name: str = EVENTS_TABLE):
        super().__init__(datastore, events_table_name)
        t = self.events_table_name
        self.insert_events_statement = f"INSERT INTO {t} VALUES (?,?,?,?,?,?,?,?,?)"
        self.select_head_statement = f"SELECT hash, state FROM {t} ORDER BY rowid DESC LIMIT 1"

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

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        sealer = _require_sealer(kwargs)
        # The library opened a deferred transaction; make it a write transaction
        # before reading the head, so no other process can append in between.
        c.execute("ROLLBACK")
        c.execute("BEGIN IMMEDIATE")
        ids, _head = self.seal_and_insert(c, stored_events, sealer, *self.read_head(c))
        return ids

    def read_head(self, c: Any) -> tuple[bytes, bytes | None]:
        """The head's hash and its stored bytes (for its recorded_at), or the genesis hash and None."""
        c.execute(self.select_head_statement)
        row = c.fetchone()
        return (bytes(row[0]), bytes(row[1])) if row else (GENESIS_PREV_HASH, None)

    def seal_and_insert(self, c: Any, stored_events: Sequence[StoredEvent], sealer: Sealer,
                        head: bytes, head_state: bytes | None = None) -> tuple[list[int], bytes]:
        """Chain and sign at ``head`` and insert; the caller holds the write lock."""
        seals = sealer.seal(head, stored_events, head_state)
        return self.insert_sealed(c, stored_events, seals), seals[-1].hash if seals else head

    def insert_sealed(self, c: Any, stored_events: Sequence[StoredEvent], seals: Sequence[Seal]) -> list[int]:
        ids = []
        for s, seal in zip(stored_events, seals, strict=True):
            c.execute(
                self.insert_events_statement,
                (s.originator_id, s.originator_version, s.topic, s.state,
                 seal.event_id, seal.prev_hash, seal.hash, seal.signature, seal.key_id),
            )
            ids.append(c.lastrowid)
        return ids


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
        self.insert_events_statement = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state, "
            "event_id, prev_hash, hash, signature, key_id) "
            "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::bytea[], "
            "%s::text[], %s::bytea[], %s::bytea[], %s::bytea[], %s::text[]) "
            "RETURNING notification_id"
        ).format(schema=schema, table=table)
        self.select_head_statement = SQL(
            "SELECT hash, state FROM {schema}.{table} ORDER BY notification_id DESC LIMIT 1"
        ).format(schema=schema, table=table)

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        sealer = _require_sealer(kwargs)
        self._lock_table(curs)
        self._notify_channel(curs)
        self.seal_and_insert(curs, stored_events, sealer, *self.read_head(curs))

    def read_head(self, curs: Any) -> tuple[bytes, bytes | None]:
        """The head's hash and its stored bytes (for its recorded_at), or the genesis hash and None."""
        curs.execute(self.select_head_statement)
        row = curs.fetchone()
        return (bytes(row["hash"]), bytes(row["state"])) if row else (GENESIS_PREV_HASH, None)

    def seal_and_insert(self, curs: Any, stored_events: Sequence[StoredEvent], sealer: Sealer,
                        head: bytes, head_state: bytes | None = None) -> tuple[list[int], bytes]:
        """Chain and sign at ``head`` and insert (ids are fetched by the caller); the table is locked."""
        seals = sealer.seal(head, stored_events, head_state)
        self.insert_sealed(curs, stored_events, seals)
        return [], seals[-1].hash if seals else head

    def insert_sealed(self, curs: Any, stored_events: Sequence[StoredEvent], seals: Sequence[Seal]) -> list[int]:
        columns = list(zip(*[
            (s.originator_id, s.originator_version, s.topic, s.state,
             seal.event_id, seal.prev_hash, seal.hash, seal.signature, seal.key_id)
            for s, seal in zip(stored_events, seals, strict=True)
        ]))
        curs.execute(self.insert_events_statement, [list(col) for col in columns])
        return []


class ChainedSQLiteFactory(SQLiteFactory):
    application_recorder_class = ChainedSQLiteApplicationRecorder


class ChainedPostgresFactory(PostgresFactory):
    application_recorder_class = ChainedPostgresApplicationRecorder


class LedgerApp(Application[str]):
    """A thin eventsourcing application: it only saves and reads envelopes."""

    name = "Ledger"


LOCK_TIMEOUT_ENV = "TRIAL_LEDGER_LOCK_TIMEOUT"


def _env_for(db: str) -> dict[str, str]:
    """eventsourcing's settings for ``--db``; the write-lock wait comes from $TRIAL_LEDGER_LOCK_TIMEOUT (s)."""
    lock_timeout = os.environ.get(LOCK_TIMEOUT_ENV, "10")
    base = {
        "MAPPER_TOPIC": "ledger.store:EnvelopeMapper",
        "ORIGINATOR_ID_TYPE": "text",
        "CREATE_TABLE": "y",
    }
    if db.startswith(("postgresql://", "postgres://")):
        url = urlparse(db)
        query = parse_qs(url.query)
        base.update({
            "PERSISTENCE_MODULE": "ledger.store:ChainedPostgresFactory",
            "POSTGRES_DBNAME": unquote(url.path.lstrip("/")) or "postgres",
            "POSTGRES_HOST": url.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
            "POSTGRES_SCHEMA": query.get("schema", ["public"])[0],
            "POSTGRES_LOCK_TIMEOUT": query.get("lock_timeout", [lock_timeout])[0],
            "POSTGRES_CONNECT_TIMEOUT": "5",
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        })
    else:
        base.update({
            "PERSISTENCE_MODULE": "ledger.store:ChainedSQLiteFactory",
            "SQLITE_DBNAME": db,
            "SQLITE_LOCK_TIMEOUT": lock_timeout,
        })
    return base


def is_postgres(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def _log_exists(db: str, env: dict[str, str]) -> bool:
    """Whether the events table is already there (then no DDL is run on open)."""
    if not is_postgres(db):
        if not os.path.exists(db):
            return False
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
                row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                   (EVENTS_TABLE,)).fetchone()
                return row is not None
        except sqlite3.Error:
            return False
    try:
        with psycopg.connect(
            host=env["POSTGRES_HOST"], port=int(env["POSTGRES_PORT"]), user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"] or None, dbname=env["POSTGRES_DBNAME"], connect_timeout=5,
        ) as conn:
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                               (f'"{env["POSTGRES_SCHEMA"]}".{EVENTS_TABLE}',)).fetchone()
            return bool(row and row[0])
    except psycopg.Error as e:
        raise StoreError(f"--db: cannot reach PostgreSQL: {str(e).strip().splitlines()[0]}") from None


def _ensure_schema(env: dict[str, str]) -> None:
    schema = env["POSTGRES_SCHEMA"]
    if schema == "public":
        return
    try:
        with psycopg.connect(
            host=env["POSTGRES_HOST"], port=int(env["POSTGRES_PORT"]), user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"] or None, dbname=env["POSTGRES_DBNAME"],
            autocommit=True, connect_timeout=5,
        ) as conn:
            conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(schema)))
    except psycopg.Error as e:
        raise StoreError(f"--db: cannot reach PostgreSQL: {str(e).strip().splitlines()[0]}") from None


def _open_app(db: str, env: dict[str, str]) -> LedgerApp:
    """Open the application; tables are created if missing.

    Two processes creating PostgreSQL objects at once can collide ("tuple
    concurrently updated"); the loser simply tries again.
    """
    for attempt in range(5):
        try:
            return LedgerApp(env=env)
        except (PersistenceError, OSError) as e:
            if "concurrently" in str(e) and attempt < 4:
                time.sleep(0.05 * (attempt + 1))
                continue
            raise StoreError(f"--db {db}: cannot open the ledger: {e}") from None
    raise AssertionError("unreachable")


class Store:
    """The ledger's storage: append sealed envelopes, read streams and the global log."""

    def __init__(self, db: str):
        self.db = db
        env = _env_for(db)
        if _log_exists(db, env):
            env["CREATE_TABLE"] = "n"
        elif is_postgres(db):
            _ensure_schema(env)
        self.app = _open_app(db, env)
        self.recorder = self.app.recorder
        self.table_name = EVENTS_TABLE

    def close(self) -> None:
        self.app.close()

    # -- writing ---------------------------------------------------------------------------

    def append(self, envelopes: Sequence[Envelope], signer: Signer) -> list[int]:
        """Chain, sign and insert envelopes atomically; returns their global positions.

        Raises eventsourcing's IntegrityError when another writer took a stream
        position first (the caller re-reads and retries), StoreBusy when the
        write lock could not be had in time.
        """
        if not envelopes:
            return []
        try:
            recordings = self.app.save(*envelopes, sealer=Sealer(signer, envelopes))
        except IntegrityError:
            raise
        except OperationalError as e:
            raise StoreBusy(f"the ledger is busy (write lock not granted): {e}") from None
        return [r.notification.id for r in recordings]

    def append_stream(self, batches: Iterable[Sequence[Envelope]], signer: Signer) -> int:
        """Append batch after batch in ONE write transaction: all or nothing, one batch in memory.

        ``batches`` may be a generator that decides the next batch while the lock
        is held; if it raises, everything is rolled back and nothing is written.
        """
        recorder = self.recorder
        assert isinstance(recorder, (ChainedSQLiteApplicationRecorder, ChainedPostgresApplicationRecorder))
        mapper = self.app.mapper
        count = 0
        pending: tuple[list[StoredEvent], Sealer, list[tuple[bytes, bytes]], Callable[[], list[bytes]]] | None = None
        with SigningPool(signer) as signing, self.write_transaction() as c:
            if self.postgres:
                recorder._lock_table(c)
            head, head_state = recorder.read_head(c)
            # Batch k is chained here and signed by a worker while the loop pulls
            # (decides) batch k+1; it is inserted once its signatures are back.
            for batch in batches:
                if not batch:
                    continue
                stored = [mapper.to_stored_event(e) for e in batch]
                sealer = Sealer(signer, batch)
                links = sealer.chain(head, stored, head_state)
                head, head_state = links[-1][1], stored[-1].state
                signatures = signing.submit([digest for _prev, digest in links])
                if pending is not None:
                    self._insert_pending(c, pending)
                pending = (stored, sealer, links, signatures)
                count += len(batch)
            if pending is not None:
                self._insert_pending(c, pending)
        return count

    def _insert_pending(self, c: Any, pending: tuple[list[StoredEvent], Sealer, list[tuple[bytes, bytes]],
                                                     Callable[[], list[bytes]]]) -> None:
        stored, sealer, links, signatures = pending
        self.recorder.insert_sealed(c, stored, sealer.seals(links, signatures()))  # type: ignore[attr-defined]

    def insert_verbatim(self, records: Iterable[Record]) -> int:
        """Insert already-sealed rows as they are (a verified migration), in one transaction."""
        statement = self.sql(f"INSERT INTO {self._qualified} (originator_id, originator_version, topic, state, "
                             "event_id, prev_hash, hash, signature, key_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
        count = 0
        with self.write_transaction() as c:
            if self.postgres:
                self.recorder._lock_table(c)
            for r in records:
                c.execute(statement, (r.stream, r.stream_position, r.type, r.state, r.event_id, r.prev_hash,
                                      r.hash, r.signature, r.key_id))
                count += 1
        return count

    # -- reading ---------------------------------------------------------------------------

    def stream(self, stream: str, *, lte: int | None = None) -> list[Envelope]:
        """One stream's envelopes in stream order (optionally up to a stream position)."""
        return [
            Envelope.from_canonical(s.state)
            for s in self.recorder.select_events(stream, lte=lte)
        ]

    def stream_records(self, stream: str) -> list[Record]:
        """One stream's rows with their global positions, in stream order."""
        return self._query("WHERE originator_id = ? ORDER BY originator_version", (stream,))

    def streams(self) -> list[str]:
        """Every stream's id, sorted."""
        rows = self.fetch(f"SELECT DISTINCT originator_id AS s FROM {self._qualified} ORDER BY originator_id")
        return [r["s"] for r in rows]

    def table_exists(self, name: str) -> bool:
        if self.postgres:
            rows = self.fetch("SELECT to_regclass(?) IS NOT NULL AS e", (self.table(name),))
            return bool(rows[0]["e"])
        return bool(self.fetch("SELECT 1 AS e FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))

    def stream_position_at(self, stream: str, position: int) -> int:
        """A stream's last stream position among rows at or before global ``position``."""
        rows = self.fetch(f"SELECT MAX(originator_version) AS v FROM {self._qualified} "
                          f"WHERE originator_id = ? AND {self._pos} <= ?", (stream, position))
        return int(rows[0]["v"] or 0)

    def stream_length(self, stream: str) -> int:
        last = self.recorder.select_events(stream, desc=True, limit=1)
        return last[0].originator_version if last else 0

    def head_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def records(self, after: int = 0, *, batch: int = 2000, until: int | None = None) -> Iterator[Record]:
        """Every stored row in global order, in pages: memory stays flat."""
        while True:
            page = self._select_records(after, batch, until)
            if not page:
                return
            yield from page
            after = page[-1].position

    def page(self, after: int, limit: int) -> list[Record]:
        """The next ``limit`` rows after global position ``after``."""
        return self._select_records(after, limit, None)

    def record_by_event_id(self, event_id: str) -> Record | None:
        rows = self._query("WHERE event_id = ? LIMIT 1", (event_id,))
        return rows[0] if rows else None

    # -- SQL shared by both back ends -------------------------------------------------------
    # Statements are written once with "?" placeholders; PostgreSQL gets "%s".

    @property
    def postgres(self) -> bool:
        return is_postgres(self.db)

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.postgres else statement

    def table(self, name: str) -> str:
        """A table name, qualified with the ledger's schema on PostgreSQL."""
        return f'"{self.recorder.datastore.schema}"."{name}"' if self.postgres else name

    @property
    def _qualified(self) -> str:
        return self.table(self.table_name)

    @property
    def _pos(self) -> str:
        return "notification_id" if self.postgres else "rowid"

    def _select_records(self, after: int, limit: int, until: int | None) -> list[Record]:
        where, params = f"WHERE {self._pos} > ?", [after]
        if until is not None:
            where += f" AND {self._pos} <= ?"
            params.append(until)
        return self._query(f"{where} ORDER BY {self._pos} LIMIT {int(limit)}", tuple(params))

    def _query(self, tail: str, params: tuple[Any, ...]) -> list[Record]:
        statement = (
            f"SELECT {self._pos} AS position, originator_id, originator_version, topic, state, "
            f"event_id, prev_hash, hash, signature, key_id FROM {self._qualified} {tail}"
        )
        return [_record(row) for row in self.fetch(statement, params)]

    def count(self) -> int:
        rows = self.fetch(f"SELECT COUNT(*) AS n FROM {self._qualified}")
        return int(rows[0]["n"])

    def fetch(self, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of one read-only statement (rows index by column name on both back ends)."""
        datastore = self.recorder.datastore
        if self.postgres:
            with datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(self.sql(statement), params)
                return curs.fetchall()
        with datastore.transaction(commit=False) as c:
            c.execute(statement, params)
            return c.fetchall()

    @contextmanager
    def write_transaction(self) -> Iterator[Any]:
        """A cursor inside a write transaction that holds the write lock from its first statement.

        Use ``store.sql()`` on statements run through it. The projections use
        it to write their tables and eventsourcing's tracking row atomically.
        """
        datastore = self.recorder.datastore
        try:
            if self.postgres:
                with datastore.transaction(commit=True) as curs:
                    yield curs
                return
            with datastore.transaction(commit=True) as c:
                c.execute("ROLLBACK")
                c.execute("BEGIN IMMEDIATE")
                yield c
        except OperationalError as e:
            if "lock" in str(e).lower():
                raise StoreBusy(f"the ledger is busy (write lock not granted): {e}") from None
            raise StoreError(f"--db {self.db}: {e}") from None

    def execute_raw(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        """Run one statement outside the ledger's rules (tests simulate an attacker with it)."""
        with self.write_transaction() as c:
            c.execute(self.sql(statement), params)


def _record(row: Any) -> Record:
    """A row as stored. Damaged columns are kept as found: the verifier reports them."""
    try:  # the common case: every column has its proper type
        state, prev, digest, sig = row["state"], row["prev_hash"], row["hash"], row["signature"]
        if type(state) is bytes and type(prev) is bytes and type(digest) is bytes and type(sig) is bytes:
            return Record(row["position"], row["originator_id"], row["originator_version"], row["topic"],
                          row["event_id"], state, prev, digest, sig, row["key_id"])
    except (KeyError, IndexError):
        pass
    return _damaged_record(row)


def _damaged_record(row: Any) -> Record:
    def _bytes(v: Any) -> bytes:
        if isinstance(v, (bytes, bytearray, memoryview)):
            return bytes(v)
        if isinstance(v, str):
            return v.encode("utf-8", "surrogateescape")
        return b"" if v is None else str(v).encode()

    def _text(v: Any) -> str:
        if isinstance(v, (bytes, bytearray, memoryview)):
            return bytes(v).decode("utf-8", "replace")
        return "" if v is None else str(v)

    def _int(v: Any) -> int:
        try:
            return int(v)
        except (TypeError, ValueError):
            return -1

    return Record(
        position=_int(row["position"]),
        stream=_text(row["originator_id"]),
        stream_position=_int(row["originator_version"]),
        type=_text(row["topic"]),
        event_id=_text(row["event_id"]),
        state=_bytes(row["state"]),
        prev_hash=_bytes(row["prev_hash"]),
        hash=_bytes(row["hash"]),
        signature=_bytes(row["signature"]),
        key_id=_text(row["key_id"]),
    )
