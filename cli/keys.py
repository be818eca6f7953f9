"""``trial-ledger key``: maintenance of key files (SPEC §5.1)."""

from __future__ import annotations

from pathlib import Path

import click

from ledger.keys import rewrap as rewrap_file

from cli.options import emit, passphrase, passphrase_file_option


@click.group()
def key() -> None:
    """Maintain encrypted key files."""


@key.command("rewrap")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@passphrase_file_option
@click.pass_context
def rewrap(ctx: click.Context, file: Path, passphrase_file: Path | None) -> None:
    """Re-encrypt FILE in place (Argon2id + ChaCha20-Poly1305), e.g. a legacy PKCS#12 key; atomic, mode 0600."""
    legacy = rewrap_file(file, passphrase(passphrase_file))
    emit(ctx, {"key": str(file), "was_legacy": legacy},
         f"rewrapped {file} ({'from PKCS#12 ' if legacy else ''}to Argon2id + ChaCha20-Poly1305, mode 0600)")
