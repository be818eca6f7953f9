"""`trial-ledger demo`: the seed trial's whole history, verified, with a summary."""

from __future__ import annotations

from pathlib import Path

import click

from domain.demo import GENESIS_AT, PEOPLE, SimClock, build
from domain.protocol import bundled_protocol_path, load_protocol
from domain.service import Trial
from ledger.errors import InputRefused
from ledger.keys import write_key_pair
from ledger.location import is_postgres
from ledger.verdict import judge
from projections.datamanagement import load as load_data_management
from projections.verified import open_verified

from cli.options import open_store
from cli.read import render_summary, render_susar

DEMO_PASSPHRASE = "demo-passphrase"


@click.command()
@click.option("--participants", type=click.IntRange(1, 500), default=24, show_default=True,
              help="How many participants to enrol (4 screen failures come on top).")
@click.option("--seed", type=int, default=2010, show_default=True, help="Same seed, byte-identical ledger.")
@click.option("--keys-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where to write the demo signers' keys (default: beside the database).")
@click.option("--jobs", type=click.IntRange(1, 64), default=None, help="Processes for signature checks.")
@click.option("--witnesses/--no-witnesses", default=True, show_default=True,
              help="Start two witnesses on 127.0.0.1, register them and have them cosign a checkpoint "
                   "(their addresses are in the ledger, so only --no-witnesses gives a byte-identical ledger).")
@click.pass_context
def demo(ctx: click.Context, participants: int, seed: int, keys_dir: Path | None, jobs: int | None,
         witnesses: bool) -> None:
    """Build the MSC-T2DM trial's history with a few realistic deviations, verify it, summarise it."""
    store = open_store(ctx, create=True)
    if store.count():
        raise InputRefused(f"--db {ctx.obj['db']}: demo needs an empty ledger; this one has {store.count()} events")
    clock = SimClock(GENESIS_AT)
    scenario = build(Trial(store, clock=clock), clock, load_protocol(bundled_protocol_path()),
                     seed=seed, participants=participants)
    db = ctx.obj["db"]
    keys_dir = keys_dir or (Path("demo-keys") if is_postgres(db) else Path(db).with_name(Path(db).stem + "-keys"))
    keys_dir.mkdir(parents=True, exist_ok=True)
    from cli.demo_witnesses import run_witnesses  # the HTTP stack loads only when the demo runs witnesses

    # Witness events carry today's time, not the simulated calendar: witnesses cosign in real time.
    witness_lines = run_witnesses(Trial(store), scenario.signers["admin-sponsor"], seed, keys_dir) \
        if witnesses else []
    projections = open_verified(store, jobs=jobs)  # what it prints is recomputed from the verified log
    report = projections.vstore.report
    summary = projections.summary()
    summary["data_management"] = load_data_management(projections.vstore).totals()
    for user, signer in scenario.signers.items():
        path = keys_dir / f"{user}.key"
        for stale in (path, path.with_name(path.name + ".pub")):
            stale.unlink(missing_ok=True)
        write_key_pair(signer, user, path, DEMO_PASSPHRASE)
    for name, raw in scenario.documents.items():  # the registered documents, byte for byte
        (keys_dir / name).write_bytes(raw)

    click.echo(f"MSC-T2DM demo ledger: {db}  (seed {seed})")
    click.echo(f"events: {report.events}   head position: {report.head_position}")
    click.echo(render_summary(summary))
    click.echo("\nplanted deviations (every one ever raised; a resolved one keeps its resolution):")
    for d in projections.deviations():
        click.echo(f"  {d['participant']}  {'IMPORTANT' if d['important'] else 'minor    '}  {d['status']:<8}  "
                   f"{d['message']}")
        if d["status"] == "resolved":
            click.echo(f"           resolved at position {d['resolved_at_position']} by {d['resolved_who']}: "
                       f"{d['resolved_why'] or 'no reason given'}")
    for p in projections.participants():
        for ae_id, ae in sorted((projections.participant(p["participant"]) or {}).get("adverse_events", {}).items()):
            if ae.get("susar"):
                click.echo(f"\n{p['participant']} {ae_id} ({ae['term']}): {render_susar(ae['susar'])}")
    if witness_lines:
        click.echo("\nwitnesses (C2SP tlog-witness):\n" + "\n".join(witness_lines))
    click.echo(f"\nroot key fingerprint: {report.root_fingerprint}")
    verdict = judge(report)
    if verdict.ok:
        click.echo(f"verify: OK — {report.events} events, every hash link, signature and authorisation checked")
    else:
        click.echo(f"verify: FAILED — {verdict.reason}", err=True)
    people = ", ".join(f"{u} ({role})" for u, (_n, role) in PEOPLE.items())
    click.echo(f"\nsigners' keys: {keys_dir}/  (passphrase: {DEMO_PASSPHRASE}) — {people}")
    click.echo(f"registered documents: {', '.join(f'{keys_dir}/{name}' for name in scenario.documents)}")
    click.echo("try next:")
    for line in (
        f"trial-ledger --db {db} participants",
        f"trial-ledger --db {db} show S01-005",
        f"trial-ledger --db {db} show S01-003 --as-of 2010-09-13T09:00:00+08:00",
        f"trial-ledger --db {db} audit --participant S01-003",
        f"trial-ledger --db {db} deviations",
        f"trial-ledger --db {db} queries",
        f"trial-ledger --db {db} sdv --participant S01-006",
        f"trial-ledger --db {db} document check {keys_dir}/icf-2.0.txt",
        f"trial-ledger --db {db} verify --expect-root {report.root_fingerprint}",
    ):
        click.echo(f"  {line}")
    ctx.exit(0 if verdict.ok else 1)
