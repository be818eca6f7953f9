"""`make bench`: throughput, latency and memory, each against a baseline measured in the same run.

Every CLI figure comes from running `trial-ledger` as a child process (so
process start is included, as a user sees it) and reading that child's own
peak RSS with wait4(). Baselines (plain eventsourcing storage, raw Ed25519
sign and verify loops) are measured in this same run on this same machine,
so the ratios survive a noisy machine better than the raw numbers do.

    python bench/run.py [--sizes 10000,100000,1000000] [--pg-sizes 10000,100000] [--out bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
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


def write_jsonl(path: Path, n: int, first_participant: int = 0) -> None:
    with path.open("w") as f:
        p, written = first_participant, 0
        while written < n:
            pid = f"P{p:07d}"
            f.write(json.dumps({"type": "ParticipantRegistered", "participant": pid, "data": {
                "site": "S01", "sex": "F", "birth_year": 1960}, "occurred_at": "2010-09-01T09:00:00+08:00"}) + "\n")
            written += 1
            for k in range(PER_PARTICIPANT - 1):
                if written >= n:
                    break
                f.write(json.dumps({"type": "LabResultRecorded", "participant": pid, "data": {
                    "analyte": "FBG", "value": 7 + k / 100, "unit": "mmol/L"},
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
        from ledger.store import _env_for, _ensure_schema

        pg = _env_for(db)
        _ensure_schema(pg)
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
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.run import plain_store_seconds; "
            f"from pathlib import Path; print(plain_store_seconds({db!r}, Path({str(jsonl)!r}), {n}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


# -- one size on one back end -------------------------------------------------------------------

def measure(backend: str, n: int, work: Path, baselines: dict[str, float]) -> dict[str, Any]:
    tag = f"{backend}-{n}"
    if backend == "sqlite":
        db = str(work / f"{tag}.db")
        plain_db = str(work / f"{tag}-plain.db")
    else:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        db, plain_db = f"{PG}?schema={schema}", f"{PG}?schema={schema}_plain"
    data = work / f"{tag}.jsonl"
    write_jsonl(data, n)
    setup_ledger(db, work)
    print(f"[{tag}] import", flush=True)
    imp = cli(db, "import", str(data), "--key", str(work / "inv.key"))
    t_plain = plain_store_in_child(plain_db, data, n)
    import_rate = n / imp.seconds
    print(f"[{tag}] verify", flush=True)
    v1 = cli(db, "verify", "--jobs", "1")
    v2 = cli(db, "verify", "--jobs", "2")
    total = n + 2
    print(f"[{tag}] checkpoint + 1% + incremental verify", flush=True)
    cp = work / f"{tag}.cp"
    cli(db, "checkpoint", "--key", str(work / "admin.key"), "--out", str(cp))
    extra = work / f"{tag}-extra.jsonl"
    write_jsonl(extra, max(1, n // 100), first_participant=n // PER_PARTICIPANT + 1000)
    cli(db, "import", str(extra), "--key", str(work / "inv.key"))
    full = cli(db, "verify", "--checkpoint", str(cp))
    inc = cli(db, "verify", "--checkpoint", str(cp), "--since-checkpoint")
    print(f"[{tag}] rebuild, audit, show, append", flush=True)
    rebuild = cli(db, "rebuild")
    audit = cli(db, "audit", "--format", "csv")
    shows = [cli(db, "show", "P0000003", "--as-of", "2100-01-01T00:00:00Z").seconds for _ in range(5)]
    appends = [cli(db, "append", "LabResultRecorded", "--participant", "P0000001", "--data",
                   '{"analyte": "FBG", "value": 7.7, "unit": "mmol/L"}', "--key", str(work / "inv.key")).seconds
               for _ in range(5)]
    events_now = total + max(1, n // 100)
    result = {
        "backend": backend, "events": n,
        "import_events_per_s": round(import_rate),
        "import_peak_rss_mb": round(imp.rss_mb, 1),
        "plain_store_us_per_event": round(t_plain * 1e6, 1),
        "ratio_import": round(import_rate * (baselines["t_sign"] + t_plain), 3),
        "verify_jobs1_events_per_s": round(total / v1.seconds),
        "verify_jobs2_events_per_s": round(total / v2.seconds),
        "ratio_verify_jobs1": round(total / v1.seconds / baselines["raw_verify_rate"], 3),
        "ratio_verify_jobs2": round(total / v2.seconds / baselines["raw_verify_rate"], 3),
        "verify_peak_rss_mb": round(max(v1.rss_mb, v2.rss_mb), 1),
        "incremental_verify_s": round(inc.seconds, 3),
        "full_verify_with_checkpoint_s": round(full.seconds, 3),
        "incremental_fraction": round(inc.seconds / full.seconds, 4),
        "rebuild_events_per_s": round(events_now / rebuild.seconds),
        "audit_csv_events_per_s": round(events_now / audit.seconds),
        "audit_csv_peak_rss_mb": round(audit.rss_mb, 1),
        "show_as_of_s": round(statistics.median(shows), 3),
        "append_latency_s": round(statistics.median(appends), 3),
    }
    print(json.dumps(result), flush=True)
    for path in (data, extra):
        path.unlink(missing_ok=True)
    return result


def table(results: list[dict[str, Any]], baselines: dict[str, float], meta: dict[str, str]) -> str:
    cols = [("events", "events"), ("import ev/s", "import_events_per_s"), ("ratio_import", "ratio_import"),
            ("verify j1 ev/s", "verify_jobs1_events_per_s"), ("verify j2 ev/s", "verify_jobs2_events_per_s"),
            ("ratio_verify j2", "ratio_verify_jobs2"), ("incr. verify / full", "incremental_fraction"),
            ("rebuild ev/s", "rebuild_events_per_s"), ("audit csv ev/s", "audit_csv_events_per_s"),
            ("show --as-of s", "show_as_of_s"), ("append s", "append_latency_s"),
            ("RSS MB import/verify/csv", None)]
    lines = [f"Measured {meta['date']} on {meta['machine']}.",
             f"Baselines in the same run: Ed25519 sign {baselines['t_sign'] * 1e6:.1f} µs, "
             f"raw verify {baselines['raw_verify_rate']:.0f}/s on one core. "
             f"The harness itself peaked at {meta.get('harness_peak_rss_mb', '?')} MB, a floor for every RSS figure.",
             ""]
    for backend in sorted({r["backend"] for r in results}):
        lines += [f"**{backend}**", "", "| " + " | ".join(c for c, _ in cols) + " |",
                  "|" + "---|" * len(cols)]
        for r in (r for r in results if r["backend"] == backend):
            cells = [str(r[k]) if k else f"{r['import_peak_rss_mb']:.0f}/{r['verify_peak_rss_mb']:.0f}/"
                     f"{r['audit_csv_peak_rss_mb']:.0f}" for _, k in cols]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    sqlite = [r for r in results if r["backend"] == "sqlite"]
    if len(sqlite) >= 2:
        small, large = sqlite[0], sqlite[-1]
        lines.append(f"`show --as-of` at {large['events']} vs {small['events']} events: "
                     f"{large['show_as_of_s'] / small['show_as_of_s']:.2f}×")
    if "key_load_right_s" in baselines:
        lines.append(f"Key file load (Argon2id m=64 MiB, t=3, p=4): right passphrase "
                     f"{baselines['key_load_right_s'] * 1000:.0f} ms, wrong passphrase "
                     f"{baselines['key_load_wrong_s'] * 1000:.0f} ms: a guess costs the full KDF")
    return "\n".join(lines) + "\n"


def key_load_seconds(work: Path, samples: int = 5) -> dict[str, float]:
    """A right and a wrong passphrase cost the same: both run the key file's full Argon2id (SPEC §5.1)."""
    from ledger.errors import KeyFileError
    from ledger.keys import generate, read_private, write_key_pair

    path = work / "bench.key"
    write_key_pair(generate(), "bench", path, PASSPHRASE)
    timings: dict[str, float] = {}
    for label, passphrase in (("key_load_right_s", PASSPHRASE), ("key_load_wrong_s", PASSPHRASE + "x")):
        runs = []
        for _ in range(samples):
            start = time.perf_counter()
            try:
                read_private(path, passphrase)
            except KeyFileError:
                pass
            runs.append(time.perf_counter() - start)
        timings[label] = statistics.median(runs)
    print(f"key file load: right passphrase {timings['key_load_right_s'] * 1000:.1f} ms, "
          f"wrong passphrase {timings['key_load_wrong_s'] * 1000:.1f} ms (median of {samples})")
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--pg-sizes", default="10000,100000")
    parser.add_argument("--out", default=str(ROOT / "bench"))
    args = parser.parse_args()
    baselines = {"t_sign": raw_sign_seconds(), "raw_verify_rate": raw_verify_rate()}
    meta = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        baselines.update(key_load_seconds(work))
        for n in [int(s) for s in args.sizes.split(",") if s]:
            results.append(measure("sqlite", n, work, baselines))
        for n in [int(s) for s in args.pg_sizes.split(",") if s]:
            results.append(measure("postgres", n, work, baselines))
    # Every child's ru_maxrss is at least the harness's own (see cli()); report it so no figure hides it.
    meta["harness_peak_rss_mb"] = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps({"meta": meta, "baselines": baselines, "results": results},
                                                 indent=2) + "\n")
    md = table(results, baselines, meta)
    (out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
