"""Start the key file's Argon2id while the CLI is still importing (issue 21: append latency).

Loading a key runs the file's memory-hard KDF (m=64 MiB, t=3, p=4: ~180 ms here; a
security decision, ledger/keyfile.py), and a command's imports cost more than that
again. OpenSSL's Argon2 releases the GIL, so the entry point (``cli.entry``) hands
the ``--key`` named on the command line to a thread before importing the rest, and
``cli.options.load_signer`` takes the result instead of deriving again, but only if
it would have derived exactly the same thing: same path, same file bytes (read
again and compared), same passphrase. Otherwise, and whenever the passphrase must
be prompted for, the key is loaded as before. The KDF is never skipped: the result
used is the one this process derived; the thread only starts it earlier.

Nothing here prints or raises: a failure is kept and raised where ``load_signer``
would have raised it, after the same warnings and in the same order.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

PASSPHRASE_ENV = "TRIAL_LEDGER_PASSPHRASE"
MAX_FILE_BYTES = 64 * 1024  # ledger.keyfile.MAX_FILE_BYTES (not imported: this module must stay cheap)


class _Derivation:
    """One key file opened in a thread: the inputs it used and the outcome."""

    def __init__(self, where: str, passphrase_file: str | None):
        self.where = where
        self.passphrase_file = passphrase_file
        self.blob: bytes | None = None
        self.passphrase: str | None = None
        self.signer: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="key-derivation", daemon=True)

    def _run(self) -> None:
        try:
            if self.passphrase_file is not None:
                self.passphrase = Path(self.passphrase_file).read_text().rstrip("\r\n")
            else:
                self.passphrase = os.environ.get(PASSPHRASE_ENV, "")
            with open(self.where, "rb") as f:
                self.blob = f.read(MAX_FILE_BYTES + 1)
            from ledger import keyfile
            from ledger.keys import Signer

            if not keyfile.is_current(self.blob):
                return  # a legacy PKCS#12 file: loaded the old way, with its warning
            self.signer = Signer(private_key=keyfile.open_sealed(self.blob, self.passphrase, self.where))
        except BaseException as e:  # noqa: BLE001 - kept, and raised by the caller that asks for this key
            self.error = e


_pending: _Derivation | None = None


def _option(argv: list[str], name: str) -> str | None:
    """The value of ``name`` if it occurs exactly once (``--name VALUE`` or ``--name=VALUE``), else None."""
    values = []
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(name + "="):
            values.append(arg[len(name) + 1:])
    return values[0] if len(values) == 1 else None


def start(argv: list[str]) -> None:
    """Begin deriving the ``--key`` in ``argv`` when its passphrase needs no prompt."""
    global _pending
    key = _option(argv, "--key")
    passphrase_file = _option(argv, "--passphrase-file")
    if key is None or (passphrase_file is None and not os.environ.get(PASSPHRASE_ENV)):
        return
    _pending = _Derivation(str(Path(key)), passphrase_file)
    _pending.thread.start()


def take(key: Path, passphrase: str, blob: bytes) -> Any:
    """The Signer derived in advance for exactly these inputs, or None; raises what the derivation raised."""
    global _pending
    pending = _pending
    if pending is None or pending.where != str(key):
        return None
    _pending = None
    pending.thread.join()
    if pending.passphrase != passphrase or pending.blob != blob:
        return None
    if pending.error is not None:
        raise pending.error
    return pending.signer
