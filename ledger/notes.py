"""Signed notes beyond checkpoints: any text signed as a C2SP signed note, and witness cosignatures.

* ``sign_note`` / ``verify_note``: the C2SP signed-note envelope of
  ``ledger.checkpoint`` for any body (the inspection package's manifest is
  one), Ed25519, key id = SHA-256(name ‖ "\\n" ‖ 0x01 ‖ key)[:4].
* ``witness_quorum``: which of the witness keys the inspector brings (never
  taken from the log) cosigned a checkpoint, per C2SP tlog-cosignature.
"""

from __future__ import annotations

import base64

from ledger.checkpoint import SIGNATURE_PREFIX, CheckpointError, note_key_id, strict_b64
from ledger import cosignature
from ledger.keys import Signer, verify_signature
from ledger.note import NoteError, Vkey, split

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


def witness_quorum(note: str, witnesses: list[Vkey]) -> list[str]:
    """Names of the trusted witnesses whose cosignature/v1 on this checkpoint verifies, each counted once
    (C2SP tlog-cosignature, through ``ledger.cosignature``)."""
    try:
        text, signatures = split(note)
    except NoteError as e:
        raise CheckpointError(str(e)) from None
    return sorted({c.vkey.name for c in cosignature.verified(text, signatures, witnesses)})
