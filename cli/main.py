"""``trial-ledger``: click commands only, a thin layer over the library (SPEC §6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from domain.events import CATALOGUE, MEANINGS, json_schema
from domain.identifiers import check_user_id
from domain.input_limits import decode_json
from domain.protocol import load_protocol
from domain.service import Command, Trial
from domain.signers import STUDY_STREAM, SignerRegistry
from domain.text_guard import refuse_bad_text
from domain.timeutil import iso, utc_now
from ledger import security_log
from ledger.errors import InputRefused
from ledger.keys import generate, read_public, write_key_pair
from ledger.verdict import judge
from ledger.snapshot import read_once


from cli import witnessing
from cli.refusals import note_attempt
from cli.options import (
    LedgerGroup,
    emit,
    key_option,
    load_signer,
    open_store,
    passphrase,
    passphrase_file_option,
    progress,
)


@click.group(cls=LedgerGroup)
@click.option("--db", envvar="TRIAL_LEDGER_DB", default="./trial-ledger.db", show_default=True,
              help="SQLite file path or postgresql:// URL (add ?schema=NAME for a schema).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on read commands.")
@click.pass_context
def cli(ctx: click.Context, db: str, as_json: bool) -> None:
    """A signed, hash-chained audit ledger for a clinical trial."""
    ctx.ensure_object(dict)
    ctx.obj.update(db=db, json=as_json)


@cli.command()
@click.option("--user-id", required=True, help="Who the key is for.")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Key file to write; FILE.pub is written beside it.")
@passphrase_file_option
@click.pass_context
def keygen(ctx: click.Context, user_id: str, out: Path, passphrase_file: Path | None) -> None:
    """Create an encrypted Ed25519 key (Argon2id + ChaCha20-Poly1305, mode 0600); refuses to overwrite."""
    check_user_id(user_id, "--user-id")
    signer = generate()
    pub = write_key_pair(signer, user_id, out, passphrase(passphrase_file, confirm=True))
    emit(ctx, {"key": str(out), "public_key_file": str(pub), "key_id": signer.key_id,
               "public_key": signer.public_b64},
         f"wrote {out} (mode 0600) and {pub}; key id {signer.key_id}")


@cli.command()
@click.option("--protocol", "protocol_path", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--study-id", required=True)
@click.option("--admin-id", required=True)
@click.option("--admin-name", required=True, help="Printed name of the sponsor admin (21 CFR 11.50).")
@key_option
@passphrase_file_option
@click.pass_context
def init(ctx: click.Context, protocol_path: Path, study_id: str, admin_id: str, admin_name: str,
         key: Path, passphrase_file: Path | None) -> None:
    """Write the genesis event: the protocol's hash and the sponsor's root key."""
    for name, value in (("--study-id", study_id), ("--admin-id", admin_id), ("--admin-name", admin_name)):
        refuse_bad_text(value, name)  # before the database is created: a refusal writes nothing
    protocol = load_protocol(protocol_path)
    signer = load_signer(key, passphrase_file)
    trial = Trial(open_store(ctx, create=True))
    env = trial.initialise(protocol, study_id=study_id, admin_id=admin_id, admin_name=admin_name, signer=signer)
    security_log.ensure(trial.store)  # created by the owner with the ledger (docs/least-privilege.sql)
    registry = trial.registry()
    emit(ctx, {"event_id": env.event_id, "root_fingerprint": registry.root_fingerprint,
               "protocol_sha256": protocol.sha256()},
         f"initialised {study_id} under protocol {protocol.protocol_id} v{protocol.version}\n"
         f"root key fingerprint: {registry.root_fingerprint}")


@cli.group()
def signer() -> None:
    """Register, revoke and list signers."""


@signer.command("add")
@click.option("--user-id", required=True)
@click.option("--name", required=True, help="Printed name.")
@click.option("--role", required=True)
@click.option("--public-key", "public_key", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--valid-from", default=None, help="ISO time the key becomes valid (default: now).")
@click.option("--organisation", default=None, help="The signer's organisation (site, lab, CRO), if any.")
@key_option
@passphrase_file_option
@click.pass_context
def signer_add(ctx: click.Context, user_id: str, name: str, role: str, public_key: Path,
               valid_from: str | None, organisation: str | None, key: Path, passphrase_file: Path | None) -> None:
    """Register a signer's public key with a role (signed by the admin)."""
    data = {"user_id": user_id, "name": name, "role": role, "public_key": read_public(public_key),
            "valid_from": valid_from or iso(utc_now())}
    if organisation is not None:
        data["organisation"] = organisation
    note_attempt(ctx, "signer add", "SignerRegistered")
    trial = Trial(open_store(ctx))
    env = trial.append(Command("SignerRegistered", None, data), load_signer(key, passphrase_file))
    emit(ctx, {"event_id": env.event_id}, f"registered {user_id} as {role}")


@signer.command("revoke")
@click.option("--user-id", required=True)
@click.option("--reason", required=True)
@key_option
@passphrase_file_option
@click.pass_context
def signer_revoke(ctx: click.Context, user_id: str, reason: str, key: Path, passphrase_file: Path | None) -> None:
    """Deauthorise a signer from now on; what they signed before still verifies."""
    note_attempt(ctx, "signer revoke", "SignerRevoked")
    trial = Trial(open_store(ctx))
    env = trial.append(Command("SignerRevoked", None, {"user_id": user_id}, reason=reason),
                       load_signer(key, passphrase_file))
    emit(ctx, {"event_id": env.event_id}, f"revoked {user_id}")


@signer.command("list")
@click.pass_context
def signer_list(ctx: click.Context) -> None:
    """Every signer with role, key id, registration and revocation."""
    from projections.verified import open_verified

    registry = open_verified(open_store(ctx)).registry()  # signers as the verified log states them
    rows = [
        {"user_id": s.user_id, "name": s.name, "role": s.role, "key_id": s.key_id,
         "registered_at": s.registered_at, "revoked_at": s.revoked_at, "revoke_reason": s.revoke_reason}
        for s in registry.signers.values()
    ]
    text = "\n".join(
        f"{r['user_id']:<14} {r['role']:<13} {r['key_id']}  {r['name']}"
        + (f"  REVOKED {r['revoked_at']} ({r['revoke_reason']})" if r["revoked_at"] else "")
        for r in rows
    )
    emit(ctx, rows, text or "no signers")


def _parse_data(text: str) -> dict[str, Any]:
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise InputRefused(f"--data {text}: {getattr(e, 'strerror', None) or e}") from None
    try:
        value = decode_json(text)
    except json.JSONDecodeError as e:
        raise InputRefused(f"--data: not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise InputRefused("--data: not valid JSON (too deeply nested)") from None
    except ValueError as e:  # a number or repeated key decode_json refuses, or an integer beyond Python's digit limit
        raise InputRefused(f"--data: not valid JSON ({str(e).splitlines()[0][:80]})") from None
    if not isinstance(value, dict):
        raise InputRefused("--data: must be a JSON object")
    return value


@cli.command()
@click.argument("type_name", metavar="TYPE")
@click.option("--participant", default=None, help="Pseudonymous participant id, e.g. S01-004.")
@click.option("--data", "data_text", default="{}", show_default=True, help="Payload as JSON, or @FILE.")
@click.option("--occurred-at", default=None, help="When it happened (ISO 8601 with offset; default now).")
@click.option("--meaning", type=click.Choice(MEANINGS), default=None, help="Signature meaning (21 CFR 11.50).")
@click.option("--reason", default=None, help="Required for corrections, voids and withdrawals.")
@click.option("--event-id", default=None, help="A UUID chosen by the client, so a retried append is refused, "
              "not doubled.")
@key_option
@passphrase_file_option
@click.pass_context
def append(ctx: click.Context, type_name: str, participant: str | None, data_text: str, occurred_at: str | None,
           meaning: str | None, reason: str | None, event_id: str | None, key: Path,
           passphrase_file: Path | None) -> None:
    """Append one signed event of any catalogue type."""
    note_attempt(ctx, "append", type_name, participant)
    trial = Trial(open_store(ctx))  # opened first, so every refusal below reaches the security log
    command = Command(type_name, participant, _parse_data(data_text), occurred_at, meaning, reason, event_id)
    signer = load_signer(key, passphrase_file)
    env = trial.append(command, signer)
    emit(ctx, {"event_id": env.event_id, "participant": participant, "position": env.position},
         f"appended {env.type} {env.event_id}" + (f" to {participant} at #{env.position}" if participant else ""))


@cli.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--key", "key", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Your encrypted private key file (not needed for a signed-log migration).")
@passphrase_file_option
@click.pass_context
def import_(ctx: click.Context, file: Path, key: Path | None, passphrase_file: Path | None) -> None:
    """Append a JSON Lines file, all or nothing; or migrate an exported signed log into an empty ledger."""
    from domain.importer import import_file
    from ledger.signed_log import import_signed_log, is_signed_log

    with read_once(file) as data:  # read exactly once: what is checked is what is written
        if is_signed_log(data):
            n = import_signed_log(data, SignerRegistry(), lambda: open_store(ctx, create=True))
            emit(ctx, {"imported": n}, f"imported {n} signed events from {file}, hashes and signatures unchanged")
            return
        if key is None:
            raise click.UsageError("--key is required to import unsigned lines")
        note_attempt(ctx, "import")
        trial = Trial(open_store(ctx))
        signer = load_signer(key, passphrase_file)
        with progress(ctx, "importing") as tick:
            n = import_file(trial, data, signer, tick, name=str(file))
    emit(ctx, {"imported": n}, f"imported {n} events from {file}")


@cli.command()
@click.option("--jobs", type=click.IntRange(1, 64), default=None, help="Signature-checking processes (default: cores).")
@click.option("--expect-root", default=None, metavar="FPR", help="Fail unless the root key has this fingerprint.")
@click.option("--checkpoint", "checkpoint_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="A checkpoint you hold: prove today's log extends it (catches truncation and rewrites).")
@click.option("--since-checkpoint", is_flag=True, help="With --checkpoint: verify only the events after it.")
@witnessing.witness_options
@click.pass_context
def verify(ctx: click.Context, jobs: int | None, expect_root: str | None, checkpoint_file: Path | None,
           since_checkpoint: bool, witness_keys: tuple[str, ...], quorum: int | None) -> None:
    """Check every hash link, signature and authorisation in the log."""
    from cli import proofs
    from ledger.verify_log import verify_log

    if since_checkpoint and checkpoint_file is None:
        raise click.UsageError("--since-checkpoint needs --checkpoint FILE")
    if (witness_keys or quorum is not None) and checkpoint_file is None:
        raise click.UsageError("--witness and --quorum need --checkpoint FILE")
    note = None
    if checkpoint_file is not None:
        try:
            note = checkpoint_file.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise click.BadParameter(str(getattr(e, "strerror", None) or e), param_hint="--checkpoint") from None
    store = open_store(ctx)
    origin = proofs.checkpoint_origin(store)
    with progress(ctx, "verifying", store.count()) as tick:
        report, cp = verify_log(store, SignerRegistry(), jobs=jobs, note=note, since=since_checkpoint,
                                authority_streams=(STUDY_STREAM,), on_progress=lambda n: tick(1000), origin=origin)
    newest_witnessed = witnessing.add_time_findings(store, report, witness_keys, note)
    findings = report.sorted()
    verdict = judge(report, expect_root=expect_root, since_checkpoint=since_checkpoint)
    witnessed_ok, witnessed = witnessing.verify_witnessed(note, witness_keys, quorum)
    ok = verdict.ok and witnessed_ok
    payload = {
        "ok": ok, "events": report.events, "root_fingerprint": report.root_fingerprint, "origin": origin,
        "expected_root": expect_root, "head_position": report.head_position,
        "head_hash": report.head_hash.hex(), "tree_size": report.tree_size, "tree_root": report.tree_root.hex(),
        "checkpoint_size": cp.size if cp else None, "since_checkpoint": since_checkpoint,
        "finding_count": report.finding_count,
        "findings": [{"position": f.position, "event_id": f.event_id, "reason": f.reason} for f in findings],
        "witnessed": witnessed, "newest_witnessed": newest_witnessed,
    }
    if ctx.obj.get("json"):
        emit(ctx, payload, "")
    else:
        click.echo(f"root key fingerprint: {report.root_fingerprint}")
        click.echo(f"log origin: {origin}")
        click.echo(f"events checked: {report.events}" + (" (after the checkpoint)" if since_checkpoint else ""))
        click.echo(f"tree size: {report.tree_size}  root: {report.tree_root.hex()}")
        if cp is not None:
            click.echo(f"checkpoint: size {cp.size}, root {cp.root.hex()}")
        witnessing.echo_cosignatures(ctx, witnessed_ok, witnessed)
        if newest_witnessed:
            click.echo(f"newest witnessed state of this ledger: {newest_witnessed}")
    if not verdict.ok:
        click.echo(f"FAIL: {verdict.reason}", err=True)
        if verdict.more:
            click.echo(f"({report.finding_count} findings in all; --json lists them)", err=True)
    elif not witnessed_ok:
        click.echo(f"FAIL: {witnessing.shortfall(witnessed)}", err=True)
    elif not ctx.obj.get("json"):
        extra = " and the log extends the checkpoint" if cp is not None else ""
        click.echo(f"OK: every hash link, signature and authorisation verifies{extra}")
    ctx.exit(0 if ok else 1)


@cli.command("schema")
@click.argument("type_name", metavar="[TYPE]", required=False, type=click.Choice(list(CATALOGUE)))
def schema(type_name: str | None) -> None:
    """JSON Schema of one event type's payload, or of every type's, keyed by type.

    What `append --data` and `import` lines must hold; the same pydantic
    models check them, so the schema cannot drift from the checks.
    """
    payload = json_schema(type_name) if type_name else {name: json_schema(name) for name in CATALOGUE}
    click.echo(json.dumps(payload, indent=2, sort_keys=True))


# Every other command lives in its own module, imported when the command is named (LedgerGroup.lazy).
cli.lazy = {
    **dict.fromkeys(("show", "participants", "audit", "deviations", "summary", "rebuild"), "cli.read"),
    **dict.fromkeys(("checkpoint", "prove", "verify-proof"), "cli.proofs"),
    **dict.fromkeys(("export", "report"), "cli.exports"),
    **dict.fromkeys(("document", "amend"), "cli.documents"),
    "witness": "cli.witness",
    "verify-package": "cli.package",
    "demo": "cli.demo:demo",
    "key": "cli.keys:key",
    **dict.fromkeys(("queries", "sdv", "signoff", "verify-source", "security-log"), "cli.datamanagement"),
}


def main() -> None:
    cli(obj={}, prog_name="trial-ledger")


if __name__ == "__main__":
    main()
