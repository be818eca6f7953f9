"""Where the ledger lives: the ``--db`` value parsed once, and nothing else.

Only ``--db`` (or ``$TRIAL_LEDGER_DB``, which click maps onto it) decides
where data goes. The process environment is never consulted for a host, a
file or a schema: a ledger writes where it was told, or refuses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlparse

LOCK_TIMEOUT_ENV = "TRIAL_LEDGER_LOCK_TIMEOUT"
# libpq reads these for any connection parameter not given, and PGHOSTADDR even beside a given host:
# each could send data to another server, database, schema (search_path in PGOPTIONS) or service.
LIBPQ_LOCATION_ENV = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGOPTIONS", "PGSERVICE",
                      "PGSERVICEFILE", "PGSYSCONFDIR", "PGTARGETSESSIONATTRS", "PGLOADBALANCEHOSTS")
"""Seconds a writer waits for the write lock; a wait, never a destination."""


def is_postgres(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


@dataclass(frozen=True, slots=True)
class Location:
    """A parsed ``--db``: a SQLite file, or a PostgreSQL database and schema."""

    db: str
    postgres: bool
    path: str = ""
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = ""
    dbname: str = "postgres"
    schema: str = "public"
    lock_timeout: str = "10"

    @classmethod
    def parse(cls, db: str) -> Location:
        lock_timeout = os.environ.get(LOCK_TIMEOUT_ENV, "10")
        if not is_postgres(db):
            return cls(db=db, postgres=False, path=db, lock_timeout=lock_timeout)
        for name in LIBPQ_LOCATION_ENV:  # this process connects only where --db says
            os.environ.pop(name, None)
        url = urlparse(db)
        query = parse_qs(url.query)
        return cls(
            db=db, postgres=True,
            host=url.hostname or "127.0.0.1",
            port=url.port or 5432,
            user=unquote(url.username or "postgres"),
            password=unquote(url.password or ""),
            dbname=unquote(url.path.lstrip("/")) or "postgres",
            schema=query.get("schema", ["public"])[0],
            lock_timeout=query.get("lock_timeout", [lock_timeout])[0],
        )

    def connect_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``psycopg.connect``, every one given (so libpq's PG* defaults never apply)."""
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password or None,
                "dbname": self.dbname, "connect_timeout": 5}
