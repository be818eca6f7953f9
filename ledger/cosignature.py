"""C2SP tlog-cosignature, cosignature/v1 (Ed25519, signature type 0x04).

A cosignature is a signed-note signature line whose bytes after the key
id are a ``timestamped_signature``: the 8-byte big-endian POSIX time
followed by a 64-byte Ed25519 signature over::

    cosignature/v1\\n
    time <timestamp, decimal, no leading zeroes>\\n
    <the whole checkpoint note text, final newline included>

It states: as of that time, this is the largest consistent tree head the
cosigner has seen for the log named on the origin line.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from ledger.keys import Signer, verify_signature
from ledger.note import COSIGNATURE_V1, Signature, Vkey

HEADER = "cosignature/v1"
MAX_TIMESTAMP = 2**63 - 1


def message(note_text: str, timestamp: int) -> bytes:
    return f"{HEADER}\ntime {timestamp}\n{note_text}".encode()


def vkey_for(name: str, signer: Signer) -> Vkey:
    return Vkey(name, COSIGNATURE_V1, signer.public_raw)


def cosign(note_text: str, name: str, signer: Signer, timestamp: int) -> Signature:
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError("a cosignature time must lie in 0 .. 2^63-1")
    vkey = vkey_for(name, signer)
    sig = signer.sign(message(note_text, timestamp))
    return Signature(name, vkey.key_id, struct.pack(">Q", timestamp) + sig)


@dataclass(frozen=True)
class Cosigned:
    """A verified cosignature: by whom, and when."""

    vkey: Vkey
    timestamp: int

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, UTC)


def verify(note_text: str, sig: Signature, vkey: Vkey) -> Cosigned | None:
    """The cosignature's time if ``sig`` is ``vkey``'s valid cosignature over ``note_text``, else None."""
    if vkey.sig_type != COSIGNATURE_V1 or not vkey.matches(sig) or len(sig.data) != 8 + 64:
        return None
    (timestamp,) = struct.unpack(">Q", sig.data[:8])
    if timestamp > MAX_TIMESTAMP:
        return None
    if not verify_signature(vkey.public_raw, sig.data[8:], message(note_text, timestamp)):
        return None
    return Cosigned(vkey, timestamp)


def verified(note_text: str, signatures: list[Signature], vkeys: list[Vkey]) -> list[Cosigned]:
    """One verified cosignature per distinct trusted key (duplicates of a key count once)."""
    found: dict[bytes, Cosigned] = {}
    for vkey in vkeys:
        for sig in signatures:
            got = verify(note_text, sig, vkey)
            if got is not None and vkey.public_raw not in found:
                found[vkey.public_raw] = got
    return list(found.values())
