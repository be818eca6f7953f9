"""The one place SQL is adapted to the back end: placeholders and identifiers.

Every statement in the project is written once, with ``?`` placeholders and
unquoted names; :class:`Dialect` turns it into what the driver expects.
:class:`Cursor` applies it to every ``execute``/``executemany``, so a write
cursor cannot forget it (the bug that broke only on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class Dialect:
    """SQLite (``?``, bare names) or PostgreSQL (``%s``, names qualified with the ledger's schema)."""

    def __init__(self, *, postgres: bool, schema: str = "public"):
        self.postgres = postgres
        self.schema = schema

    @property
    def position(self) -> str:
        """The column holding an event's global position."""
        return "notification_id" if self.postgres else "rowid"

    @property
    def blob(self) -> str:
        return "BYTEA" if self.postgres else "BLOB"

    @staticmethod
    def quote(name: str) -> str:
        """A double-quoted SQL identifier (embedded quotes doubled)."""
        return '"' + name.replace('"', '""') + '"'

    def table(self, name: str) -> str:
        """A table name, qualified with the ledger's schema on PostgreSQL."""
        return f"{self.quote(self.schema)}.{self.quote(name)}" if self.postgres else name

    def placeholders(self, statement: str, *, has_params: bool = True) -> str:
        """``?`` outside quotes becomes ``%s`` on PostgreSQL; a literal ``%`` is escaped when params are bound."""
        if not self.postgres or not has_params:
            return statement
        out: list[str] = []
        quote: str | None = None
        for ch in statement:
            if ch == "%":
                out.append("%%")
            elif quote is not None:
                out.append(ch)
                if ch == quote:
                    quote = None
            elif ch in ("'", '"'):
                quote = ch
                out.append(ch)
            elif ch == "?":
                out.append("%s")
            else:
                out.append(ch)
        return "".join(out)


class Cursor:
    """A driver cursor that speaks the project's ``?`` SQL on either back end.

    Rows index by column name on both back ends (sqlite3.Row / psycopg dict_row).
    """

    def __init__(self, raw: Any, dialect: Dialect):
        self.raw = raw
        self.dialect = dialect

    def execute(self, statement: str, params: Sequence[Any] | None = None) -> Cursor:
        if params is None or len(params) == 0:
            self.raw.execute(statement)
        else:
            self.raw.execute(self.dialect.placeholders(statement), tuple(params))
        return self

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in rows]
        if rows:
            self.raw.executemany(self.dialect.placeholders(statement), rows)

    def fetchall(self) -> list[Any]:
        return list(self.raw.fetchall())

    def fetchone(self) -> Any:
        return self.raw.fetchone()

    @property
    def rowcount(self) -> int:
        return int(self.raw.rowcount)
