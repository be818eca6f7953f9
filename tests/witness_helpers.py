"""A toy log for driving a witness over HTTP: leaves in a list, checkpoints signed with an Ed25519 key."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from ledger import merkle
from ledger.checkpoint import Checkpoint
from ledger.keys import Signer, generate

ORIGIN = "example.test/log"


@dataclass
class ToyLog:
    origin: str = ORIGIN
    signer: Signer = field(default_factory=generate)
    leaves: list[bytes] = field(default_factory=list)

    def grow(self, n: int, tag: str = "") -> None:
        for _ in range(n):
            self.leaves.append(merkle.leaf_hash(f"{tag}{len(self.leaves)}".encode()))

    def note(self, size: int | None = None) -> str:
        size = len(self.leaves) if size is None else size
        return Checkpoint(self.origin, size, merkle.root(self.leaves[:size])).sign(self.signer)

    def proof(self, old: int, size: int | None = None) -> list[bytes]:
        size = len(self.leaves) if size is None else size
        return merkle.consistency_proof(old, self.leaves[:size]) if 0 < old < size else []

    def body(self, old: int, size: int | None = None, proof: list[bytes] | None = None,
             note: str | None = None) -> bytes:
        proof = self.proof(old, size) if proof is None else proof
        head = f"old {old}\n" + "".join(base64.b64encode(p).decode() + "\n" for p in proof)
        return (head + "\n" + (note if note is not None else self.note(size))).encode()
