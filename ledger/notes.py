"""Signed notes beyond checkpoints: any text signed as a C2SP signed note, and witness cosignatures.

* ``sign_note`` / ``verify_note``: the C2SP signed-note envelope of
  ``ledger.checkpoint`` for any body (the inspection package's manifest is
  one), Ed25519, key id = SHA-256(name ‖ "\\n" ‖ 0x01 ‖ key)[:4].
* ``witness_quorum``: how many distinct trusted witnesses cosigned a
  checkpoint, per C2SP tlog-cosignature (cosignature/v1): a signature line
  ``— <name> base64(key id ‖ timestamp u64 BE ‖ Ed25519 signature)`` with key
  id = SHA-256(name ‖ "\\n" ‖ 0x04 ‖ key)[:4], over
  ``"cosignature/v1\\ntime <timestamp>\\n" ‖ checkpoint body``. The verifier
  keys are C2SP vkeys ``<name>+<hex key id>+<base64(0x04 ‖ key)>`` that the
  inspector brings, never taken from the log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from ledger.checkpoint import SIGNATURE_PREFIX, CheckpointError, note_key_id, strict_b64
from ledger.keys import Signer, verify_signature

COSIGNATURE_TYPE = b"\x04"


def sign_note(body: str, signer: Signer, name: str) -> str:
    """``body`` (ending in a newline) as a signed note under ``name``."""
    if not body.endswith("\n") or "\n\n" in body:
        raise ValueError("a note body ends with one newline and holds no blank line")
    signature = signer.sign(body.encode())
    blob = base64.b64encode(note_key_id(name, signer.public_raw) + signature).decode()
    return f"{body}\n{SIGNATURE_PREFIX}{name} {blob}\n"


def verify_note(note: str, name: str, public_raw: bytes) -> str:
    """The note's body, if a signature line under ``name`` verifies with ``public_raw``."""
    body, sep, sigs = note.partition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise CheckpointError("not a signed note")
    body += "\n"
    expected = note_key_id(name, public_raw)
    for line in sigs[:-1].split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise CheckpointError("malformed signature line")
        line_name, _, blob_text = line[len(SIGNATURE_PREFIX):].rpartition(" ")
        try:
            blob = strict_b64(blob_text)
        except CheckpointError:
            continue
        if line_name == name and blob[:4] == expected and len(blob) == 68 \
                and verify_signature(public_raw, blob[4:], body.encode()):
            return body
    raise CheckpointError(f"no valid signature by {name} under this key")


@dataclass(frozen=True)
class WitnessKey:
    name: str
    key_id: bytes
    public_raw: bytes


def parse_vkey(text: str) -> WitnessKey:
    """A C2SP verifier key of a cosigner: ``<name>+<hex key id>+<base64(0x04 ‖ key)>``."""
    name, _, rest = text.strip().partition("+")
    kid_hex, _, key_b64 = rest.partition("+")
    try:
        kid, raw = bytes.fromhex(kid_hex), base64.b64decode(key_b64, validate=True)
    except (ValueError, binascii.Error):
        raise CheckpointError(f"witness key {text.strip()!r} is not a C2SP vkey") from None
    if not name or len(kid) != 4 or len(raw) != 33 or raw[:1] != COSIGNATURE_TYPE:
        raise CheckpointError(f"witness key {text.strip()!r} is not an Ed25519 cosignature/v1 vkey")
    public = raw[1:]
    if hashlib.sha256(name.encode() + b"\n" + COSIGNATURE_TYPE + public).digest()[:4] != kid:
        raise CheckpointError(f"witness key {name}: key id does not match the key")
    return WitnessKey(name, kid, public)


def witness_quorum(note: str, witnesses: list[WitnessKey]) -> list[str]:
    """Names of the trusted witnesses whose cosignature/v1 on this checkpoint verifies (each counted once).

    Lines of other signers (the log's own, unknown witnesses) are skipped, not errors.
    """
    body, sep, sigs = note.partition("\n\n")
    if not sep:
        raise CheckpointError("not a signed note: no blank line before the signatures")
    body += "\n"
    good: list[str] = []
    for line in sigs.split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            continue
        name, _, blob_text = line[len(SIGNATURE_PREFIX):].rpartition(" ")
        try:
            blob = strict_b64(blob_text)
        except CheckpointError:
            continue
        for w in witnesses:
            if name != w.name or len(blob) != 4 + 8 + 64 or blob[:4] != w.key_id or w.name in good:
                continue
            timestamp = int.from_bytes(blob[4:12], "big")
            message = f"cosignature/v1\ntime {timestamp}\n{body}".encode()
            if verify_signature(w.public_raw, blob[12:], message):
                good.append(w.name)
    return good
