"""Limits on the shape of user input, checked before pydantic or the canonical encoder see it.

Deep nesting would reach Python's recursion limit in validation or in the
RFC 8785 encoder and end as an internal error (exit 4); it is refused here
as input (exit 3) instead. No payload or protocol document nests anywhere
near this deep.
"""

from __future__ import annotations

from typing import Any

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
