"""The global hash chain (SPEC §5.1).

``hash = SHA-256(canonical_bytes ‖ prev_hash)``; the first event links to 32
zero bytes. The author's Ed25519 signature is over ``hash``, so it binds the
content, the author, the meaning and the event's place in the global log.
This module is the one definition of a link, used by the writer and the verifier.
"""

from __future__ import annotations

import hashlib

GENESIS_PREV_HASH = bytes(32)


def link_hash(canonical: bytes, prev_hash: bytes) -> bytes:
    """The chained hash of one event."""
    return hashlib.sha256(canonical + prev_hash).digest()
