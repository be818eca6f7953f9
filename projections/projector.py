"""Materialised projections with eventsourcing tracking (SPEC §7).

Tables live in the ledger's own database. Each page of the global log is
projected in one transaction together with eventsourcing's tracking row, so
a crash never leaves a half-projected page, and each read command first
catches up from the tracked position. ``rebuild`` clears the tables and the
tracking row and projects the whole log again; the result equals the
incremental one (tested).

These tables are a cache, never a source of truth for an inspector (SPEC
§5.4): only the ``--cached`` fast path reads them, and it says its output is
not verified. Every other read is recomputed from the verified log by
``projections.verified``.
"""

from __future__ import annotations

import json
import multiprocessing.util
from collections import deque
from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import Any

from domain.protocol import Protocol
from domain.service import Trial
from domain.signers import STUDY_STREAM, SignerRegistry
from ledger.envelope import Envelope, Record
from ledger.errors import StoreConflict
from ledger.signatures import SignatureChecks
from ledger.store import Store
from ledger.verify import Unauthorised
from projections import audit, state as states
from projections.summary import counts, summarise

TRACKING_NAME = "projections"
RESOLUTION = ("raised_by", "resolved_at_position", "resolved_by", "resolved_who", "resolved_why")


def _resolution(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in RESOLUTION}
PAGE = 2000

DDL = (
    "CREATE TABLE IF NOT EXISTS {participants} (participant TEXT PRIMARY KEY, status TEXT, site TEXT, "
    "state TEXT NOT NULL, counts TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {audit} (position BIGINT NOT NULL, seq INTEGER NOT NULL, event_id TEXT, "
    "recorded_at TEXT, recorded_us BIGINT, occurred_at TEXT, user_id TEXT, user_name TEXT, role TEXT, "
    "participant TEXT, event_type TEXT, field TEXT, old_value TEXT, new_value TEXT, reason TEXT, meaning TEXT, "
    "target_event_id TEXT, hash TEXT, signature_verified INTEGER, PRIMARY KEY (position, seq))",
    "CREATE INDEX IF NOT EXISTS proj_audit_participant ON {audit} (participant, position)",
    "CREATE INDEX IF NOT EXISTS proj_audit_user ON {audit} (user_id, position)",
    "CREATE TABLE IF NOT EXISTS {deviations} (participant TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT, "
    "important INTEGER, event_ids TEXT, first_position BIGINT, message TEXT, status TEXT, "
    "raised_at_position BIGINT, resolution TEXT, PRIMARY KEY (participant, seq))",
    "CREATE TABLE IF NOT EXISTS {summary} (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {dirty} (participant TEXT PRIMARY KEY)",
)
TABLES = ("participants", "audit", "deviations", "summary", "dirty")
SCHEMA_VERSION = "3"  # bump when a projection table changes: old tables are dropped and rebuilt
PARALLEL_FROM = 4000  # events behind: worth a process pool for the signature checks
DEVIATION_TASK = 25  # participants per deviation task sent to a worker
AUDIT_INSERT = (*(c for c in audit.COLUMNS if c != "signature_verified"), "recorded_us", "signature_verified")
_audit_values = itemgetter(*AUDIT_INSERT[:-1])  # a row's values but signature_verified, which is appended as int
DEVIATION_INSERT = ("INSERT INTO {table} (participant, seq, kind, important, event_ids, first_position, message, "
                    "status, raised_at_position, resolution) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


_worker: dict[str, Any] = {}


def deviation_rows(db: str, participants: list[str], upto: int,
                   protocol: Protocol) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Each participant's deviation rows as of ``upto``, ready to insert; run in a worker process.

    Deviations of one participant depend only on the log up to ``upto`` (its
    stream and the study stream), never on the projector's fold, so workers
    compute them beside it, each reading through its own connection. The
    worker keeps its store and the first ``protocol`` it was given for the
    whole catch-up, so the protocol versions are read once per worker.
    """
    if _worker.get("key") != (db, upto):  # a pool lives for one catch-up: in practice, once per worker
        store = Store(db, create=False)
        multiprocessing.util.Finalize(None, store.close, exitpriority=1)  # closed when the worker exits
        _worker.update(key=(db, upto), trial=Trial(store), protocol=protocol)
    trial: Trial = _worker["trial"]
    return [(p, _deviation_values(p, trial.deviations(p, upto=upto, protocol=_worker["protocol"])))
            for p in participants]


def _deviation_values(participant: str, found: list[Any]) -> list[tuple[Any, ...]]:
    return [(participant, n, d.kind, int(d.important), json.dumps(list(d.event_ids)), d.first_position,
             d.message, d.status, d.raised_at_position, json.dumps(_resolution(d.as_dict()), sort_keys=True))
            for n, d in enumerate(found)]


class Projections:
    def __init__(self, store: Store):
        self.store = store
        self.trial = Trial(store)
        store.ensure_tracking()  # the store skips DDL for an existing log; tracking may be new
        self.names = {t: store.table(f"proj_{t}") for t in TABLES}
        self.meta = store.table("proj_meta")
        if self._current_schema():
            return  # nothing to create: the least-privilege role may not run DDL on tables it does not own
        with store.write_transaction() as c:
            c.execute(f"CREATE TABLE IF NOT EXISTS {self.meta} (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            rows = self._fetch_c(c, f"SELECT value FROM {self.meta} WHERE name = 'schema_version'")
            if not rows or rows[0]["value"] != SCHEMA_VERSION:
                self._drop(c)
                c.execute(self.store.sql(f"INSERT INTO {self.meta} (name, value) VALUES ('schema_version', ?) "
                                         "ON CONFLICT (name) DO UPDATE SET value = excluded.value"),
                          (SCHEMA_VERSION,))
            for ddl in DDL:
                c.execute(ddl.format(**self.names))

    def _current_schema(self) -> bool:
        if not (self.store.table_exists("proj_meta") and self.store.table_exists("proj_dirty")):
            return False
        rows = self.store.fetch(f"SELECT value FROM {self.meta} WHERE name = 'schema_version'")
        return bool(rows) and rows[0]["value"] == SCHEMA_VERSION

    def _drop(self, c: Any) -> None:
        """Forget every projection table and the tracked position; they are rebuilt from the log."""
        for name in self.names.values():
            c.execute(f"DROP TABLE IF EXISTS {name}")
        self._forget_position(c)

    def _forget_position(self, c: Any) -> None:
        self.store.forget_position(c, TRACKING_NAME)

    # -- catching up ---------------------------------------------------------------------------

    def position(self) -> int:
        return self.store.tracked_position(TRACKING_NAME)

    def catch_up(self, on_progress: Callable[[int], None] | None = None, jobs: int | None = None) -> int:
        """Project every event after the tracked position; returns how many were projected.

        Pages are projected in order, each in one transaction with the tracking
        row; participants whose deviations must be recomputed are marked dirty
        in the same transaction and refreshed at the end, so a crash part-way
        leaves nothing inconsistent and the next catch-up finishes the job.
        """
        last = self.position()
        behind = self.store.head_position() - last
        done = 0
        registry = self.trial.registry_at(last) if last else SignerRegistry()
        with SignatureChecks(jobs if behind >= PARALLEL_FROM else 1) as checks:
            while True:
                page = self.store.page(after=last, limit=PAGE)
                if not page:
                    break
                try:
                    self._project_page(page, registry, checks)
                except StoreConflict:
                    # Another process projected this page first; go on from where it got to.
                    last = self.position()
                    registry = self.trial.registry_at(last)
                    continue
                last = page[-1].position
                done += len(page)
                if on_progress:
                    on_progress(len(page))
            if done or not self._derived_current():
                self._refresh_derived(registry, checks)
        return done

    def _project_page(self, page: list[Record], registry: SignerRegistry, checks: SignatureChecks) -> None:
        decoded: list[tuple[Record, Envelope, audit.Signer, bytes | None]] = []
        # (key id, author) -> who signed as the registry knows them, until the next study event changes it
        signers: dict[tuple[str, str], audit.Signer] = {}
        for record in page:
            try:
                env = record.envelope()
            except Exception:  # noqa: BLE001 - a damaged row is verify's to report, not ours to crash on
                continue
            try:
                public: bytes | None = registry.authorise(env)
            except Unauthorised:
                public = None
            signer = signers.get((env.key_id, env.author)) if env.type != "StudyInitialised" else None
            if signer is None:
                signer = audit.signer_of(registry, env)
                if env.type != "StudyInitialised":
                    signers[env.key_id, env.author] = signer
            if env.stream == STUDY_STREAM:
                registry.observe(env)
                signers.clear()
            decoded.append((record, env, signer, public))
        pending = checks.submit([(pub, rec) for rec, _env, _s, pub in decoded])
        cache: dict[str, dict[str, Any]] = {}
        targets: list[dict[str, Any] | None] = []
        recompute_all = False
        with self.store.write_transaction() as c:
            for record, env, _signer, _pub in decoded:
                target_data = None
                if env.stream != STUDY_STREAM:
                    st = cache.get(env.stream) or self._load_state(c, env.stream)
                    cache[env.stream] = st
                    target = st["entries"].get(str(env.data.get("target_event_id")))
                    target_data = dict(target["data"]) if target else None
                    states.apply(st, env, record.position)
                else:
                    recompute_all |= env.type == "ProtocolAmended"
                targets.append(target_data)
            verified = pending()
            rows = [(*_audit_values(row), int(ok))
                    for (record, env, signer, _pub), ok, target in zip(decoded, verified, targets, strict=True)
                    for row in audit.rows_for(record, env, signer, ok, target)]
            self._write_states(c, cache)
            self._write_audit(c, rows)
            dirty = sorted(cache)
            if recompute_all:
                dirty = [r["participant"] for r in self._fetch_c(c, f"SELECT participant FROM {self.names['participants']}")]
            c.executemany(self.store.sql(f"INSERT INTO {self.names['dirty']} (participant) VALUES (?) "
                                         "ON CONFLICT (participant) DO NOTHING"), [(p,) for p in dirty])
            c.execute(f"DELETE FROM {self.names['summary']}")  # stale until _refresh_derived writes it again
            self.store.track(c, TRACKING_NAME, page[-1].position)

    def _derived_current(self) -> bool:
        """Nothing left dirty and a summary written: a read with nothing new to project does no work."""
        return not self.store.fetch(f"SELECT participant FROM {self.names['dirty']} LIMIT 1") and \
            bool(self.store.fetch(f"SELECT name FROM {self.names['summary']} LIMIT 1"))

    def _refresh_derived(self, registry: SignerRegistry, checks: SignatureChecks) -> None:
        """Recompute deviations of dirty participants, then the summary.

        With a pool, workers compute the deviations (each participant's fold
        reads only the log) in tasks of ``DEVIATION_TASK`` participants, a
        bounded window of tasks ahead; this process writes each task's rows
        and clears its dirty marks in one transaction, in order.
        """
        protocol = registry.protocol
        if protocol is None:
            return
        upto = self.position()
        rows = self.store.fetch(f"SELECT participant FROM {self.names['dirty']} ORDER BY participant")
        dirty = [r["participant"] for r in rows]
        tasks = [dirty[i:i + DEVIATION_TASK] for i in range(0, len(dirty), DEVIATION_TASK)]
        if checks.pool is None:
            for task in tasks:
                self._write_deviations(task, [(p, _deviation_values(
                    p, self.trial.deviations(p, upto=upto, protocol=protocol))) for p in task])
        else:
            window: deque[tuple[list[str], Callable[[], list[tuple[str, list[tuple[Any, ...]]]]]]] = deque()
            for task in tasks:
                window.append((task, checks.run(deviation_rows, self.store.db, task, upto, protocol)))
                if len(window) > 4 * checks.jobs:
                    done, result = window.popleft()
                    self._write_deviations(done, result())
            while window:
                done, result = window.popleft()
                self._write_deviations(done, result())
        with self.store.write_transaction() as c:
            self._write_summary(c, registry)

    # -- writing -------------------------------------------------------------------------------

    def _fetch_c(self, c: Any, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return list(c.execute(statement, params).fetchall())

    def _load_state(self, c: Any, participant: str) -> dict[str, Any]:
        rows = self._fetch_c(c, f"SELECT state FROM {self.names['participants']} WHERE participant = ?", (participant,))
        return json.loads(rows[0]["state"]) if rows else states.empty_state(participant)

    def _write_states(self, c: Any, cache: dict[str, dict[str, Any]]) -> None:
        statement = self.store.sql(
            f"INSERT INTO {self.names['participants']} (participant, status, site, state, counts) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (participant) DO UPDATE SET status = excluded.status, "
            "site = excluded.site, state = excluded.state, counts = excluded.counts")
        c.executemany(statement, [(p, s["status"], s["site"], json.dumps(s, sort_keys=True),
                                   json.dumps(counts(s), sort_keys=True))
                                  for p, s in sorted(cache.items())])

    def _write_audit(self, c: Any, rows: list[tuple[Any, ...]]) -> None:
        """Rows as tuples in ``AUDIT_INSERT`` order (signature_verified as 0 or 1)."""
        statement = (f"INSERT INTO {self.names['audit']} ({', '.join(AUDIT_INSERT)}) "
                     f"VALUES ({', '.join('?' * len(AUDIT_INSERT))})")
        c.executemany(statement, rows)

    def _write_deviations(self, participants: list[str], values: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        """Replace these participants' deviations and clear their dirty marks, in one transaction."""
        table = self.names["deviations"]
        with self.store.write_transaction() as c:
            c.executemany(f"DELETE FROM {table} WHERE participant = ?", [(p,) for p in participants])
            c.executemany(DEVIATION_INSERT.format(table=table), [row for _p, rows in values for row in rows])
            c.executemany(f"DELETE FROM {self.names['dirty']} WHERE participant = ?", [(p,) for p in participants])

    def _write_summary(self, c: Any, registry: SignerRegistry) -> None:
        all_states = [json.loads(r["counts"]) for r in self._fetch_c(c, f"SELECT counts FROM {self.names['participants']}")]
        devs = [(r["kind"], bool(r["important"]), int(r["n"])) for r in self._fetch_c(
            c, f"SELECT kind, important, COUNT(*) AS n FROM {self.names['deviations']} GROUP BY kind, important")]
        target = registry.protocol.target_enrolment if registry.protocol else None
        summary = summarise(all_states, devs, target)
        c.execute(self.store.sql(f"DELETE FROM {self.names['summary']}"))
        c.executemany(self.store.sql(f"INSERT INTO {self.names['summary']} (name, value) VALUES (?, ?)"),
                      [(k, json.dumps(v, sort_keys=True)) for k, v in sorted(summary.items())])

    # -- rebuild -------------------------------------------------------------------------------

    def rebuild(self, on_progress: Callable[[int], None] | None = None, jobs: int | None = None) -> int:
        """Empty every projection table and the tracked position, then project the whole log.

        Rows are deleted rather than tables dropped, so the least-privilege role
        (docs/least-privilege.sql), which does not own the tables, can rebuild.
        """
        with self.store.write_transaction() as c:
            for name in self.names.values():
                c.execute(f"DELETE FROM {name}")
            self._forget_position(c)
        return self.catch_up(on_progress, jobs)

    # -- reading -------------------------------------------------------------------------------

    def participant(self, participant: str) -> dict[str, Any] | None:
        rows = self.store.fetch(f"SELECT state FROM {self.names['participants']} WHERE participant = ?",
                                (participant,))
        return json.loads(rows[0]["state"]) if rows else None

    def participants(self, status: str | None = None) -> list[dict[str, Any]]:
        statement = f"SELECT participant, status, site, counts FROM {self.names['participants']}"
        params: tuple[Any, ...] = ()
        if status:
            statement += " WHERE status = ?"
            params = (status,)
        rows = self.store.fetch(statement + " ORDER BY participant", params)
        out = []
        for row in rows:
            st = json.loads(row["counts"])
            out.append({"participant": row["participant"], "status": row["status"], "site": row["site"],
                        "consent": st["consent"], "doses": sum(st["doses"].values()),
                        "adverse_events": len(st["adverse_events"]), "events": st["events"]})
        return out

    def deviations(self, participant: str | None = None, *, open_only: bool = False) -> list[dict[str, Any]]:
        """Every deviation ever raised (SPEC §4), or only the open ones."""
        statement = (f"SELECT participant, kind, important, event_ids, first_position, message, status, "
                     f"raised_at_position, resolution FROM {self.names['deviations']}")
        where, params = [], []
        if participant:
            where.append("participant = ?")
            params.append(participant)
        if open_only:
            where.append("status = 'open'")
        if where:
            statement += " WHERE " + " AND ".join(where)
        rows = self.store.fetch(statement + " ORDER BY participant, seq", tuple(params))
        return [{"participant": r["participant"], "kind": r["kind"], "important": bool(r["important"]),
                 "event_ids": json.loads(r["event_ids"]), "position": r["first_position"], "message": r["message"],
                 "status": r["status"], "raised_at_position": r["raised_at_position"],
                 **json.loads(r["resolution"] or "{}")}
                for r in rows]

    def summary(self) -> dict[str, Any]:
        rows = self.store.fetch(f"SELECT name, value FROM {self.names['summary']} ORDER BY name")
        return {r["name"]: json.loads(r["value"]) for r in rows}

    def audit(self, *, participant: str | None = None, user: str | None = None, type_name: str | None = None,
              since_us: int | None = None, until_us: int | None = None, page: int = 5000) -> Iterator[dict[str, Any]]:
        """Audit rows in log order, streamed in pages (keyset pagination): memory stays flat."""
        where: list[str] = []
        params: list[Any] = []
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
                 "summary": "name", "dirty": "participant"}
        return {t: [tuple(dict(r).values()) for r in self.store.fetch(f"SELECT * FROM {self.names[t]} ORDER BY {order[t]}")]
                for t in TABLES}
