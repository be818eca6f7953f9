"""``trial-ledger witness …``: run a C2SP tlog-witness, and manage the log's witness set (SPEC §9)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from domain.service import Command, Trial
from ledger import cosignature
from ledger.errors import UsageProblem
from ledger.keys import public_from_b64, raw_public_bytes, read_public
from ledger.note import valid_name
from ledger.witness.app import bind, make_server
from ledger.witness.core import Witness
from ledger.witness.state import WitnessState

from cli.options import emit, key_option, load_signer, open_store, passphrase_file_option
from cli.witnessing import read_vkey


@click.group()
def witness() -> None:
    """Run a witness, or register the witnesses that cosign this ledger's checkpoints."""


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535 or not host:
        raise click.BadParameter("expected HOST:PORT", param_hint="--listen")
    return host.strip("[]"), int(port)


def _logs(values: tuple[str, ...]) -> dict[str, list[bytes]]:
    logs: dict[str, list[bytes]] = {}
    for value in values:
        origin, sep, path = value.rpartition("=")
        if not sep or not origin:
            raise click.BadParameter(f"{value}: expected ORIGIN=PUBKEYFILE", param_hint="--log")
        raw = raw_public_bytes(public_from_b64(read_public(Path(path))))
        logs.setdefault(origin, []).append(raw)
    return logs


@witness.command("serve")
@click.option("--name", required=True, help="The witness's key name, e.g. ec.example.org/witness.")
@key_option
@passphrase_file_option
@click.option("--state", "state_file", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="SQLite file holding each log's latest cosigned checkpoint and the evidence.")
@click.option("--log", "logs", required=True, multiple=True, metavar="ORIGIN=PUBKEYFILE",
              help="A log this witness follows and a public key (.pub) trusted to sign its checkpoints.")
@click.option("--listen", default="127.0.0.1:7380", show_default=True, help="HOST:PORT (port 0: any free port).")
def serve(name: str, key: Path, passphrase_file: Path | None, state_file: Path, logs: tuple[str, ...],
          listen: str) -> None:
    """Serve POST /add-checkpoint per C2SP tlog-witness until interrupted."""
    if not valid_name(name):
        raise click.BadParameter("a key name has no spaces and no '+'", param_hint="--name")
    host, port = _listen(listen)
    signer = load_signer(key, passphrase_file)
    trusted = _logs(logs)
    try:
        sock = bind(host, port)
    except OSError as e:
        raise UsageProblem(f"--listen {listen}: {e.strerror}") from None
    w = Witness(name, signer, WitnessState(state_file), trusted)
    click.echo(f"witness {name} listening on http://{host}:{sock.getsockname()[1]}")
    click.echo(f"vkey {w.vkey}", nl=True)
    sys.stdout.flush()
    make_server(w).run(sockets=[sock])


@witness.command("vkey")
@click.option("--name", required=True)
@key_option
@passphrase_file_option
def vkey(name: str, key: Path, passphrase_file: Path | None) -> None:
    """Print the witness's verifier key (signed-note vkey, cosignature/v1 type 0x04)."""
    click.echo(str(cosignature.vkey_for(name, load_signer(key, passphrase_file))))


@witness.command("evidence")
@click.option("--state", "state_file", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def evidence(ctx: click.Context, state_file: Path) -> None:
    """Requests that prove a log misbehaved, and each log's latest cosigned size."""
    if not state_file.exists():
        raise UsageProblem(f"--state {state_file}: no such witness state file")
    state = WitnessState(state_file)
    try:
        rows, logs = state.evidence(), state.logs()
    finally:
        state.close()
    if ctx.obj and ctx.obj.get("json"):
        click.echo(json.dumps({"logs": logs, "evidence": rows}, indent=2))
        return
    for log in logs:
        click.echo(f"log {log['origin']}: latest cosigned size {log['size']}")
    if not rows:
        click.echo("no evidence of misbehaviour")
    for row in rows:
        click.echo(f"#{row['id']} {row['at']} {row['origin']}: {row['reason']}")
        if row["stored_checkpoint"]:
            click.echo("  the checkpoint it had cosigned:\n    "
                       + row["stored_checkpoint"].rstrip("\n").replace("\n", "\n    "))
        click.echo("  the request (valid log signature):\n    " + row["request"].rstrip("\n").replace("\n", "\n    "))


@witness.command("add")
@click.option("--name", required=True, help="The witness's key name (as in its vkey).")
@click.option("--url", required=True, help="Submission prefix, e.g. http://127.0.0.1:7380.")
@click.option("--vkey", "vkey_text", required=True, help="The witness's verifier key (string or file).")
@key_option
@passphrase_file_option
@click.pass_context
def add(ctx: click.Context, name: str, url: str, vkey_text: str, key: Path, passphrase_file: Path | None) -> None:
    """Register a witness (a signed study event)."""
    data = {"name": name, "url": url, "vkey": str(read_vkey(vkey_text, "--vkey"))}
    env = Trial(open_store(ctx)).append(Command("WitnessAdded", None, data), load_signer(key, passphrase_file))
    emit(ctx, {"event_id": env.event_id}, f"registered witness {name} at {url}")


@witness.command("remove")
@click.option("--name", required=True)
@click.option("--reason", required=True)
@key_option
@passphrase_file_option
@click.pass_context
def remove(ctx: click.Context, name: str, reason: str, key: Path, passphrase_file: Path | None) -> None:
    """Stop asking a witness (a signed study event)."""
    env = Trial(open_store(ctx)).append(Command("WitnessRemoved", None, {"name": name}, reason=reason),
                                        load_signer(key, passphrase_file))
    emit(ctx, {"event_id": env.event_id}, f"removed witness {name}")


@witness.command("policy")
@click.option("--quorum", required=True, type=click.IntRange(0, 100))
@key_option
@passphrase_file_option
@click.pass_context
def policy(ctx: click.Context, quorum: int, key: Path, passphrase_file: Path | None) -> None:
    """Set how many cosignatures a checkpoint needs (a signed study event)."""
    env = Trial(open_store(ctx)).append(Command("WitnessPolicySet", None, {"quorum": quorum}),
                                        load_signer(key, passphrase_file))
    emit(ctx, {"event_id": env.event_id}, f"checkpoints now need {quorum} cosignatures")


COMMANDS = (witness,)
