"""The witness's memory: one SQLite file, checked and updated in one transaction.

Per tlog-witness, checking the old size against the stored size and storing
the new checkpoint must be atomic, or two racing requests can roll the
stored size back. Each update is a ``BEGIN IMMEDIATE`` transaction (the
write lock is taken *before* the stored size is read), committed with
``synchronous=FULL`` so it is on disk before the witness answers: a
``kill -9`` after a 200 never loses the size that was cosigned.

Requests that prove a log misbehaved (a valid log signature with a failed
consistency proof, or a second root for a size) are kept in the same file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DDL = (
    ("CREATE TABLE IF NOT EXISTS logs (origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL, "
     "note TEXT NOT NULL)"),
    ("CREATE TABLE IF NOT EXISTS evidence (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, "
     "origin TEXT NOT NULL, reason TEXT NOT NULL, stored_note TEXT, request TEXT NOT NULL)"),
)


@dataclass(frozen=True)
class Latest:
    size: int
    root: bytes
    note: str


class Transaction:
    """What a request may do while it holds the write lock."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def latest(self, origin: str) -> Latest | None:
        row = self.conn.execute("SELECT size, root, note FROM logs WHERE origin = ?", (origin,)).fetchone()
        return Latest(int(row[0]), bytes(row[1]), row[2]) if row else None

    def store(self, origin: str, size: int, root: bytes, note: str) -> None:
        self.conn.execute("INSERT INTO logs (origin, size, root, note) VALUES (?, ?, ?, ?) "
                          "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root, "
                          "note = excluded.note", (origin, size, root, note))

    def keep_evidence(self, at: str, origin: str, reason: str, stored_note: str | None, request: str) -> None:
        self.conn.execute("INSERT INTO evidence (at, origin, reason, stored_note, request) VALUES (?, ?, ?, ?, ?)",
                          (at, origin, reason, stored_note, request))


class WitnessState:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        with self.transaction():
            for ddl in DDL:
                self.conn.execute(ddl)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One request's check and update, serialised in this process (lock) and across processes (SQLite)."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(self.conn)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def latest(self, origin: str) -> Latest | None:
        with self._lock:
            return Transaction(self.conn).latest(origin)

    def logs(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.conn.execute("SELECT origin, size, note FROM logs ORDER BY origin").fetchall()
        return [{"origin": r[0], "size": int(r[1]), "note": r[2]} for r in rows]

    def evidence(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.conn.execute(
                "SELECT id, at, origin, reason, stored_note, request FROM evidence ORDER BY id").fetchall()
        return [{"id": r[0], "at": r[1], "origin": r[2], "reason": r[3], "stored_checkpoint": r[4], "request": r[5]}
                for r in rows]

    def close(self) -> None:
        with self._lock:
            self.conn.close()
