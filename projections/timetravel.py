"""Time travel (SPEC §7): what the ledger held about one participant at a recorded time or position.

Only that participant's stream (and the small study stream) is read, and no
projection is involved, so the cost does not grow with the size of the log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.rules import Entry, deviation_history
from domain.service import Trial
from domain.timeutil import parse_time
from ledger.envelope import Record
from ledger.errors import InputRefused
from projections import state as states


def _recorded(record: Record) -> datetime | None:
    return parse_time(record.envelope().recorded_at, aware=False)


def state_at(trial: Trial, participant: str, *, as_of: datetime | None = None,
             position: int | None = None) -> dict[str, Any]:
    """The participant's state from events recorded at or before ``as_of`` / at or before ``position``."""
    records = trial.store.stream_records(participant)
    if not records:
        raise InputRefused(f"participant: {participant} is not in the ledger")
    kept = [r for r in records
            if (position is None or r.position <= position)
            and (as_of is None or ((t := _recorded(r)) is not None and t <= as_of))]
    st = states.empty_state(participant)
    for r in kept:
        states.apply(st, r.envelope(), r.position)
    upto = kept[-1].position if kept else 0
    registry = trial.registry_at(upto) if kept else None
    if registry is not None and registry.protocol is not None:
        entries = [Entry(r.envelope(), r.position) for r in kept]
        found = deviation_history(participant, entries, trial.protocol_versions(upto, registry.protocol))
        st["deviations"] = [d.as_dict() for d in found]
    else:
        st["deviations"] = []
    st["as_of"] = as_of.isoformat() if as_of else None
    st["as_of_position"] = position
    if not kept:
        st["status"] = "not yet recorded"
    return st
