"""Proof bundles an inspector can check offline, with no database (SPEC §5.2).

A bundle is RFC 8785 JSON (one line plus a newline), so any changed byte,
meaningful or not, fails the check:

* inclusion: a signed checkpoint, an event's stored bytes (``state`` and
  ``prev_hash``, from which its chained hash is recomputed), its leaf index,
  and the RFC 9162 inclusion path to the checkpoint's root;
* consistency: two signed checkpoints and the RFC 9162 consistency path.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ledger import checkpoint as notes
from ledger.canonical import canonical_bytes
from ledger.chain import link_hash
from ledger.envelope import Envelope, Record
from ledger.merkle import leaf_hash, verify_consistency, verify_inclusion


class ProofError(ValueError):
    """A bundle that is malformed or does not verify."""


def encode(bundle: dict[str, Any]) -> bytes:
    return canonical_bytes(bundle) + b"\n"


def inclusion_bundle(record: Record, index: int, note: str, proof: list[bytes]) -> bytes:
    cp = notes.parse(note)[0]
    return encode({
        "type": "inclusion", "checkpoint": note, "leaf_index": index, "tree_size": cp.size,
        "event": {"state": base64.b64encode(record.state).decode(), "prev_hash": record.prev_hash.hex()},
        "proof": [p.hex() for p in proof],
    })


def consistency_bundle(old_note: str, new_note: str, proof: list[bytes]) -> bytes:
    return encode({"type": "consistency", "old_checkpoint": old_note, "new_checkpoint": new_note,
                   "proof": [p.hex() for p in proof]})


def _hex(value: Any) -> bytes:
    """Lower-case hex only: one spelling per value, so no byte of a bundle can change unnoticed."""
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError):
        raise ProofError("a value that should be hex is not") from None
    if raw.hex() != value:
        raise ProofError("hex must be lower-case and unspaced")
    return raw


def _hexes(values: Any) -> list[bytes]:
    if not isinstance(values, list):
        raise ProofError("proof must be a list")
    return [_hex(v) for v in values]


def verify_bundle(blob: bytes, public_raw: bytes) -> str:
    """Check a bundle with the sponsor's public key; returns a one-line description or raises ProofError."""
    try:
        bundle = json.loads(blob)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ProofError("not a proof bundle (JSON)") from None
    if not isinstance(bundle, dict) or encode(bundle) != blob:
        raise ProofError("the bundle's bytes are not its canonical form: it was altered")
    try:
        if bundle.get("type") == "inclusion":
            return _verify_inclusion(bundle, public_raw)
        if bundle.get("type") == "consistency":
            return _verify_consistency(bundle, public_raw)
    except notes.CheckpointError as e:
        raise ProofError(f"checkpoint: {e}") from None
    except (KeyError, TypeError, AttributeError):
        raise ProofError("the bundle lacks a required field") from None
    raise ProofError("unknown bundle type")


def bundle_note(blob: bytes) -> str:
    """The checkpoint a (verified) bundle vouches for: the inclusion's, or the consistency's newer one."""
    bundle = json.loads(blob)
    return str(bundle["checkpoint"] if bundle["type"] == "inclusion" else bundle["new_checkpoint"])


def _verify_inclusion(bundle: dict[str, Any], public_raw: bytes) -> str:
    cp = notes.verify(bundle["checkpoint"], public_raw)
    if bundle["tree_size"] != cp.size:
        raise ProofError("tree_size differs from the checkpoint's")
    state = notes.strict_b64(bundle["event"]["state"])
    prev = _hex(bundle["event"]["prev_hash"])
    digest = link_hash(state, prev)
    index = bundle["leaf_index"]
    if not isinstance(index, int):
        raise ProofError("leaf_index must be an integer")
    try:
        verify_inclusion(index, cp.size, leaf_hash(digest), _hexes(bundle["proof"]), cp.root)
    except ValueError as e:
        raise ProofError(f"inclusion proof fails: {e}") from None
    try:
        env = Envelope.from_canonical(state)
        what = f"{env.type} {env.event_id} by {env.author}"
    except ValueError:
        what = "event"
    return f"{what} is leaf {index} of the log {cp.origin} at size {cp.size}"


def _verify_consistency(bundle: dict[str, Any], public_raw: bytes) -> str:
    old = notes.verify(bundle["old_checkpoint"], public_raw)
    new = notes.verify(bundle["new_checkpoint"], public_raw)
    if old.origin != new.origin:
        raise ProofError("the checkpoints are of different logs")
    try:
        verify_consistency(old.size, new.size, old.root, new.root, _hexes(bundle["proof"]))
    except ValueError as e:
        raise ProofError(f"consistency proof fails: {e}") from None
    return f"the log {new.origin} at size {new.size} extends its checkpoint at size {old.size}"
