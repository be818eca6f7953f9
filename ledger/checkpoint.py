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
import re
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


# A tree size is ASCII decimal without leading zeros and below 2**63 (tlog-checkpoint).
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")
MAX_SIZE = 2**63 - 1


def parse_size(text: str) -> int:
    """A tree size in its one spelling; anything else (non-ASCII digits, signs, 5,000 digits) is malformed."""
    if not _SIZE.fullmatch(text) or int(text) > MAX_SIZE:
        raise CheckpointError("checkpoint origin or size is malformed")
    return int(text)


def log_origin(study_id: str, genesis_hash: bytes) -> str:
    """The checkpoint origin of one ledger: its study and the first 8 bytes of its genesis event's hash.

    Two ledgers of one study (or under one sponsor key) have different
    genesis events, so a checkpoint of one cannot pass for the other. This is
    the one place an origin is made; ``verify --checkpoint`` and
    ``verify-proof --origin`` compare against it.
    """
    study = re.sub(r"[^A-Za-z0-9._-]", "_", study_id)
    return f"trial-ledger/{study}/{genesis_hash[:8].hex()}"


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
    size = parse_size(size_text)
    root = strict_b64(root_text)
    if len(root) != 32:
        raise CheckpointError("checkpoint root is not 32 bytes")
    return Checkpoint(origin, size, root), body, [(s.name, s.key_id, s.data) for s in sigs]


def verify(note: str, public_raw: bytes) -> Checkpoint:
    """The checkpoint, if a signature under the origin's name verifies with ``public_raw``."""
    checkpoint, body, signatures = parse(note)
    expected = note_key_id(checkpoint.origin, public_raw)
    for name, kid, signature in signatures:
        if name == checkpoint.origin and kid == expected and len(signature) == 64 \
                and verify_signature(public_raw, signature, body.encode()):
            return checkpoint
    raise CheckpointError("checkpoint is not signed by this key")
