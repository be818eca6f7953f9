"""Log mutations an attacker with owner rights can make, written once for SQLite and PostgreSQL.

``Sql`` hides the two drivers' placeholder styles and the name of the position
column (SQLite's rowid, PostgreSQL's notification_id); the mutations themselves
are the same statements on both back ends.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

COLUMNS = (
    "originator_id",
    "originator_version",
    "topic",
    "state",
    "event_id",
    "prev_hash",
    "hash",
    "signature",
    "key_id",
)
KINDS = ("flip", "delete", "duplicate", "insert", "reorder", "truncate", "outside")


class KeyClash(Exception):
    """The mutation hit a unique key (e.g. S01-000 -> S01-001); the caller's driver error, normalised."""


@dataclass
class Sql:
    execute: Callable[[str, Sequence[Any]], None]
    fetch: Callable[[str], list[Sequence[Any]]]
    table: str
    pos: str


def mutate_log(db: Sql, rng: random.Random, kind: str) -> None:
    t, pos = db.table, db.pos
    rows = db.fetch(f"SELECT {pos}, {', '.join(COLUMNS)} FROM {t} ORDER BY {pos}")
    cols = [pos, *COLUMNS]
    insert = f"INSERT INTO {t} ({pos}, {', '.join(COLUMNS)}) VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"
    n = len(rows)
    if kind == "flip":
        r, col = rng.randrange(n), rng.randrange(1, len(cols))
        value = rows[r][col]
        if isinstance(value, int):
            new: object = value + rng.choice([-1000, 1000])
        elif isinstance(value, str):
            i = rng.randrange(len(value))
            new = value[:i] + chr((ord(value[i]) + 1) % 0x7F or 0x41) + value[i + 1 :]
        else:
            b = bytearray(value)
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            new = bytes(b)
        try:
            db.execute(f"UPDATE {t} SET {cols[col]} = ? WHERE {pos} = ?", (new, rows[r][0]))
        except KeyClash:
            db.execute(f"UPDATE {t} SET {cols[col]} = {cols[col]} || '~' WHERE {pos} = ?", (rows[r][0],))
    elif kind == "delete":
        r = rng.randrange(n - 1)  # the newest alone is only visible with a checkpoint: see "truncate"
        db.execute(f"DELETE FROM {t} WHERE {pos} = ?", (rows[r][0],))
    elif kind == "duplicate":
        src = rows[rng.randrange(n)]
        db.execute(insert, (rows[-1][0] + 1, src[1], src[2] + 10_000, src[3], src[4], src[5] + "-dup", *src[6:]))
    elif kind == "insert":
        src = rows[rng.randrange(n)]
        at = rows[rng.randrange(n)][0]
        db.execute(f"UPDATE {t} SET {pos} = {pos} + 100000 WHERE {pos} >= ?", (at,))
        db.execute(insert, (at, src[1], src[2] + 20_000, src[3], src[4], src[5] + "-ins", *src[6:]))
    elif kind == "reorder":
        a, b = rng.sample(range(n), 2)
        db.execute(f"UPDATE {t} SET {pos} = -1 WHERE {pos} = ?", (rows[a][0],))
        db.execute(f"UPDATE {t} SET {pos} = ? WHERE {pos} = ?", (rows[a][0], rows[b][0]))
        db.execute(f"UPDATE {t} SET {pos} = ? WHERE {pos} = -1", (rows[b][0],))
    elif kind == "truncate":
        k = rng.randrange(1, n)
        db.execute(f"DELETE FROM {t} WHERE {pos} > ?", (rows[n - k - 1][0],))
    elif kind == "outside":  # a copy at an id the chain never reaches: zero or below, another stream position
        src = rows[rng.randrange(n)]
        db.execute(insert, (-rng.randrange(0, 1000), src[1], src[2] + 30_000, src[3], src[4], src[5] + "-out",
                            *src[6:]))
    else:
        raise ValueError(kind)
