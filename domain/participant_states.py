"""The decider's per-participant facts, in bounded memory however many participants an import holds.

An import decides each line against its participant's facts (``Participant``)
while the whole file is written in one transaction. Keeping every
participant's facts in memory made a 1M-event import of 20,000 participants
peak at ~420 MB. The most recently used participants stay as objects; the
rest are pickled to SQLite's private temporary database and read back if
their participant turns up again. SQLite creates that file with mode 0600
and unlinks it as it opens it, so no other process can reach it by name,
nothing is left after a crash, and only this process writes what it
unpickles. Facts already written could be re-read from the ledger instead,
but not the ones decided in the batch still waiting for its signatures, so
the spill file holds both.
"""

from __future__ import annotations

import pickle
import sqlite3
from collections import OrderedDict
from collections.abc import Callable

from domain.participant import Participant

KEEP = 1024  # participants kept as objects; a Phase 1 trial never spills


class ParticipantStates:
    """Participant facts by id: an LRU of objects in front of a spill file."""

    def __init__(self, load: Callable[[str], Participant], keep: int | None = None):
        self._load = load
        self._keep = KEEP if keep is None else keep
        self._live: OrderedDict[str, Participant] = OrderedDict()
        self._spill: sqlite3.Connection | None = None

    def of(self, participant: str) -> Participant:
        """The participant's facts, loaded from memory, the spill file or the ledger (in that order)."""
        state = self._live.get(participant)
        if state is not None:
            self._live.move_to_end(participant)
            return state
        state = self._unspill(participant)
        if state is None:
            state = self._load(participant)
        self._live[participant] = state
        if len(self._live) > self._keep:
            self._evict()
        return state

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = None

    def _evict(self) -> None:
        participant, state = self._live.popitem(last=False)
        if self._spill is None:
            # "" is SQLite's private temporary database: its file is removed when the connection closes.
            self._spill = sqlite3.connect("")
            self._spill.execute("CREATE TABLE facts (participant TEXT PRIMARY KEY, state BLOB NOT NULL)")
        self._spill.execute("INSERT OR REPLACE INTO facts VALUES (?, ?)",
                            (participant, pickle.dumps(state, pickle.HIGHEST_PROTOCOL)))

    def _unspill(self, participant: str) -> Participant | None:
        if self._spill is None:
            return None
        row = self._spill.execute("SELECT state FROM facts WHERE participant = ?", (participant,)).fetchone()
        if row is None:
            return None
        state = pickle.loads(row[0])
        assert isinstance(state, Participant)
        return state
