"""Sealing: chain and sign a batch of envelopes once the head of the log is known.

The storage adapter calls it inside the write lock, so it must stay cheap:
one SHA-256 and one Ed25519 signature per event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ledger.chain import link_hash
from ledger.clock import refuse_backwards
from ledger.envelope import Envelope
from ledger.errors import StoreError
from ledger.keys import Signer


class Stored(Protocol):
    """What sealing needs of a stored event (eventsourcing's StoredEvent has these)."""

    @property
    def originator_id(self) -> object: ...
    @property
    def originator_version(self) -> int: ...
    @property
    def state(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Seal:
    event_id: str
    prev_hash: bytes
    hash: bytes
    signature: bytes
    key_id: str


class Sealer:
    """Chains and signs ``envelopes`` from a head hash on."""

    def __init__(self, signer: Signer, envelopes: Sequence[Envelope]):
        self.signer = signer
        self.envelopes = envelopes
        self.span: tuple[bytes, bytes] | None = None  # (head chained onto, last hash) once chained

    def seal(self, head: bytes, stored: Sequence[Stored], head_state: bytes | None = None) -> list[Seal]:
        links = self.chain(head, stored, head_state)
        return self.seals(links, [self.signer.sign(digest) for _prev, digest in links])

    def chain(self, head: bytes, stored: Sequence[Stored], head_state: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """(prev_hash, hash) of each event from ``head`` on; no signature is needed for the next link.

        ``head_state`` is the head row's stored bytes: recorded time may not run back from it (ledger/clock.py).
        """
        if len(stored) != len(self.envelopes):
            raise StoreError("internal: sealer and stored events differ in length")
        refuse_backwards(head_state, self.envelopes)
        links = []
        prev = head
        for envelope, event in zip(self.envelopes, stored, strict=True):
            if (event.originator_id, event.originator_version) != (envelope.stream, envelope.position):
                raise StoreError("internal: sealer and stored events are out of step")
            digest = link_hash(event.state, prev)
            links.append((prev, digest))
            prev = digest
        if links:
            self.span = (head, prev)
        return links

    def seals(self, links: Sequence[tuple[bytes, bytes]], signatures: Sequence[bytes]) -> list[Seal]:
        key_id = self.signer.key_id
        return [Seal(envelope.event_id, prev, digest, signature, key_id)
                for envelope, (prev, digest), signature in zip(self.envelopes, links, signatures, strict=True)]
