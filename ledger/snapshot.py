"""Read an input file exactly once, so what is verified is what is written.

A path can change between two reads: a FIFO can serve one file and then
another, and a file can be edited between a check and an insert. An import
therefore copies its input once into an anonymous temporary file (no name,
so nothing else can open or swap it) and reads only that copy afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ledger.errors import InputRefused

Source = Path | IO[bytes]


@contextmanager
def read_once(path: Path) -> Iterator[IO[bytes]]:
    """The bytes of ``path`` as read now, in a private seekable file positioned at its start."""
    with tempfile.TemporaryFile() as copy:
        try:
            with path.open("rb") as f:
                shutil.copyfileobj(f, copy, 1 << 20)
        except OSError as e:
            raise InputRefused(f"{path}: {e.strerror}") from None
        copy.seek(0)
        yield copy


@contextmanager
def opened(source: Source) -> Iterator[IO[bytes]]:
    """A binary handle at the start of ``source``: a path is opened, a handle rewound (and left open)."""
    if isinstance(source, Path):
        try:
            handle = source.open("rb")
        except OSError as e:
            raise InputRefused(f"{source}: {e.strerror}") from None
        with handle:
            yield handle
        return
    source.seek(0)
    yield source
