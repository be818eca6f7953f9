"""verify-package: an inspector's one command, offline and without a database (SPEC §12)."""

from __future__ import annotations

import base64
from pathlib import Path

import click

from cli.options import emit
from ledger.errors import InputRefused
from ledger.keys import read_public
from ledger.note import NoteError, parse_vkey
from projections.package import verify_package as check_package


@click.command("verify-package")
@click.argument("package", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--public-key", "public_key", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The sponsor's root public key, as you pinned it (not taken from the package).")
@click.option("--witness", "witness_files", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="A witness verifier key file (C2SP vkey) you trust; repeat for each.")
@click.option("--quorum", type=click.IntRange(min=0), default=None,
              help="How many of the given witnesses must have cosigned the checkpoint (default: all given).")
@click.option("--jobs", type=click.IntRange(1, 64), default=None)
@click.pass_context
def verify_package(ctx: click.Context, package: Path, public_key: Path, witness_files: tuple[Path, ...],
                   quorum: int | None, jobs: int | None) -> None:
    """Check an inspection package: manifest signature, every file, the log, the checkpoint, and that the
    report, ODM and audit CSV are exactly what the log regenerates. Exit 1 names the first file that fails."""
    root = base64.b64decode(read_public(public_key))
    witnesses = []
    for path in witness_files:
        try:
            witnesses.append(parse_vkey(path.read_text()))
        except (OSError, UnicodeDecodeError, NoteError) as e:
            raise InputRefused(f"--witness {path}: {getattr(e, 'strerror', None) or e}") from None
    if quorum is not None and quorum > len(witnesses):
        raise click.BadParameter(f"{quorum} is more than the {len(witnesses)} witness key(s) given",
                                 param_hint="--quorum")
    verdict = check_package(package.read_bytes(), root, witnesses=witnesses,
                            quorum=len(witnesses) if quorum is None else quorum, jobs=jobs)
    emit(ctx, {"ok": True, "events": verdict.events, "checkpoint_size": verdict.checkpoint_size,
               "files": verdict.files, "witnesses": verdict.witnesses, "root_fingerprint": verdict.root_fingerprint},
         f"package OK: manifest signed by the pinned key; {verdict.events} events verify; the checkpoint covers "
         f"{verdict.checkpoint_size} of them" + (f", cosigned by {', '.join(verdict.witnesses)}"
                                                  if verdict.witnesses else "")
         + "; report.html, odm.xml and audit.csv are byte for byte what the log regenerates")


COMMANDS = (verify_package,)
