"""Hostile requests to a running witness (C2SP tlog-witness): never a 5xx, never a change of state.

A witness at a known state (it has cosigned the toy log at size 5) is sent random bodies: bytes,
mangled lines of a real request, sizes of any length and spelling, bad proofs, unknown origins,
forged signatures. Each answer must be a 4xx of the protocol, and the stored size and root must
be exactly as before; only requests with a valid log signature may ever leave evidence.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.keys import generate
from ledger.witness.app import running
from ledger.witness.core import Witness
from ledger.witness.state import WitnessState
from tests.fuzzing import scaled, tried
from tests.witness_helpers import ORIGIN, ToyLog

REQUESTS = scaled(150, 1_000)
PROTOCOL_ANSWERS = {400, 403, 404, 409, 413, 422}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ToyLog, WitnessState]]:
    log = ToyLog()
    log.grow(5)
    state = WitnessState(tmp_path_factory.mktemp("wfuzz") / "w.db")
    witness = Witness("witness.test/fuzz", generate(), state, {ORIGIN: [log.signer.public_raw]})
    with running(witness) as base, httpx.Client(timeout=10, trust_env=False) as client:
        assert client.post(base + "/add-checkpoint", content=log.body(0)).status_code == 200
        yield base + "/add-checkpoint", log, state
    state.close()


def _mangle(body: bytes, data: st.DataObject) -> bytes:
    lines = body.split(b"\n")
    i = data.draw(st.integers(0, len(lines) - 1))
    choice = data.draw(st.sampled_from(["replace", "drop", "duplicate", "flip", "size", "sig"]))
    if choice == "replace":
        lines[i] = data.draw(st.binary(max_size=80))
    elif choice == "drop":
        del lines[i]
    elif choice == "duplicate":
        lines.insert(i, lines[i])
    elif choice == "flip" and lines[i]:
        b = bytearray(lines[i])
        b[data.draw(st.integers(0, len(b) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        lines[i] = bytes(b)
    elif choice == "size":
        size = data.draw(st.sampled_from(["9" * 5000, "-1", "05", "\u0665", "18446744073709551616", " 5", "5 "]))
        lines[i] = (b"old " if i == 0 else b"") + size.encode()
    elif choice == "sig":
        lines[i] = b"\xe2\x80\x94 " + ORIGIN.encode() + b" " + base64.b64encode(data.draw(st.binary(max_size=80)))
    return b"\n".join(lines)


@settings(max_examples=REQUESTS, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_hostile_requests_get_a_4xx_and_change_nothing(server: tuple[str, ToyLog, WitnessState],
                                                       data: st.DataObject) -> None:
    url, log, state = server
    before = state.latest(ORIGIN)
    honest = log.body(data.draw(st.sampled_from([0, 5])))
    body = data.draw(st.one_of(st.binary(max_size=400), st.just(honest).map(lambda b: b)))
    if body == honest or data.draw(st.booleans()):
        body = _mangle(honest, data)
    r = httpx.post(url, content=body, timeout=10, trust_env=False)
    tried("hostile witness requests")
    assert r.status_code < 500, (r.status_code, body[:200])
    if r.status_code == 200:  # only a request the mangling left valid (e.g. a signature line twice): same checkpoint
        checkpoint_body = body.partition(b"\n\n")[2].partition(b"\n\n")[0]
        assert checkpoint_body == log.note().encode().partition(b"\n\n")[0], body[:200]
    else:
        assert r.status_code in PROTOCOL_ANSWERS, (r.status_code, r.text)
    assert state.latest(ORIGIN) == before
