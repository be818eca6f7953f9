"""What every benchmark shares: running `trial-ledger` as a child, test data, same-run baselines.

Every CLI figure comes from running `trial-ledger` as a child process (so
process start is included, as a user sees it) and reading that child's own
peak RSS with wait4(). Baselines (plain eventsourcing storage, raw Ed25519
sign and verify loops) are measured in the same run on the same machine, so
ratios survive a noisy machine better than raw numbers do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parent.parent
BIN = str(Path(sys.executable).with_name("trial-ledger"))
PASSPHRASE = "bench passphrase"
PG = os.environ.get("TRIAL_LEDGER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
PER_PARTICIPANT = 50


@dataclass
class Run:
    seconds: float
    rss_mb: float
    stdout: str


def cli(db: str, *args: str, check: bool = True) -> Run:
    env = {**os.environ, "TRIAL_LEDGER_PASSPHRASE": PASSPHRASE}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([BIN, "--db", db, *args], stdout=out, stderr=err, env=env)
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        # Only the tail: `audit --format csv` at 1M events writes ~400 MB, and a parent that read
        # it all would pass its peak RSS on to every later child (ru_maxrss survives vfork + exec).
        out.seek(max(0, out.seek(0, os.SEEK_END) - 65536))
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if check and code != 0:
        raise RuntimeError(f"{args[0]} exited {code}: {stderr.strip()[:500]}")
    return Run(seconds, usage.ru_maxrss / 1024, stdout)


def write_jsonl(path: Path, n: int, first_participant: int = 0, per_participant: int = PER_PARTICIPANT) -> None:
    """``n`` import lines: each participant registered, then lab results, ``per_participant`` events each."""
    with path.open("w") as f:
        p, written = first_participant, 0
        while written < n:
            pid = f"P{p:07d}"
            f.write(json.dumps({"type": "ParticipantRegistered", "participant": pid, "data": {
                "site": "S01", "sex": "F", "birth_year": 1960}, "occurred_at": "2010-09-01T09:00:00+08:00"}) + "\n")
            written += 1
            for k in range(per_participant - 1):
                if written >= n:
                    break
                f.write(json.dumps({"type": "LabResultRecorded", "participant": pid, "data": {
                    "analyte": "FBG", "value": round(7 + (k % 500) / 100, 2), "unit": "mmol/L"},
                    "occurred_at": "2010-09-02T09:00:00+08:00"}) + "\n")
                written += 1
            p += 1


def setup_ledger(db: str, work: Path) -> None:
    for user in ("admin", "inv"):
        key = work / f"{user}.key"
        if not key.exists():
            cli(db, "keygen", "--user-id", user, "--out", str(key))
    cli(db, "init", "--protocol", str(ROOT / "domain/protocols/msc-t2dm.toml"), "--study-id", "BENCH",
        "--admin-id", "admin", "--admin-name", "Bench Admin", "--key", str(work / "admin.key"))
    cli(db, "signer", "add", "--user-id", "inv", "--name", "Bench Investigator", "--role", "investigator",
        "--public-key", str(work / "inv.key.pub"), "--key", str(work / "admin.key"))


# -- baselines ---------------------------------------------------------------------------------

def raw_sign_seconds(samples: int = 20000) -> float:
    key, msg = Ed25519PrivateKey.generate(), os.urandom(32)
    start = time.perf_counter()
    for _ in range(samples):
        key.sign(msg)
    return (time.perf_counter() - start) / samples


def raw_verify_rate(samples: int = 5000) -> float:
    key, msg = Ed25519PrivateKey.generate(), os.urandom(32)
    sig, pub = key.sign(msg), key.public_key()
    start = time.perf_counter()
    for _ in range(samples):
        pub.verify(sig, msg)
    return samples / (time.perf_counter() - start)


@dataclass(frozen=True)
class PlainEvent:
    """An unsigned event for plain eventsourcing (the storage baseline)."""

    originator_id: str
    originator_version: int
    timestamp: datetime
    data: dict[str, Any]


def plain_store_seconds(db: str, jsonl: Path, n: int) -> float:
    """Seconds per event to save the same payloads with plain eventsourcing, in batches of 1000."""
    from eventsourcing.application import Application

    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": db, "ORIGINATOR_ID_TYPE": "text"}
    if db.startswith("postgresql"):
        from ledger.adapter import ensure_schema, settings
        from ledger.location import Location

        ensure_schema(Location.parse(db))
        pg = settings(Location.parse(db), create_table=True)
        env = {k: v for k, v in pg.items() if k.startswith("POSTGRES_")}
        env.update(PERSISTENCE_MODULE="eventsourcing.postgres", ORIGINATOR_ID_TYPE="text")
    app = Application(env=env)
    versions: dict[str, int] = {}
    events = []
    now = datetime.now(UTC)
    with jsonl.open() as f:
        for line in f:
            row = json.loads(line)
            versions[row["participant"]] = versions.get(row["participant"], 0) + 1
            events.append(PlainEvent(row["participant"], versions[row["participant"]], now, row["data"]))
    start = time.perf_counter()
    for i in range(0, len(events), 1000):
        app.save(*events[i:i + 1000])
    elapsed = time.perf_counter() - start
    app.close()
    return elapsed / n


def plain_store_in_child(db: str, jsonl: Path, n: int) -> float:
    """Run the storage baseline in its own process, so this process stays small: a child's peak RSS
    (wait4) counts the memory it was forked with, and every CLI figure is taken from a child."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.harness import plain_store_seconds; "
            f"from pathlib import Path; print(plain_store_seconds({db!r}, Path({str(jsonl)!r}), {n}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def disk_bytes(db: str) -> int:
    """Bytes the ledger occupies: the SQLite file (with WAL), or every relation of the PostgreSQL schema."""
    if not db.startswith("postgresql"):
        return sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))
    import psycopg

    base, _, query = db.partition("?schema=")
    with psycopg.connect(base) as conn:
        row = conn.execute("SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                           "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                           (query,)).fetchone()
    return int(row[0]) if row else 0


def drop_schema(db: str) -> None:
    if db.startswith("postgresql"):
        import psycopg

        base, _, schema = db.partition("?schema=")
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
