"""The log's side of C2SP tlog-witness: ask one witness to cosign a checkpoint.

The request is ``old <size>``, the consistency proof lines, an empty line
and the signed checkpoint. On 409 the witness says which size it holds;
the caller retries from there (a bounded number of times). Only
cosignatures from the witness's registered key over exactly this
checkpoint are accepted.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from ledger import checkpoint as notes
from ledger import cosignature
from ledger.note import NoteError, Signature, Vkey, parse_signature_lines

MAX_ATTEMPTS = 3
TIMEOUT = 10.0


@dataclass(frozen=True)
class Outcome:
    """What one witness did: a cosignature, or a refusal with why; ``alarm`` marks a split view."""

    name: str
    signature: Signature | None = None
    timestamp: int | None = None
    refusal: str | None = None
    alarm: bool = False


def request_body(old_size: int, proof: list[bytes], note: str) -> bytes:
    lines = [f"old {old_size}\n"] + [base64.b64encode(h).decode() + "\n" for h in proof]
    return ("".join(lines) + "\n" + note).encode()


def ask(name: str, url: str, vkey: Vkey, note: str, old_size: int,
        proof_from: Callable[[int], list[bytes]], client: httpx.Client | None = None) -> Outcome:
    """Ask ``url`` to cosign ``note``, starting from ``old_size`` and following the witness's 409s."""
    cp, text, _ = notes.parse(note)
    own = client or httpx.Client(timeout=TIMEOUT, trust_env=False)
    try:
        for _ in range(MAX_ATTEMPTS):
            if old_size > cp.size:
                return Outcome(name, refusal=f"SPLIT-VIEW ALARM: the witness holds size {old_size}, "
                                             f"above this checkpoint's {cp.size} (the log was truncated)",
                               alarm=True)
            try:
                r = own.post(url.rstrip("/") + "/add-checkpoint",
                             content=request_body(old_size, proof_from(old_size), note))
            except httpx.HTTPError as e:
                return Outcome(name, refusal=f"unreachable ({type(e).__name__})")
            if r.status_code == 200:
                return _accept(name, r.text, text, vkey)
            if r.status_code == 409:
                held = _size(r)
                if held is None:
                    return Outcome(name, refusal="409 without a size")
                if held == old_size:
                    return Outcome(name, refusal=f"SPLIT-VIEW ALARM: the witness cosigned another root for "
                                                 f"size {held} (409)", alarm=True)
                old_size = held
                continue
            if r.status_code == 422:
                return Outcome(name, refusal=f"SPLIT-VIEW ALARM: this log does not extend what the witness "
                                             f"cosigned at size {old_size} (422)", alarm=True)
            return Outcome(name, refusal=f"HTTP {r.status_code}: {r.text.strip()[:200]}")
        return Outcome(name, refusal=f"still in conflict after {MAX_ATTEMPTS} attempts")
    finally:
        if client is None:
            own.close()


def _size(r: httpx.Response) -> int | None:
    if r.headers.get("content-type", "").split(";")[0].strip() != "text/x.tlog.size":
        return None
    text = r.text
    if not text.endswith("\n") or not text[:-1].isdigit():
        return None
    return int(text[:-1])


def _accept(name: str, body: str, note_text: str, vkey: Vkey) -> Outcome:
    try:
        lines = parse_signature_lines(body)
    except NoteError as e:
        return Outcome(name, refusal=f"unreadable answer: {e}")
    for sig in lines:
        got = cosignature.verify(note_text, sig, vkey)
        if got is not None:
            return Outcome(name, signature=sig, timestamp=got.timestamp)
    return Outcome(name, refusal="200 without a valid cosignature from its registered key")
