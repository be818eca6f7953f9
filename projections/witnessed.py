"""Witnesses for readers: each event's witnessed interval (audit --json, report) and each witness's latest
cosignature (report). Cosignatures count only from the log's registered witness keys, and a checkpoint
only if the log's events reproduce its root (recomputed here, never taken from the stored tree)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from domain.signers import STUDY_STREAM
from domain.witnesses import WitnessSet
from ledger.envelope import Envelope, Record
from ledger.merkle_log import MerkleLog
from ledger.note import Vkey
from ledger.store import Store
from ledger.witnessed import (
    Intervals,
    Witnessed,
    fold,
    holding,
    iso,
    witnessed_checkpoints,
)


def stored_notes(store: Store) -> list[str]:
    tree = MerkleLog(store)
    return [r["note"] for r in store.fetch(f"SELECT note FROM {tree.names['checkpoints']} ORDER BY tree_size")]


class WitnessedTimes:
    def __init__(self, store: Store, vkeys: list[Vkey] | None = None):
        self._setup(store.stream(STUDY_STREAM), stored_notes(store), store.records, vkeys)

    @classmethod
    def from_log(cls, study: list[Envelope], notes: list[str], records: Iterable[Record],
                 vkeys: list[Vkey] | None = None) -> WitnessedTimes:
        """The same, from a verified log held in memory and the checkpoint notes shown with it (no store)."""
        self = cls.__new__(cls)
        self._setup(study, notes, lambda: records, vkeys)
        return self

    def _setup(self, study: list[Envelope], notes: list[str], records: Callable[[], Iterable[Record]],
               vkeys: list[Vkey] | None) -> None:
        self.witness_set = WitnessSet.replay(study)
        keys = vkeys if vkeys is not None else [w.vkey for w in self.witness_set.witnesses.values()]
        candidates = witnessed_checkpoints(notes, keys) if keys else []
        folded = fold(records(), {w.size for w in candidates}) if candidates else {}
        self.checkpoints: list[Witnessed] = holding(candidates, folded)
        self.intervals = Intervals((folded[w.size][1], w.time) for w in self.checkpoints)

    def interval(self, position: int) -> dict[str, str | None]:
        after, before = self.intervals.interval(position) if self.intervals else (None, None)
        return {"witnessed_after": iso(after), "witnessed_before": iso(before)}

    def latest(self) -> list[dict[str, Any]]:
        """Each registered witness with its newest cosignature over a checkpoint that holds."""
        rows = []
        for w in sorted(self.witness_set.witnesses.values(), key=lambda w: w.name):
            newest = None
            for cp in self.checkpoints:
                for c in cp.cosignatures:
                    if c.vkey == w.vkey and (newest is None or cp.size >= newest[0]):
                        newest = (cp.size, c.timestamp)
            rows.append({"name": w.name, "url": w.url, "vkey": str(w.vkey),
                         "latest_size": newest[0] if newest else None,
                         "latest_time": iso(newest[1]) if newest else None})
        return rows
