"""The decider's per-participant facts, in bounded memory however many participants an import holds.

An import decides each line against its participant's facts (``Participant``)
while the whole file is written in one transaction. Keeping every
participant's facts in memory made a 1M-event import of 20,000 participants
peak at ~420 MB. The most recently used participants stay as objects, up to
``BUDGET`` in all, each weighing its entries plus ``PARTICIPANT_WEIGHT`` for
its fixed parts; the rest are pickled to SQLite's private temporary database
and read back if their participant turns up again. Weighing by entries, not
counting participants, means a participant with a long history is evicted
only after ``BUDGET`` of other weight has been touched since its last line, so
its round trip (~5 µs per entry) is paid once per thousands of lines, not
once per thousand participants. SQLite creates that file with mode 0600
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

BUDGET = 60_000  # weight kept as objects: ~1,000 participants of 50 entries, ~25 MB (one entry ~350 bytes)
PARTICIPANT_WEIGHT = 8  # a participant's fixed parts (sets, dicts, its query book) weigh about 8 entries


class ParticipantStates:
    """Participant facts by id: an LRU of objects in front of a spill file."""

    def __init__(self, load: Callable[[str], Participant], budget: int | None = None):
        self._load = load
        self._budget = BUDGET if budget is None else budget
        self._live: OrderedDict[str, Participant] = OrderedDict()
        self._weights: dict[str, int] = {}  # weight of each live participant, as last counted
        self._weight = 0
        self._last: str | None = None
        self._spill: sqlite3.Connection | None = None
        self.spilled = 0  # participants written to the spill file, for tests and profiles

    def of(self, participant: str) -> Participant:
        """The participant's facts, loaded from memory, the spill file or the ledger (in that order).

        Only the participant returned last can have grown since (the decider applies each event to
        the state it just asked for), so its size is recounted here.
        """
        self._recount(self._last)
        self._last = participant
        state = self._live.get(participant)
        if state is not None:
            self._live.move_to_end(participant)
            return state
        state = self._unspill(participant)
        if state is None:
            state = self._load(participant)
        self._live[participant] = state
        self._recount(participant)
        while len(self._live) > 1 and self._weight > self._budget:
            self._evict()
        return state

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = None

    def _recount(self, participant: str | None) -> None:
        if participant is None or participant not in self._live:
            return
        weight = len(self._live[participant].entries) + PARTICIPANT_WEIGHT
        self._weight += weight - self._weights.get(participant, 0)
        self._weights[participant] = weight

    def _evict(self) -> None:
        participant, state = self._live.popitem(last=False)
        self._weight -= self._weights.pop(participant, 0)
        if self._spill is None:
            # "" is SQLite's private temporary database: its file is removed when the connection closes.
            self._spill = sqlite3.connect("")
            self._spill.execute("CREATE TABLE facts (participant TEXT PRIMARY KEY, state BLOB NOT NULL)")
        self._spill.execute("INSERT OR REPLACE INTO facts VALUES (?, ?)",
                            (participant, pickle.dumps(state, pickle.HIGHEST_PROTOCOL)))
        self.spilled += 1

    def _unspill(self, participant: str) -> Participant | None:
        if self._spill is None:
            return None
        row = self._spill.execute("SELECT state FROM facts WHERE participant = ?", (participant,)).fetchone()
        if row is None:
            return None
        state = pickle.loads(row[0])
        assert isinstance(state, Participant)
        return state
