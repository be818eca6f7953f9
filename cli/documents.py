"""`trial-ledger document register|check|list` and `trial-ledger amend` (SPEC §10)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from domain.amendments import amendment_commands, read_protocol_file
from domain.documents import KINDS, Document, file_sha256, registration_data
from domain.service import Command, Trial

from cli.options import emit, key_option, load_signer, open_store, passphrase_file_option
from cli.read import IsoTime

existing_file = click.Path(path_type=Path, dir_okay=False, exists=True)


def _row(d: Document) -> dict[str, object]:
    return {"kind": d.kind, "version": d.version, "sha256": d.sha256, "file_name": d.file_name, "size": d.size,
            "event_id": d.event_id, "registered_by": d.author, "registered_at": d.registered_at}


@click.group()
def document() -> None:
    """Register controlled documents (ICF, protocol) by the hash of their file, and check files against them."""


@document.command("register")
@click.argument("file", type=existing_file)
@click.option("--kind", type=click.Choice(KINDS), required=True)
@click.option("--version", "version", required=True, help="The document's version, e.g. the ICF version.")
@key_option
@passphrase_file_option
@click.pass_context
def register(ctx: click.Context, file: Path, kind: str, version: str, key: Path, passphrase_file: Path | None) -> None:
    """Append a signed DocumentRegistered event with FILE's SHA-256 (admin)."""
    data = registration_data(file, kind, version)
    signer = load_signer(key, passphrase_file)
    env = Trial(open_store(ctx)).append(Command("DocumentRegistered", None, data), signer)
    emit(ctx, {"event_id": env.event_id, **data},
         f"registered {file.name} as {kind} version {version}, sha256 {data['sha256']}")


@document.command("check")
@click.argument("file", type=existing_file)
@click.pass_context
def check(ctx: click.Context, file: Path) -> None:
    """Say which registered document FILE is (exit 0), or exit 1 if it is none of them."""
    sha256, _size = file_sha256(file)
    documents = Trial(open_store(ctx)).registry().documents
    found = documents.by_hash(sha256)
    if found is not None:
        emit(ctx, {"registered": True, "file": str(file), **_row(found)},
             f"{file}: registered {found.kind} version {found.version} ({found.file_name}), sha256 {sha256}, "
             f"registered by {found.author} at {found.registered_at}")
        return
    namesake = next((d for d in documents.documents if d.file_name == file.name), None)
    hint = (f"; {namesake.kind} version {namesake.version} was registered under this name with sha256 "
            f"{namesake.sha256}: this copy differs") if namesake else ""
    emit(ctx, {"registered": False, "file": str(file), "sha256": sha256},
         f"{file}: matches no registered document (sha256 {sha256}){hint}")
    ctx.exit(1)


@document.command("list")
@click.pass_context
def list_(ctx: click.Context) -> None:
    """Every registered document, by kind and version."""
    rows = [_row(d) for d in Trial(open_store(ctx)).registry().documents.sorted()]
    text = "\n".join(f"{r['kind']:<9} {r['version']:<8} {r['sha256']}  {r['file_name']}  "
                     f"({r['registered_by']}, {r['registered_at']})" for r in rows)
    emit(ctx, rows, text or "no registered documents")


@click.command()
@click.option("--protocol", "protocol_path", type=existing_file, required=True,
              help="The new protocol file (TOML or JSON); it is registered and its hash named by the amendment.")
@click.option("--icf-version", default=None, help="The new ICF version (must be the one the protocol file names).")
@click.option("--reconsent-required", is_flag=True, help="Active participants must re-consent on the new ICF "
              "before further procedures.")
@click.option("--effective-at", type=IsoTime(), default=None, help="When the amendment takes effect (default now).")
@key_option
@passphrase_file_option
@click.pass_context
def amend(ctx: click.Context, protocol_path: Path, icf_version: str | None, reconsent_required: bool,
          effective_at: datetime | None, key: Path, passphrase_file: Path | None) -> None:
    """Register a new protocol document and amend the study to it, in one transaction (admin)."""
    trial = Trial(open_store(ctx))
    commands = amendment_commands(read_protocol_file(protocol_path), protocol_path.name, trial.registry().documents,
                                  icf_version=icf_version,
                                  reconsent_required=reconsent_required, effective_at=effective_at)
    envelopes = trial.append_batch(commands, load_signer(key, passphrase_file))
    amended = envelopes[-1]
    emit(ctx, {"event_ids": [e.event_id for e in envelopes], "protocol_version": amended.data["protocol_version"],
               "protocol_sha256": amended.data["protocol_sha256"], "icf_version": amended.data["icf_version"],
               "reconsent_required": reconsent_required},
         f"amended to protocol {amended.data['protocol_version']} (sha256 {amended.data['protocol_sha256']}), "
         f"ICF {amended.data['icf_version']}" + (", re-consent required" if reconsent_required else ""))


COMMANDS = (document, amend)
