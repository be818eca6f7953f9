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
from dataclasses import dataclass

from ledger import note as signed_note
from ledger.keys import Signer, verify_signature
from ledger.note import NoteError

SIGNATURE_PREFIX = signed_note.SIGNATURE_PREFIX


class CheckpointError(NoteError):
    """A checkpoint that does not parse or whose signature does not verify."""


def strict_b64(text: str) -> bytes:
    """Decode base64 that must be in its one canonical form (no stray padding bits)."""
    try:
        return signed_note.strict_b64(text)
    except NoteError as e:
        raise CheckpointError(str(e)) from None


def note_key_id(name: str, public_raw: bytes) -> bytes:
    """The key id of an Ed25519 note signature (signature type 0x01)."""
    return signed_note.key_id(name, signed_note.ED25519, public_raw)


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
    """Split a signed note into its checkpoint, its body text and its signature lines.

    Signature lines of any type are returned (cosignatures too); each
    verifier picks the lines whose name and key id it knows.
    """
    try:
        body, sigs = signed_note.split(note)
    except NoteError as e:
        raise CheckpointError(str(e)) from None
    lines = body.split("\n")
    if len(lines) < 4 or any(not line for line in lines[:-1]):
        raise CheckpointError("checkpoint body needs non-empty origin, size and root lines")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not size_text.isdigit() or not size_text.isascii() or (size_text != "0" and size_text.startswith("0")):
        raise CheckpointError("checkpoint origin or size is malformed")
    root = strict_b64(root_text)
    if len(root) != 32:
        raise CheckpointError("checkpoint root is not 32 bytes")
    return Checkpoint(origin, int(size_text), root), body, [(s.name, s.key_id, s.data) for s in sigs]


def verify(note: str, public_raw: bytes) -> Checkpoint:
    """The checkpoint, if a signature under the origin's name verifies with ``public_raw``."""
    checkpoint, body, signatures = parse(note)
    expected = note_key_id(checkpoint.origin, public_raw)
    for name, kid, signature in signatures:
        if name == checkpoint.origin and kid == expected and len(signature) == 64 \
                and verify_signature(public_raw, signature, body.encode()):
            return checkpoint
    raise CheckpointError("checkpoint is not signed by this key")
