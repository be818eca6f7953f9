"""The log of refused attempts (21 CFR 11.300(d): unauthorised attempts are detected and reported).

A separate append-only table beside the ledger, NOT part of the signed clinical chain: a refused
write never adds a clinical row, so the chain stays "what was accepted". Each row holds when,
who claimed to act (user id and key id, as far as known), the command, event type, participant
and the refusal's one-line reason, and never the payload (it may hold clinical data that was
refused). UPDATE and DELETE are refused by triggers, as on the events table; an owner can drop
the triggers, so this is an operational record, not evidence like the chain.

The table is created by ``init`` (or, for a ledger older than it, on the first refusal). A refusal against a database
that does not exist (or holds no ledger) logs nothing: a refused command creates nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.store import Store

TABLE = "security_log"
COLUMNS = ("recorded_at", "user_id", "key_id", "command", "event_type", "participant", "reason")
BURST_WINDOW = timedelta(minutes=10)
BURST_COUNT = 3  # this many refusals for one key inside the window are flagged


@dataclass(frozen=True)
class Refusal:
    recorded_at: str
    user_id: str | None
    key_id: str | None
    command: str | None
    event_type: str | None
    participant: str | None
    reason: str


def _ddl(store: Store) -> list[str]:
    t = store.table(TABLE)
    columns = ("recorded_at TEXT NOT NULL, user_id TEXT, key_id TEXT, command TEXT, event_type TEXT, "
               "participant TEXT, reason TEXT NOT NULL")
    if store.postgres:
        schema = t.split(".")[0]
        guard = f'{schema}."{TABLE}_append_only"'
        body = "$$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END; $$"
        return [
            f"CREATE TABLE IF NOT EXISTS {t} (id BIGSERIAL PRIMARY KEY, {columns})",
            f"CREATE OR REPLACE FUNCTION {guard}() RETURNS trigger LANGUAGE plpgsql AS {body}",
            (f'CREATE OR REPLACE TRIGGER "{TABLE}_no_update_delete" BEFORE UPDATE OR DELETE ON {t} '
             f"FOR EACH ROW EXECUTE FUNCTION {guard}()"),
            (f'CREATE OR REPLACE TRIGGER "{TABLE}_no_truncate" BEFORE TRUNCATE ON {t} '
             f"FOR EACH STATEMENT EXECUTE FUNCTION {guard}()"),
        ]
    return [
        f"CREATE TABLE IF NOT EXISTS {t} (id INTEGER PRIMARY KEY AUTOINCREMENT, {columns})",
        (f"CREATE TRIGGER IF NOT EXISTS {TABLE}_no_update BEFORE UPDATE ON {t} "
         f"BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only'); END"),
        (f"CREATE TRIGGER IF NOT EXISTS {TABLE}_no_delete BEFORE DELETE ON {t} "
         f"BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only'); END"),
    ]


def ensure(store: Store) -> None:
    """Create the table and its guards (``init`` does, so the owner owns them; see docs/least-privilege.sql)."""
    if store.table_exists(TABLE):
        return
    with store.write_transaction() as c:
        for statement in _ddl(store):
            c.execute(statement)


def record(store: Store, refusal: Refusal) -> None:
    """Append one refusal (creating the table in this existing ledger if ``init`` predates it)."""
    ensure(store)
    with store.write_transaction() as c:
        c.execute(store.sql(f"INSERT INTO {store.table(TABLE)} ({', '.join(COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(COLUMNS))})"),
                  tuple(asdict(refusal)[k] for k in COLUMNS))


def read(store: Store, since: datetime | None = None) -> list[dict[str, Any]]:
    """Refusals in order, each with ``flagged`` when its key had a burst of refusals around it."""
    if not store.table_exists(TABLE):
        return []
    rows = [{k: r[k] for k in ("id", *COLUMNS)}
            for r in store.fetch(f"SELECT id, {', '.join(COLUMNS)} FROM {store.table(TABLE)} ORDER BY id")]
    times = [datetime.fromisoformat(r["recorded_at"]) for r in rows]
    by_key: dict[str, list[int]] = {}
    for n, row in enumerate(rows):
        row["flagged"] = False
        if row["key_id"]:
            by_key.setdefault(row["key_id"], []).append(n)
    for indices in by_key.values():
        start = 0
        for end, n in enumerate(indices):  # sliding window over this key's refusals, in time order
            while times[n] - times[indices[start]] > BURST_WINDOW:
                start += 1
            if end - start + 1 >= BURST_COUNT:
                for m in indices[start:end + 1]:
                    rows[m]["flagged"] = True
    if since is not None:
        rows = [r for r, t in zip(rows, times, strict=True) if t >= since]
    return rows


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
