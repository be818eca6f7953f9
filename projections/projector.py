"""Materialised projections with eventsourcing tracking (SPEC §7).

Tables live in the ledger's own database. Each page of the global log is
projected in one transaction together with eventsourcing's tracking row, so
a crash never leaves a half-projected page, and each read command first
catches up from the tracked position. ``rebuild`` clears the tables and the
tracking row and projects the whole log again; the result equals the
incremental one (tested).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from eventsourcing.persistence import IntegrityError, Tracking

from domain.protocol import Protocol
from domain.service import Trial
from domain.signers import STUDY_STREAM, SignerRegistry
from ledger.chain import link_hash
from ledger.envelope import Envelope, Record
from ledger.keys import verify_signature
from ledger.store import Store
from ledger.verify import Unauthorised
from projections import audit, state as states
from projections.summary import summarise

TRACKING_NAME = "projections"
PAGE = 2000

DDL = (
    "CREATE TABLE IF NOT EXISTS {participants} (participant TEXT PRIMARY KEY, status TEXT, site TEXT, "
    "state TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {audit} (position BIGINT NOT NULL, seq INTEGER NOT NULL, event_id TEXT, "
    "recorded_at TEXT, recorded_us BIGINT, occurred_at TEXT, user_id TEXT, user_name TEXT, role TEXT, "
    "participant TEXT, event_type TEXT, field TEXT, old_value TEXT, new_value TEXT, reason TEXT, meaning TEXT, "
    "target_event_id TEXT, hash TEXT, signature_verified INTEGER, PRIMARY KEY (position, seq))",
    "CREATE INDEX IF NOT EXISTS proj_audit_participant ON {audit} (participant, position)",
    "CREATE INDEX IF NOT EXISTS proj_audit_user ON {audit} (user_id, position)",
    "CREATE TABLE IF NOT EXISTS {deviations} (participant TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT, "
    "important INTEGER, event_ids TEXT, first_position BIGINT, message TEXT, PRIMARY KEY (participant, seq))",
    "CREATE TABLE IF NOT EXISTS {summary} (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
TABLES = ("participants", "audit", "deviations", "summary")


class Projections:
    def __init__(self, store: Store):
        self.store = store
        self.trial = Trial(store)
        self.tracking = store.app.factory.tracking_recorder()
        self.names = {t: store.table(f"proj_{t}") for t in TABLES}
        with store.write_transaction() as c:
            for ddl in DDL:
                c.execute(ddl.format(**self.names))

    # -- catching up ---------------------------------------------------------------------------

    def position(self) -> int:
        return self.tracking.max_tracking_id(TRACKING_NAME) or 0

    def catch_up(self, on_progress: Callable[[int], None] | None = None) -> int:
        """Project every event after the tracked position; returns how many were projected."""
        last = self.position()
        done = 0
        registry = self.trial.registry_at(last) if last else SignerRegistry()
        while True:
            page = self.store.page(after=last, limit=PAGE)
            if not page:
                return done
            try:
                self._project_page(page, registry)
            except IntegrityError:
                # Another process projected this page first; start again from where it got to.
                last = self.position()
                registry = self.trial.registry_at(last)
                continue
            last = page[-1].position
            done += len(page)
            if on_progress:
                on_progress(len(page))

    def _project_page(self, page: list[Record], registry: SignerRegistry) -> None:
        cache: dict[str, dict[str, Any]] = {}
        audit_rows: list[dict[str, Any]] = []
        touched: set[str] = set()
        recompute_all = False
        with self.store.write_transaction() as c:
            for record in page:
                try:
                    env = record.envelope()
                except Exception:  # noqa: BLE001 - a damaged row is verify's to report, not ours to crash on
                    continue
                signer, verified = self._signer(registry, env, record)
                target_data = None
                if env.stream != STUDY_STREAM:
                    st = cache.get(env.stream) or self._load_state(c, env.stream)
                    cache[env.stream] = st
                    target = st["entries"].get(str(env.data.get("target_event_id")))
                    target_data = dict(target["data"]) if target else None
                    states.apply(st, env, record.position)
                    touched.add(env.stream)
                else:
                    registry.observe(env)
                    recompute_all |= env.type == "ProtocolAmended"
                audit_rows.extend(audit.rows_for(record, env, signer, verified, target_data))
            end = page[-1].position
            self._write_states(c, cache)
            self._write_audit(c, audit_rows)
            if recompute_all:
                touched |= {row["participant"] for row in self._fetch_c(c, f"SELECT participant FROM {self.names['participants']}")}
            if registry.protocol is not None:
                self._write_deviations(c, sorted(touched), end, registry.protocol)
            self._write_summary(c, registry)
            self.tracking._insert_tracking(c, Tracking(TRACKING_NAME, end))

    def _signer(self, registry: SignerRegistry, env: Envelope, record: Record) -> tuple[audit.Signer, bool]:
        try:
            public = registry.authorise(env)
        except Unauthorised:
            public = None
        entry = registry.signer_for_key(env.key_id)
        if env.type == "StudyInitialised":
            signer = audit.Signer(env.author, str(env.data.get("admin_name")), "admin")
        elif entry is not None:
            signer = audit.Signer(entry.user_id, entry.name, entry.role)
        else:
            signer = audit.Signer(env.author, "(unknown signer)", "(none)")
        verified = (
            public is not None
            and link_hash(record.state, record.prev_hash) == record.hash
            and verify_signature(public, record.signature, record.hash)
        )
        return signer, verified

    # -- writing -------------------------------------------------------------------------------

    def _fetch_c(self, c: Any, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
        c.execute(self.store.sql(statement), params)
        return c.fetchall()

    def _load_state(self, c: Any, participant: str) -> dict[str, Any]:
        rows = self._fetch_c(c, f"SELECT state FROM {self.names['participants']} WHERE participant = ?", (participant,))
        return json.loads(rows[0]["state"]) if rows else states.empty_state(participant)

    def _write_states(self, c: Any, cache: dict[str, dict[str, Any]]) -> None:
        statement = self.store.sql(
            f"INSERT INTO {self.names['participants']} (participant, status, site, state) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (participant) DO UPDATE SET status = excluded.status, site = excluded.site, "
            "state = excluded.state")
        c.executemany(statement, [(p, s["status"], s["site"], json.dumps(s, sort_keys=True))
                                  for p, s in sorted(cache.items())])

    def _write_audit(self, c: Any, rows: list[dict[str, Any]]) -> None:
        columns = [*audit.COLUMNS, "recorded_us"]
        statement = self.store.sql(
            f"INSERT INTO {self.names['audit']} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})")
        c.executemany(statement, [tuple(int(r[k]) if k == "signature_verified" else r[k] for k in columns)
                                  for r in rows])

    def _write_deviations(self, c: Any, participants: list[str], upto: int, protocol: Protocol) -> None:
        table = self.names["deviations"]
        for participant in participants:
            found = self.trial.deviations(participant, upto=upto, protocol=protocol)
            c.execute(self.store.sql(f"DELETE FROM {table} WHERE participant = ?"), (participant,))
            c.executemany(self.store.sql(
                f"INSERT INTO {table} (participant, seq, kind, important, event_ids, first_position, message) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)"),
                [(participant, n, d.kind, int(d.important), json.dumps(list(d.event_ids)), d.first_position,
                  d.message) for n, d in enumerate(found)])

    def _write_summary(self, c: Any, registry: SignerRegistry) -> None:
        all_states = [json.loads(r["state"]) for r in self._fetch_c(c, f"SELECT state FROM {self.names['participants']}")]
        devs = [dict(r) for r in self._fetch_c(c, f"SELECT kind, important FROM {self.names['deviations']}")]
        target = registry.protocol.target_enrolment if registry.protocol else None
        summary = summarise(all_states, devs, target)
        c.execute(self.store.sql(f"DELETE FROM {self.names['summary']}"))
        c.executemany(self.store.sql(f"INSERT INTO {self.names['summary']} (name, value) VALUES (?, ?)"),
                      [(k, json.dumps(v, sort_keys=True)) for k, v in sorted(summary.items())])

    # -- rebuild -------------------------------------------------------------------------------

    def rebuild(self, on_progress: Callable[[int], None] | None = None) -> int:
        tracking_table = self.store.table(getattr(self.tracking, "tracking_table_name", "tracking"))
        with self.store.write_transaction() as c:
            for name in self.names.values():
                c.execute(f"DELETE FROM {name}")
            c.execute(self.store.sql(f"DELETE FROM {tracking_table} WHERE application_name = ?"), (TRACKING_NAME,))
        return self.catch_up(on_progress)

    # -- reading -------------------------------------------------------------------------------

    def participant(self, participant: str) -> dict[str, Any] | None:
        rows = self.store.fetch(f"SELECT state FROM {self.names['participants']} WHERE participant = ?",
                                (participant,))
        return json.loads(rows[0]["state"]) if rows else None

    def participants(self, status: str | None = None) -> list[dict[str, Any]]:
        statement = f"SELECT participant, status, site, state FROM {self.names['participants']}"
        params: tuple[Any, ...] = ()
        if status:
            statement += " WHERE status = ?"
            params = (status,)
        rows = self.store.fetch(statement + " ORDER BY participant", params)
        out = []
        for row in rows:
            st = json.loads(row["state"])
            out.append({"participant": row["participant"], "status": row["status"], "site": row["site"],
                        "consent": st["consent"]["status"],
                        "doses": sum(1 for d in st["doses"] if not d["voided"]),
                        "adverse_events": sum(1 for a in st["adverse_events"].values() if not a["voided"]),
                        "events": st["events"]})
        return out

    def deviations(self, participant: str | None = None) -> list[dict[str, Any]]:
        statement = (f"SELECT participant, kind, important, event_ids, first_position, message "
                     f"FROM {self.names['deviations']}")
        params: tuple[Any, ...] = ()
        if participant:
            statement += " WHERE participant = ?"
            params = (participant,)
        rows = self.store.fetch(statement + " ORDER BY participant, seq", params)
        return [{"participant": r["participant"], "kind": r["kind"], "important": bool(r["important"]),
                 "event_ids": json.loads(r["event_ids"]), "position": r["first_position"], "message": r["message"]}
                for r in rows]

    def summary(self) -> dict[str, Any]:
        rows = self.store.fetch(f"SELECT name, value FROM {self.names['summary']} ORDER BY name")
        return {r["name"]: json.loads(r["value"]) for r in rows}

    def audit(self, *, participant: str | None = None, user: str | None = None, type_name: str | None = None,
              since_us: int | None = None, until_us: int | None = None, page: int = 5000) -> Iterator[dict[str, Any]]:
        """Audit rows in log order, streamed in pages (keyset pagination): memory stays flat."""
        where, params = [], []
        for column, value in (("participant", participant), ("user_id", user), ("event_type", type_name)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since_us is not None:
            where.append("recorded_us >= ?")
            params.append(since_us)
        if until_us is not None:
            where.append("recorded_us <= ?")
            params.append(until_us)
        after = (0, -1)
        columns = ", ".join(audit.COLUMNS)
        while True:
            clause = " AND ".join([*where, "(position > ? OR (position = ? AND seq > ?))"])
            rows = self.store.fetch(
                f"SELECT {columns} FROM {self.names['audit']} WHERE {clause} ORDER BY position, seq LIMIT {page}",
                (*params, after[0], after[0], after[1]))
            if not rows:
                return
            for row in rows:
                item = {k: row[k] for k in audit.COLUMNS}
                item["signature_verified"] = bool(item["signature_verified"])
                yield item
            after = (rows[-1]["position"], rows[-1]["seq"])

    def table_dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every projection table's rows, in key order (used to compare rebuild with incremental)."""
        order = {"participants": "participant", "audit": "position, seq", "deviations": "participant, seq",
                 "summary": "name"}
        return {t: [tuple(dict(r).values()) for r in self.store.fetch(f"SELECT * FROM {self.names[t]} ORDER BY {order[t]}")]
                for t in TABLES}
