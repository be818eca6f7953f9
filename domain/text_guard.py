"""NUL and lone surrogates refused at the door (SPEC §5.4, §6): text neither back end stores alike.

A NUL in any text field would make the two back ends disagree (PostgreSQL
refuses the row at INSERT time, deep inside the write lock, SQLite stores
it); a lone surrogate (``\udc00``, or a byte that is not UTF-8 on the
command line) is not Unicode text at all, and the canonical encoder would
fail on it inside the write lock. So every text field of a command is
checked before anything is decided, and the refusal names the field (exit 3).
"""

from __future__ import annotations

import re
from typing import Any

from ledger.errors import InputRefused


SURROGATE = re.compile("[\ud800-\udfff]")
# The JSON escapes that can spell a NUL or a surrogate: a line without them holds neither.
NEEDS_TEXT_SCAN = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def refuse_bad_text(value: Any, field: str) -> None:
    """Raise InputRefused naming the first field path whose text (or key) holds a NUL or a lone surrogate."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InputRefused(f"{field}: text may not contain a NUL character (\\u0000)")
        if SURROGATE.search(value):
            raise InputRefused(f"{field}: text is not valid Unicode (a lone surrogate, or bytes that are not UTF-8)")
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_bad_text(key, f"{field} (a key)")
            refuse_bad_text(item, f"{field}.{key}")
    elif isinstance(value, (list, tuple)):
        for n, item in enumerate(value):
            refuse_bad_text(item, f"{field}[{n}]")
