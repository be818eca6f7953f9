"""Canonical bytes of a JSON value: RFC 8785 (JSON Canonicalization Scheme).

Hashes and signatures are taken over these bytes, never over ``str(dict)``.
The ``rfc8785`` library is the reference; it is pure Python and costs
~75 µs for one envelope, most of an import's budget. So values that
``json.dumps`` already writes exactly as RFC 8785 does — strings, bools,
null, safe integers, floats written without an exponent, keys inside the
Basic Multilingual Plane below the surrogates — take a C-speed path, with
integral floats written as integers (RFC 8785 §3.2.2.3: 8.0 is "8").
Everything else goes to the library. ``tests/test_canonical.py`` checks the
two paths agree on generated values.
"""

from __future__ import annotations

import json
import math
from typing import Any

import rfc8785

MAX_SAFE_INTEGER = 2**53 - 1
_dumps = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False).encode


class _NeedsLibrary(Exception):
    pass


def _normalise(value: Any) -> Any:
    if value is None or value is True or value is False or isinstance(value, str):
        return value
    if isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value
        raise _NeedsLibrary
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _NeedsLibrary
        if value.is_integer():
            if abs(value) <= 2.0**53:  # exact, and written as an integer by both
                return int(value)
            raise _NeedsLibrary
        if "e" in repr(value):
            raise _NeedsLibrary
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or (not key.isascii() and max(key) >= "\ud800"):
                raise _NeedsLibrary
            out[key] = item if type(item) is str else _normalise(item)  # most values: no call
        return out
    if isinstance(value, (list, tuple)):
        return [_normalise(item) for item in value]
    raise _NeedsLibrary


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 encoding of ``value`` (dicts, lists, str, int, float, bool, None)."""
    try:
        return _dumps(_normalise(value)).encode("utf-8")
    except (_NeedsLibrary, UnicodeEncodeError):
        return rfc8785.dumps(value)
