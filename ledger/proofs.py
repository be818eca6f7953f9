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
    if not isinstance(values, list) or len(values) > 64:
        raise ProofError("proof must be a list of at most 64 hashes")
    hashes = [_hex(v) for v in values]
    if any(len(h) != 32 for h in hashes):
        raise ProofError("every proof hash must be 32 bytes")
    return hashes


def _size(value: Any, name: str) -> int:
    """A JSON integer from 0 to 2**63-1; not a bool, float or string."""
    if type(value) is not int or not 0 <= value <= notes.MAX_SIZE:
        raise ProofError(f"{name} must be an integer from 0 to 2**63-1")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def verify_bundle(blob: bytes, public_raw: bytes, origin: str | None = None) -> str:
    """Check a bundle with the sponsor's public key; returns a one-line description or raises ProofError.

    With ``origin`` (the log's identity, ``checkpoint.log_origin``), a bundle
    whose checkpoint belongs to another log fails even when the key signed it.
    """
    what = _verify_bundle(blob, public_raw)
    found = _origin(blob)
    if origin is not None and found != origin:
        raise ProofError(f"the checkpoint is of the log {found!r}, not of {origin!r}")
    return what


def _origin(blob: bytes) -> str:
    bundle = json.loads(blob)
    note = bundle["checkpoint"] if bundle["type"] == "inclusion" else bundle["new_checkpoint"]
    return notes.parse(note)[0].origin


def _verify_bundle(blob: bytes, public_raw: bytes) -> str:
    try:
        bundle = json.loads(blob, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: bad JSON, NaN, 5,000-digit integers
        raise ProofError("not a proof bundle (JSON)") from None
    try:
        canonical = isinstance(bundle, dict) and encode(bundle) == blob
    except (ValueError, TypeError, RecursionError, OverflowError):
        canonical = False
    if not canonical:
        raise ProofError("the bundle's bytes are not its canonical form: it was altered")
    try:
        if bundle.get("type") == "inclusion":
            return _verify_inclusion(bundle, public_raw)
        if bundle.get("type") == "consistency":
            return _verify_consistency(bundle, public_raw)
    except ProofError:
        raise
    except notes.CheckpointError as e:
        raise ProofError(f"checkpoint: {e}") from None
    except (KeyError, TypeError, AttributeError):
        raise ProofError("the bundle lacks a required field") from None
    except (ValueError, OverflowError, RecursionError):  # any other malformed value fails the check, never crashes
        raise ProofError("the bundle holds a malformed value") from None
    raise ProofError("unknown bundle type")


def bundle_note(blob: bytes) -> str:
    """The checkpoint a (verified) bundle vouches for: the inclusion's, or the consistency's newer one."""
    bundle = json.loads(blob)
    return str(bundle["checkpoint"] if bundle["type"] == "inclusion" else bundle["new_checkpoint"])


def _verify_inclusion(bundle: dict[str, Any], public_raw: bytes) -> str:
    cp = notes.verify(bundle["checkpoint"], public_raw)
    if _size(bundle["tree_size"], "tree_size") != cp.size:
        raise ProofError("tree_size differs from the checkpoint's")
    state = notes.strict_b64(bundle["event"]["state"])
    prev = _hex(bundle["event"]["prev_hash"])
    if len(prev) != 32:
        raise ProofError("prev_hash must be 32 bytes")
    digest = link_hash(state, prev)
    index = _size(bundle["leaf_index"], "leaf_index")
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
