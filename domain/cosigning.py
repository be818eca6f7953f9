"""Collecting witness cosignatures for a new checkpoint (SPEC §9, C2SP tlog-witness).

Each registered witness is asked from the size it last cosigned (found in
the stored checkpoints, by checking its cosignature with its registered
key: the table is a cache, never trusted), with the consistency proof
from there; a 409 restarts from the size the witness reports. The
cosignatures received are appended to the checkpoint note, which is
stored; the outcome says whether the log's quorum was met and why each
refusing witness refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from domain.witnesses import RegisteredWitness, WitnessSet
from ledger import checkpoint as notes
from ledger import cosignature
from ledger.merkle_log import MerkleLog
from ledger.note import NoteError, Signature, split
from ledger.witness.client import Outcome, ask


@dataclass(frozen=True)
class Collection:
    note: str
    outcomes: list[Outcome]
    quorum: int

    @property
    def cosigned(self) -> int:
        return sum(1 for o in self.outcomes if o.signature is not None)

    @property
    def met(self) -> bool:
        return self.cosigned >= self.quorum


def last_cosigned_size(tree: MerkleLog, witness: RegisteredWitness) -> int:
    """The largest stored checkpoint this witness verifiably cosigned, or 0."""
    rows = tree.store.fetch(f"SELECT note FROM {tree.names['checkpoints']} ORDER BY tree_size DESC")
    for row in rows:
        try:
            cp, text, _ = notes.parse(row["note"])
            sigs = split(row["note"])[1]
        except NoteError:
            continue
        if cosignature.verified(text, sigs, [witness.vkey]):
            return cp.size
    return 0


def collect(tree: MerkleLog, note: str, witnesses: WitnessSet,
            client_factory: Callable[[], httpx.Client] | None = None) -> Collection:
    cp = notes.parse(note)[0]

    def proof_from(old: int) -> list[bytes]:
        return tree.consistency(old, cp.size) if 0 < old < cp.size else []

    outcomes = []
    client = client_factory() if client_factory else httpx.Client(timeout=10.0, trust_env=False)
    with client:
        for w in sorted(witnesses.witnesses.values(), key=lambda w: w.name):
            outcomes.append(ask(w.name, w.url, w.vkey, note, last_cosigned_size(tree, w), proof_from, client))
    received: list[Signature] = [o.signature for o in outcomes if o.signature is not None]
    return Collection(note + "".join(s.line() for s in received), outcomes, witnesses.quorum)
