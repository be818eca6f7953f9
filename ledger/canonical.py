"""Canonical bytes of a JSON value: RFC 8785 (JSON Canonicalization Scheme).

Hashes and signatures are taken over these bytes, never over ``str(dict)``
or ``json.dumps``, so that any implementation can recompute them.
"""

from __future__ import annotations

from typing import Any

import rfc8785


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 encoding of ``value`` (dicts, lists, str, int, float, bool, None)."""
    return rfc8785.dumps(value)
