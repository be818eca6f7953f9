"""`make bench`: throughput, latency and memory, each against a baseline measured in the same run.

Every CLI figure comes from running `trial-ledger` as a child process (so
process start is included, as a user sees it) and reading that child's own
peak RSS with wait4(). Baselines (plain eventsourcing storage, raw Ed25519
sign and verify loops) are measured in this same run on this same machine,
so the ratios survive a noisy machine better than the raw numbers do.

    python -m bench.run [--sizes 10000,40000,100000,1000000] [--pg-sizes 10000,100000] [--out bench]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import (
    PASSPHRASE,
    PER_PARTICIPANT,
    PG,
    ROOT,
    cli,
    disk_bytes,
    plain_store_in_child,
    raw_sign_seconds,
    raw_verify_rate,
    setup_ledger,
    write_jsonl,
)

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
    print(f"[{tag}] rebuild, audit, report, odm, show, append", flush=True)
    rebuild = cli(db, "rebuild")
    v2_now = cli(db, "verify", "--jobs", "2")
    audit = cli(db, "audit", "--format", "csv")
    report = cli(db, "report", "--out", str(work / f"{tag}.html"))
    odm = cli(db, "export", "--format", "odm", "--out", str(work / f"{tag}.xml"))
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
        "ratio_rebuild": round(events_now / rebuild.seconds / baselines["raw_verify_rate"], 3),
        "rebuild_peak_rss_mb": round(rebuild.rss_mb, 1),
        "report_s": round(report.seconds, 2), "report_peak_rss_mb": round(report.rss_mb, 1),
        "odm_s": round(odm.seconds, 2), "odm_peak_rss_mb": round(odm.rss_mb, 1),
        "audit_csv_s": round(audit.seconds, 2),
        "verify_jobs2_now_s": round(v2_now.seconds, 2),
        "report_over_verify": round(report.seconds / v2_now.seconds, 2),
        "odm_over_verify": round(odm.seconds / v2_now.seconds, 2),
        "audit_csv_over_verify": round(audit.seconds / v2_now.seconds, 2),
        "disk_bytes_per_event": round(disk_bytes(db) / events_now),
        "audit_csv_events_per_s": round(events_now / audit.seconds),
        "audit_csv_peak_rss_mb": round(audit.rss_mb, 1),
        "show_as_of_s": round(statistics.median(shows), 3),
        "append_latency_s": round(statistics.median(appends), 3),
    }
    print(json.dumps(result), flush=True)
    for path in (data, extra, work / f"{tag}.html", work / f"{tag}.xml"):
        path.unlink(missing_ok=True)
    return result


def table(results: list[dict[str, Any]], baselines: dict[str, float], meta: dict[str, str]) -> str:
    cols = [("events", "events"), ("import ev/s", "import_events_per_s"), ("ratio_import", "ratio_import"),
            ("verify j1 ev/s", "verify_jobs1_events_per_s"), ("verify j2 ev/s", "verify_jobs2_events_per_s"),
            ("ratio_verify j2", "ratio_verify_jobs2"), ("incr. verify / full", "incremental_fraction"),
            ("rebuild ev/s", "rebuild_events_per_s"), ("ratio_rebuild", "ratio_rebuild"),
            ("audit csv ev/s", "audit_csv_events_per_s"), ("report / verify j2", "report_over_verify"),
            ("odm / verify j2", "odm_over_verify"), ("csv / verify j2", "audit_csv_over_verify"),
            ("bytes/event", "disk_bytes_per_event"),
            ("show --as-of s", "show_as_of_s"), ("append s", "append_latency_s"),
            ("RSS MB import/verify/rebuild/report/odm/csv", None)]
    lines = [f"Measured {meta['date']} on {meta['machine']}.",
             f"Baselines in the same run: Ed25519 sign {baselines['t_sign'] * 1e6:.1f} µs, "
             f"raw verify {baselines['raw_verify_rate']:.0f}/s on one core. "
             f"The harness itself peaked at {meta.get('harness_peak_rss_mb', '?')} MB, a floor for every RSS figure.",
             ""]
    for backend in sorted({r["backend"] for r in results}):
        lines += [f"**{backend}**", "", "| " + " | ".join(c for c, _ in cols) + " |",
                  "|" + "---|" * len(cols)]
        for r in (r for r in results if r["backend"] == backend):
            rss = "/".join(f"{r[k]:.0f}" for k in ("import_peak_rss_mb", "verify_peak_rss_mb", "rebuild_peak_rss_mb",
                                                   "report_peak_rss_mb", "odm_peak_rss_mb", "audit_csv_peak_rss_mb"))
            cells = [str(r[k]) if k else rss for _, k in cols]
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
            with contextlib.suppress(KeyFileError):
                read_private(path, passphrase)
            runs.append(time.perf_counter() - start)
        timings[label] = statistics.median(runs)
    print(f"key file load: right passphrase {timings['key_load_right_s'] * 1000:.1f} ms, "
          f"wrong passphrase {timings['key_load_wrong_s'] * 1000:.1f} ms (median of {samples})")
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,40000,100000,1000000")
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
