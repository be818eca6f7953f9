"""Checkpoints: C2SP tlog-checkpoint bodies in C2SP signed-note envelopes, Ed25519.

Body (tlog-checkpoint)::

    <origin>\\n<tree size, decimal>\\n<base64 root hash>\\n

Signed note: the body, a blank line, then one line per signature::

    — <key name> <base64(key id ‖ signature)>\\n

where the key id is the first 4 bytes of SHA-256(key name ‖ "\\n" ‖ 0x01 ‖
public key) and the signature is Ed25519 over the body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from ledger.keys import Signer, verify_signature

ED25519_TYPE = b"\x01"
SIGNATURE_PREFIX = "\u2014 "


class CheckpointError(ValueError):
    """A checkpoint that does not parse or whose signature does not verify."""


def strict_b64(text: str) -> bytes:
    """Decode base64 that must be in its one canonical form (no stray padding bits)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError("not base64") from None
    if base64.b64encode(raw).decode() != text:
        raise CheckpointError("base64 is not in canonical form")
    return raw


def note_key_id(name: str, public_raw: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + public_raw).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    def sign(self, signer: Signer, name: str | None = None) -> str:
        name = name or self.origin
        body = self.body()
        signature = signer.sign(body.encode())
        blob = base64.b64encode(note_key_id(name, signer.public_raw) + signature).decode()
        return f"{body}\n{SIGNATURE_PREFIX}{name} {blob}\n"


def parse(note: str) -> tuple[Checkpoint, str, list[tuple[str, bytes, bytes]]]:
    """Split a signed note into its checkpoint, its body text and its signature lines."""
    body, sep, sigs = note.partition("\n\n")
    if not sep:
        raise CheckpointError("not a signed note: no blank line before the signatures")
    body += "\n"
    lines = body.split("\n")
    if len(lines) < 4:
        raise CheckpointError("checkpoint body needs origin, size and root lines")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not origin or not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise CheckpointError("checkpoint origin or size is malformed")
    root = strict_b64(root_text)
    if len(root) != 32:
        raise CheckpointError("checkpoint root is not 32 bytes")
    signatures = []
    for line in sigs.split("\n"):
        if not line:
            continue
        if not line.startswith(SIGNATURE_PREFIX):
            raise CheckpointError("malformed signature line")
        name, _, blob_text = line[len(SIGNATURE_PREFIX):].rpartition(" ")
        blob = strict_b64(blob_text)
        if len(blob) != 4 + 64:
            continue  # another kind of signature (a witness cosignature): not ours to judge here
        signatures.append((name, blob[:4], blob[4:]))
    if not signatures:
        raise CheckpointError("signed note has no signature")
    return Checkpoint(origin, int(size_text), root), body, signatures


def verify(note: str, public_raw: bytes) -> Checkpoint:
    """The checkpoint, if a signature under the origin's name verifies with ``public_raw``."""
    checkpoint, body, signatures = parse(note)
    expected = note_key_id(checkpoint.origin, public_raw)
    for name, kid, signature in signatures:
        if name == checkpoint.origin and kid == expected and verify_signature(public_raw, signature, body.encode()):
            return checkpoint
    raise CheckpointError("checkpoint is not signed by this key")
