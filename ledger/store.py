"""The storage port: append sealed envelopes, read streams and the global log, run SQL.

Backend-neutral: statements use ``?`` placeholders and names from
:meth:`Store.table`; cursors from :meth:`Store.write_transaction` translate
them (see :mod:`ledger.dialect`). Only ledger types and ledger errors cross
this boundary; eventsourcing lives behind it in :mod:`ledger.adapter`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ledger.adapter import Backend, to_stored
from ledger.dialect import Cursor, Dialect
from ledger.envelope import Envelope, Record
from ledger.errors import PositionTaken
from ledger.keys import Signer
from ledger.location import Location, is_postgres
from ledger.rows import EVENT_COLUMNS, EVENTS_TABLE, RECORD_COLUMNS, as_bytes, record_of_tuple, record_values
from ledger.sealing import Sealer
from ledger.signing_pool import SigningPool

__all__ = ["EVENTS_TABLE", "EVENT_COLUMNS", "Store", "is_postgres"]


class Store:
    """The ledger's storage.

    ``create=False`` refuses (exit 2) when ``db`` holds no ledger, and
    creates nothing; commands other than init, demo and import use it.
    """

    def __init__(self, db: str, *, create: bool = True):
        self.db = db
        self.location = Location.parse(db)
        self.backend = Backend(self.location, create=create)
        self.dialect = Dialect(postgres=self.location.postgres, schema=self.location.schema)
        self.table_name = EVENTS_TABLE
        # (head hash the last append chained onto, hash of its last row): lets the writer attest what it wrote.
        self.last_sealed: tuple[bytes, bytes] | None = None

    def close(self) -> None:
        self.backend.close()

    # -- writing ---------------------------------------------------------------------------

    def append(self, envelopes: Sequence[Envelope], signer: Signer) -> list[int]:
        """Chain, sign and insert envelopes atomically; returns their global positions.

        Raises PositionTaken when another writer took a stream position (or the
        event id) first (the caller re-reads and retries), StoreBusy when the
        write lock could not be had in time.
        """
        if not envelopes:
            return []
        self.last_sealed = None
        sealer = Sealer(signer, envelopes)
        positions = self.backend.save(envelopes, sealer)
        self.last_sealed = sealer.span
        return positions

    def append_stream(self, batches: Iterable[Sequence[Envelope]], signer: Signer) -> int:
        """Append batch after batch in ONE write transaction: all or nothing, one batch in memory.

        ``batches`` may be a generator that decides the next batch while the lock
        is held; if it raises, everything is rolled back and nothing is written.
        """
        backend = self.backend
        count = 0
        self.last_sealed = None
        pending: tuple[list[Any], Sealer, list[tuple[bytes, bytes]], Callable[[], list[bytes]]] | None = None
        with SigningPool(signer) as signing, backend.transaction(write=True, conflict=PositionTaken) as c:
            backend.lock_log(c)
            head, head_state = backend.read_head(c), backend.read_head_state(c)
            first = head
            # Batch k is chained here and signed by a worker while the loop pulls
            # (decides) batch k+1; it is inserted once its signatures are back.
            for batch in batches:
                if not batch:
                    continue
                stored = [to_stored(e) for e in batch]
                sealer = Sealer(signer, batch)
                links = sealer.chain(head, stored, head_state)  # refuses a clock that ran back (ledger/clock.py)
                head, head_state = links[-1][1], stored[-1].state
                signatures = signing.submit([digest for _prev, digest in links])
                if pending is not None:
                    self._insert_pending(c, pending)
                pending = (stored, sealer, links, signatures)
                count += len(batch)
            if pending is not None:
                self._insert_pending(c, pending)
        if count:
            self.last_sealed = (first, head)
        return count

    def _insert_pending(self, c: Any, pending: tuple[list[Any], Sealer, list[tuple[bytes, bytes]],
                                                     Callable[[], list[bytes]]]) -> None:
        stored, sealer, links, signatures = pending
        self.backend.insert_sealed(c, stored, sealer.seals(links, signatures()))

    def insert_verbatim(self, records: Iterable[Record]) -> int:
        """Insert already-sealed rows as they are (a verified migration), in one transaction."""
        statement = (f"INSERT INTO {self.events_table} ({', '.join(EVENT_COLUMNS)}) "
                     f"VALUES ({', '.join('?' * len(EVENT_COLUMNS))})")
        count = 0
        with self.backend.transaction(write=True, conflict=PositionTaken) as raw:
            self.backend.lock_log(raw)
            c = Cursor(raw, self.dialect)
            for r in records:
                c.execute(statement, record_values(r))
                count += 1
        return count

    # -- reading ---------------------------------------------------------------------------

    def stream(self, stream: str, *, lte: int | None = None) -> list[Envelope]:
        """One stream's envelopes in stream order (optionally up to a stream position)."""
        return [Envelope.from_canonical(state) for state in self.backend.stream(stream, lte)]

    def stream_records(self, stream: str) -> list[Record]:
        """One stream's rows with their global positions, in stream order."""
        return self._query("WHERE originator_id = ? ORDER BY originator_version", (stream,))

    def streams(self) -> list[str]:
        """Every stream's id, sorted."""
        rows = self.fetch(f"SELECT DISTINCT originator_id AS s FROM {self.events_table} ORDER BY originator_id")
        return [r["s"] for r in rows]

    def table_exists(self, name: str) -> bool:
        if self.postgres:
            rows = self.fetch("SELECT to_regclass(?) IS NOT NULL AS e", (self.table(name),))
            return bool(rows[0]["e"])
        return bool(self.fetch("SELECT 1 AS e FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))

    def stream_position_at(self, stream: str, position: int) -> int:
        """A stream's last stream position among rows at or before global ``position``."""
        rows = self.fetch(f"SELECT MAX(originator_version) AS v FROM {self.events_table} "
                          f"WHERE originator_id = ? AND {self.dialect.position} <= ?", (stream, position))
        return int(rows[0]["v"] or 0)

    def stream_length(self, stream: str) -> int:
        return self.backend.stream_length(stream)

    def head_position(self) -> int:
        return self.backend.head_position()

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

    def hashes(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """(position, stored hash) of the next ``limit`` rows: what the Merkle tree needs, without the rest."""
        pos = self.dialect.position
        rows = self.fetch(f"SELECT {pos} AS position, hash FROM {self.events_table} WHERE {pos} > ? "
                          f"ORDER BY {pos} LIMIT {int(limit)}", (after,))
        return [(r["position"], h if type(h := r["hash"]) is bytes else as_bytes(h)) for r in rows]

    def record_by_event_id(self, event_id: str) -> Record | None:
        rows = self._query("WHERE event_id = ? LIMIT 1", (event_id,))
        return rows[0] if rows else None

    def record_at(self, position: int) -> Record | None:
        """The row at global ``position``, if there is one."""
        rows = self._query(f"WHERE {self.dialect.position} = ?", (position,))
        return rows[0] if rows else None

    def count(self) -> int:
        rows = self.fetch(f"SELECT COUNT(*) AS n FROM {self.events_table}")
        return int(rows[0]["n"])

    # -- tracked positions -----------------------------------------------------------------

    def ensure_tracking(self) -> None:
        """Create the tracked-positions table if missing; call it outside any transaction."""
        self.backend.ensure_tracking()

    def tracked_position(self, name: str) -> int:
        """The last global position a named consumer (e.g. the projections) recorded; 0 if none."""
        return self.backend.tracked_position(name)

    def track(self, c: Cursor, name: str, position: int) -> None:
        """Record ``position`` for ``name`` inside ``c``'s transaction; StoreConflict if not new."""
        self.backend.track(c.raw, name, position)

    def forget_position(self, c: Cursor, name: str) -> None:
        """Drop a consumer's tracked position inside ``c``'s transaction (it starts again from 0)."""
        c.execute(f"DELETE FROM {self.table(self.backend.tracking_table)} WHERE application_name = ?", (name,))

    # -- SQL shared by both back ends -------------------------------------------------------

    @property
    def postgres(self) -> bool:
        return self.location.postgres

    def sql(self, statement: str) -> str:
        """Kept for callers written before :class:`~ledger.dialect.Cursor`: statements now pass unchanged.

        Every cursor the store hands out translates ``?`` itself.
        """
        return statement

    def table(self, name: str) -> str:
        """A table name, qualified with the ledger's schema on PostgreSQL."""
        return self.dialect.table(name)

    @property
    def events_table(self) -> str:
        """The events table's name as written in SQL."""
        return self.table(self.table_name)

    _qualified = events_table  # the name tests written before the split use

    @property
    def position_column(self) -> str:
        return self.dialect.position

    def _select_records(self, after: int, limit: int, until: int | None) -> list[Record]:
        pos = self.dialect.position
        where, params = f"WHERE {pos} > ?", [after]
        if until is not None:
            where += f" AND {pos} <= ?"
            params.append(until)
        return self._query(f"{where} ORDER BY {pos} LIMIT {int(limit)}", tuple(params))

    def _query(self, tail: str, params: tuple[Any, ...]) -> list[Record]:
        columns = ", ".join(RECORD_COLUMNS[1:])
        statement = f"SELECT {self.dialect.position} AS position, {columns} FROM {self.events_table} {tail}"
        with self.backend.read_cursor() as raw:
            self._plain_rows(raw)
            rows = Cursor(raw, self.dialect).execute(statement, params).fetchall()
        return [record_of_tuple(row) for row in rows]

    def _plain_rows(self, raw: Any) -> None:
        """Let ``raw`` (a cursor of its own, closed after one statement) return plain tuples."""
        if self.postgres:
            from psycopg.rows import tuple_row

            raw.row_factory = tuple_row
        else:
            raw.row_factory = None

    def fetch(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of one read-only statement (rows index by column name on both back ends)."""
        with self.backend.read_cursor() as raw:
            return Cursor(raw, self.dialect).execute(statement, params).fetchall()

    @contextmanager
    def write_transaction(self) -> Iterator[Cursor]:
        """A cursor inside a write transaction that holds the write lock from its first statement.

        It takes ``?`` placeholders on both back ends. The projections use it to
        write their tables and their tracked position atomically.
        """
        with self.backend.transaction(write=True) as raw:
            yield Cursor(raw, self.dialect)

    def execute_raw(self, statement: str, params: Sequence[Any] = ()) -> None:
        """Run one statement outside the ledger's rules (tests simulate an attacker with it)."""
        with self.write_transaction() as c:
            c.execute(statement, params)
