"""Checkpoints and proofs: checkpoint, prove inclusion|consistency, verify-proof (SPEC §5.2, §6)."""

from __future__ import annotations

import base64
import contextlib
from pathlib import Path

import click

from domain.cosigning import Collection
from domain.identifiers import canonical_event_id
from ledger import checkpoint as notes
from ledger.errors import InputRefused
from ledger.keys import Signer, read_public
from ledger.merkle import consistency_proof, inclusion_proof, leaf_hash
from ledger.merkle_log import MerkleLog
from ledger.proofs import ProofError, bundle_note, consistency_bundle, inclusion_bundle, verify_bundle
from ledger.store import Store
from projections.verified import open_verified

from cli import witnessing
from cli.options import emit, key_option, load_signer, open_store, passphrase_file_option


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputRefused(f"{what} {path}: {getattr(e, 'strerror', None) or e}") from None


def _write(out: Path | None, blob: bytes) -> None:
    if out is None:
        click.echo(blob.decode(), nl=False)
    else:
        out.write_bytes(blob)


def checkpoint_origin(store: Store) -> str | None:
    """This ledger's checkpoint origin (``ledger.checkpoint.log_origin`` of its study id and genesis event),
    or None when it is empty. One place: `checkpoint`, `verify` and the demo's witnesses use it.
    """
    first = store.page(0, 1)
    if not first:
        return None
    try:
        study_id = first[0].envelope().data.get("study_id")
    except ValueError:  # a damaged genesis row: verify reports it; the origin just will not match
        study_id = None
    return notes.log_origin(str(study_id or ""), first[0].hash)


@click.command()
@key_option
@passphrase_file_option
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the signed note here (default: stdout).")
@click.pass_context
def checkpoint(ctx: click.Context, key: Path, passphrase_file: Path | None, out: Path | None) -> None:
    """Sign a C2SP tlog-checkpoint of the whole log (root or log key) and collect witness cosignatures."""
    store = open_store(ctx)
    size, root, note, collection = sign_checkpoint(store, load_signer(key, passphrase_file))
    _write(out, note.encode())
    if out is not None:
        emit(ctx, {"tree_size": size, "root": root.hex(), "out": str(out)},
             f"checkpoint of {size} events written to {out}")
    if collection is not None:
        witnessing.report_collection(ctx, collection)




def sign_checkpoint(store: Store, signer: Signer) -> tuple[int, bytes, str, Collection | None]:
    """Sign the whole log's checkpoint, ask the registered witnesses to cosign it, store it (also for `demo`)."""
    verified = open_verified(store)  # the root of the verified log is signed, never that of a stored table
    registry = verified.registry()
    if registry.root_public is None or registry.study_id is None or registry.root_fingerprint is None:
        raise InputRefused("--db: the ledger is not initialised")
    if signer.public_raw not in registry.checkpoint_keys():
        raise InputRefused("--key: checkpoints are signed with the sponsor's root key (the key of `init`) "
                           "or a registered key of role log")
    size, root = verified.vstore.report.tree_size, verified.vstore.report.tree_root
    tree = MerkleLog(store)
    tree.sync()  # the stored tree stays a cache (witnesses read it); proofs are built from the verified log
    origin = checkpoint_origin(store)
    assert origin is not None
    cp = notes.Checkpoint(origin, size, root)
    note = cp.sign(signer)
    collection = witnessing.collect_for(store, tree, note)
    note = collection.note if collection else note
    tree.save_checkpoint(size, cp.root, note)
    return size, cp.root, note, collection


@click.group()
def prove() -> None:
    """Write a proof bundle an inspector can check offline."""


@prove.command("inclusion")
@click.argument("event_id")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.pass_context
def prove_inclusion(ctx: click.Context, event_id: str, out: Path | None) -> None:
    """Prove that one event is in the log of the latest checkpoint.

    The log is verified first; the checkpoint must be signed by a checkpoint
    key and reproduced by the verified log, and the path is built from the
    verified rows, never from the stored Merkle tables.
    """
    verified = open_verified(open_store(ctx), checkpoints=True)
    record = verified.vstore.record_by_event_id(event_id)
    if record is None:  # the same id in another spelling (urn:uuid:, upper case, no hyphens)
        with contextlib.suppress(InputRefused):
            record = verified.vstore.record_by_event_id(canonical_event_id(event_id))
    if record is None:
        raise InputRefused(f"EVENT_ID: no event {event_id} in the ledger")
    latest = verified.checkpoint()
    leaves = verified.vstore.leaf_hashes()
    index = next((i for i, leaf in enumerate(leaves) if leaf == leaf_hash(record.hash)), None)
    if latest is None or index is None or index >= latest.tree_size:
        raise InputRefused("no checkpoint covers this event yet; run `trial-ledger checkpoint` first")
    _write(out, inclusion_bundle(record, index, latest.note, inclusion_proof(index, leaves[:latest.tree_size])))


@prove.command("consistency")
@click.option("--old", "old_file", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="An earlier checkpoint (signed note).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.pass_context
def prove_consistency(ctx: click.Context, old_file: Path, out: Path | None) -> None:
    """Prove that the latest checkpoint's log extends an older checkpoint (paths from the verified log)."""
    old_note = _read_text(old_file, "--old")
    try:
        old = notes.parse(old_note)[0]
    except notes.CheckpointError as e:
        raise InputRefused(f"--old {old_file}: {e}") from None
    verified = open_verified(open_store(ctx), checkpoints=True)
    latest = verified.checkpoint()
    if latest is None or latest.tree_size < old.size or old.size == 0:
        raise InputRefused("no checkpoint at or beyond the old one; run `trial-ledger checkpoint` first")
    leaves = verified.vstore.leaf_hashes()[:latest.tree_size]
    proof = consistency_proof(old.size, leaves) if old.size < latest.tree_size else []
    _write(out, consistency_bundle(old_note, latest.note, proof))


@click.command("verify-proof")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--public-key", "public_key", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The sponsor's root public key (.pub).")
@click.option("--origin", default=None, metavar="ORIGIN",
              help="The log's origin as `verify` prints it: a checkpoint of any other log fails.")
@witnessing.witness_options
@click.pass_context
def verify_proof(ctx: click.Context, file: Path, public_key: Path, origin: str | None, witness_keys: tuple[str, ...],
                 quorum: int | None) -> None:
    """Check a proof bundle offline: no database needed; --witness/--quorum check its cosignatures."""
    try:
        blob = file.read_bytes()
    except OSError as e:
        raise InputRefused(f"FILE {file}: {e.strerror}") from None
    public = base64.b64decode(read_public(public_key))
    try:
        what = verify_bundle(blob, public, origin)
    except ProofError as e:
        click.echo(f"FAIL: {e}", err=True)
        ctx.exit(1)
    witnessed_ok, witnessed = witnessing.verify_witnessed(bundle_note(blob), witness_keys, quorum)
    witnessing.echo_cosignatures(ctx, witnessed_ok, witnessed)
    if not witnessed_ok:
        click.echo(f"FAIL: {witnessing.shortfall(witnessed)}", err=True)
        ctx.exit(1)
    emit(ctx, {"ok": True, "statement": what, "witnessed": witnessed}, f"OK: {what}")


COMMANDS = (checkpoint, prove, verify_proof)
