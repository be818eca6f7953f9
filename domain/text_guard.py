"""NUL refused at the door (SPEC §5.4, §6): PostgreSQL text cannot hold it, SQLite would.

A NUL in any text field would make the two back ends disagree (one refuses
the row at INSERT time, deep inside the write lock, the other stores it),
so every text field of a command is checked before anything is decided,
and the refusal names the field (exit 3).
"""

from __future__ import annotations

from typing import Any

from ledger.errors import InputRefused


def refuse_nul(value: Any, field: str) -> None:
    """Raise InputRefused naming the first field path whose text (or key) holds a NUL character."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InputRefused(f"{field}: text may not contain a NUL character (\\u0000)")
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_nul(key, f"{field} (a key)")
            refuse_nul(item, f"{field}.{key}")
    elif isinstance(value, (list, tuple)):
        for n, item in enumerate(value):
            refuse_nul(item, f"{field}[{n}]")
