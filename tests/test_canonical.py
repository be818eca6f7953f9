"""The fast canonical-JSON path must give exactly the bytes of the rfc8785 reference library."""

from __future__ import annotations

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import canonical_bytes

scalars = (st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(), inner, max_size=4), max_leaves=20)


@settings(max_examples=2000, deadline=None)
@given(values)
def test_fast_path_equals_the_library(value: object) -> None:
    try:
        expected = rfc8785.dumps(value)
    except Exception:  # noqa: BLE001 - the library refuses it (e.g. lone surrogates): so must we
        try:
            canonical_bytes(value)
        except Exception:  # noqa: BLE001
            return
        raise AssertionError("fast path accepted what RFC 8785 refuses") from None
    assert canonical_bytes(value) == expected


def test_edge_numbers_and_keys() -> None:
    for value in (8.0, 1e6, 1e16, 1e21, 1e-7, 0.000001, -0.0, 5e-324, 2.0**53, 123456789.123,
                  {"\U0001F600": 1, "\ufb33": 2, "a": 3}, {"\u20ac": [1.5, "x\u2028y", "\x7f\x1f"]}):
        assert canonical_bytes(value) == rfc8785.dumps(value), value
