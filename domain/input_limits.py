"""Limits on the shape of user input, checked before pydantic or the canonical encoder see it.

Deep nesting would reach Python's recursion limit in validation or in the
RFC 8785 encoder and end as an internal error (exit 4); it is refused here
as input (exit 3) instead. No payload or protocol document nests anywhere
near this deep.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ledger.canonical import MAX_SAFE_INTEGER
from ledger.errors import InputRefused

MAX_DEPTH = 32


def check_depth(value: Any, where: str = "data", limit: int = MAX_DEPTH) -> None:
    """Refuse a JSON value nested more than ``limit`` levels deep (iteratively: no recursion)."""
    if limit >= 1 and isinstance(value, dict) and not any(isinstance(v, (dict, list)) for v in value.values()):
        return  # a flat object, as nearly every payload is: one level
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise InputRefused(f"{where}: nested more than {limit} levels deep")
        stack.extend((child, depth + 1) for child in children)


def reject_constant(name: str) -> Any:
    """``json.loads(parse_constant=...)``: NaN and Infinity are not JSON, and would be stored as null."""
    raise ValueError(f"{name} is not a JSON number")


def finite_float(text: str) -> float:
    """``parse_float``: 1e400 parses to infinity, which JSON cannot carry and would be stored as null."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is beyond the range of a JSON number")
    return value


def safe_int(text: str) -> int:
    """``parse_int``: an integer beyond ±(2^53 - 1) has no exact RFC 8785 form, so it cannot be signed."""
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise ValueError(f"{text[:40]} is beyond ±(2^53 - 1), the integers signed JSON keeps exact")
    return value


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: a key given twice is ambiguous (RFC 7493 §2.3); the signed value would be the last."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _item in pairs:
            if key in seen:
                raise ValueError(f"key {key[:40]!r} appears twice in one object")
            seen.add(key)
    return value


# Every JSON a user hands the writer (import lines, --data) is read by this one decoder.
decode_json = json.JSONDecoder(parse_constant=reject_constant, parse_float=finite_float, parse_int=safe_int,
                               object_pairs_hook=unique_keys).decode
