"""The ``trial-ledger`` executable: start the key's KDF, then import and run the CLI (see ``cli.prefetch``)."""

from __future__ import annotations

import sys


def main() -> None:
    from cli import prefetch

    prefetch.start(sys.argv[1:])
    from cli.main import main as run

    run()
