"""Shared CLI plumbing: error mapping, --db, keys and passphrases, output."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ledger.errors import InputRefused, LedgerError, UsageProblem
from ledger.keyfile import MAX_FILE_BYTES
from ledger.keys import Signer, is_legacy_key_file, is_world_readable, read_private
from ledger.store import Store

from cli import prefetch
from cli.refusals import note_key, record_refusal
from cli.text import one_line

PASSPHRASE_ENV = "TRIAL_LEDGER_PASSPHRASE"


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(dict)
        ctx.obj["json"] = True


def json_option() -> click.Option:
    """``--json`` after the command: the same switch as ``trial-ledger --json COMMAND``."""
    return click.Option(["--json"], is_flag=True, expose_value=False, is_eager=True, callback=_set_json,
                        help="Machine-readable output (same as the group's --json).")


def accept_json(command: click.Command) -> None:
    """Give ``command`` (and every subcommand of a group) a trailing ``--json``, unless it has one."""
    if not any("--json" in p.opts for p in command.params if isinstance(p, click.Option)):
        command.params.append(json_option())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            accept_json(sub)


def _load_command(spec: str, name: str) -> click.Command:
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    command = getattr(module, attr) if attr else next((c for c in module.COMMANDS if c.name == name), None)
    if not isinstance(command, click.Command) or command.name != name:
        raise RuntimeError(f"internal: {spec} does not define the command {name!r}")
    return command


class LedgerGroup(click.Group):
    """Maps every library error to its one-line message and exit code (SPEC §6).

    Every command it resolves accepts ``--json`` after the command too, so a
    command registered from any module gets it without doing anything.
    """

    # Commands imported only when named (``name -> "module"`` whose COMMANDS holds it, or ``"module:attr"``):
    # importing every command's module cost `append` ~0.3 s of start-up for commands it never runs.
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, str] = {}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self.lazy:
            command = _load_command(self.lazy[cmd_name], cmd_name)
            self.add_command(command)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            accept_json(command)
        return name, command, rest

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """Usage errors as one line naming the option (exit 2), instead of click's usage block."""
        run: Any = super().main  # click's overloads do not take *args
        if not standalone_mode:
            return run(*args, standalone_mode=False, **kwargs)
        try:
            code = run(*args, standalone_mode=False, **kwargs)
        except click.ClickException as e:
            click.echo(f"error: {one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LedgerError as e:
            click.echo(f"error: {one_line(str(e))}", err=True)
            if isinstance(e, InputRefused):
                record_refusal(ctx, str(e))
            ctx.exit(e.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:
            # The reader (e.g. `| head`) has what it wanted; stop quietly.
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stdout must stay writable for interpreter exit
            ctx.exit(0)
        except KeyboardInterrupt:
            click.echo("error: interrupted; nothing half-written (each append is one transaction)", err=True)
            ctx.exit(130)
        except Exception as e:  # noqa: BLE001 - never a traceback for users
            click.echo(f"error: internal error ({type(e).__name__}): {one_line(str(e))[:300]}", err=True)
            ctx.exit(4)


def open_store(ctx: click.Context, *, create: bool = False) -> Store:
    """The ledger at --db; only ``create=True`` (init, demo, import into a new target) may create one."""
    store = Store(ctx.obj["db"], create=create)
    ctx.call_on_close(store.close)
    ctx.obj["ledger_opened"] = True  # a refusal after this point may be logged (cli.refusals)
    return store


def passphrase(passphrase_file: Path | None, *, confirm: bool = False) -> str:
    """From --passphrase-file, else $TRIAL_LEDGER_PASSPHRASE, else a prompt on a terminal."""
    if passphrase_file is not None:
        try:
            return passphrase_file.read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageProblem(f"--passphrase-file {passphrase_file}: {getattr(e, 'strerror', None) or e}") from None
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV]
    if not sys.stdin.isatty():
        raise UsageProblem(f"passphrase: none given; set {PASSPHRASE_ENV}, use --passphrase-file, or run on a terminal")
    return str(click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm))


def load_signer(key: Path, passphrase_file: Path | None) -> Signer:
    if is_world_readable(key):
        click.echo(f"warning: key file {key} is readable by other users; run chmod 600 {key}", err=True)
    if is_legacy_key_file(key):
        click.echo(f"warning: key file {key} is legacy PKCS#12, whose passphrase can be guessed cheaply; "
                   f"run `trial-ledger key rewrap {key}`", err=True)
    note_key(key)
    phrase = passphrase(passphrase_file)
    signer = _prefetched(key, phrase) or read_private(key, phrase)
    note_key(key, signer.key_id)
    return signer


def _prefetched(key: Path, phrase: str) -> Signer | None:
    """The key derived while the CLI imported (``cli.prefetch``), if it was derived from these very inputs."""
    try:
        with key.open("rb") as f:
            blob = f.read(MAX_FILE_BYTES + 1)
    except OSError:
        return None  # read_private names the problem
    signer = prefetch.take(key, phrase, blob)
    return signer if isinstance(signer, Signer) else None


@contextmanager
def progress(ctx: click.Context, label: str, length: int | None = None) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal; silent otherwise (SPEC §6). Yields a tick(n) function."""
    if not sys.stderr.isatty() or ctx.obj.get("json"):
        yield lambda n: None
        return
    bar: Any
    with click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar.update


def emit(ctx: click.Context, payload: Any, text: str) -> None:
    """Print ``payload`` as JSON under --json, else the human text."""
    if ctx.obj.get("json"):
        click.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))
    else:
        click.echo(text)


key_option = click.option("--key", "key", required=True, type=click.Path(path_type=Path, dir_okay=False),
                          help="Your encrypted private key file.")
passphrase_file_option = click.option("--passphrase-file", type=click.Path(path_type=Path, dir_okay=False),
                                      help=f"File holding the key's passphrase (else ${PASSPHRASE_ENV} or a prompt).")
