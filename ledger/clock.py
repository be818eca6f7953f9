"""Recorded time runs forward along the chain (SPEC §5.4).

``recorded_at`` is stamped by the writer from its own clock. A writer whose
clock was set back could otherwise enter data that escapes the late-entry
rule and shows in ``show --as-of`` for a time before it was written. So:

* inside the write lock, the sealer refuses an event recorded earlier than
  the event before it in the global log by more than ``CLOCK_SKEW`` (the
  tolerance for clock skew between writers' machines), naming both times;
* ``verify`` reports every such backwards step as a finding.

Both sides compare an event with the one just before it in the global log,
with the same tolerance, so whatever the writer accepts verifies.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta

from ledger.envelope import Envelope
from ledger.errors import InputRefused

CLOCK_SKEW = timedelta(minutes=5)


class ClockWentBack(InputRefused):
    """The writer's clock is behind the log's last recorded time (exit 3; nothing written)."""


def parse_recorded(text: object) -> datetime | None:
    """An aware datetime, or None when ``text`` is not an ISO 8601 time with an offset."""
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.utcoffset() is not None else None


def recorded_at_of(state: bytes | None) -> str | None:
    """The ``recorded_at`` of a stored envelope's canonical bytes (None for none, or a damaged row)."""
    if state is None:
        return None
    try:
        value = json.loads(state).get("recorded_at")
    except (ValueError, AttributeError, RecursionError):
        return None
    return value if isinstance(value, str) else None


def backwards_step(previous: str | None, current: str) -> str | None:
    """Why ``current`` may not follow ``previous`` along the chain, or None when it may."""
    before, now = parse_recorded(previous), parse_recorded(current)
    if before is None:
        return None
    if now is None:
        return f"recorded_at {current[:40]!r} is not an ISO 8601 time with an offset"
    if before - now > CLOCK_SKEW:
        return (f"recorded_at {current} is earlier than the previous event's {previous} by more than "
                f"{int(CLOCK_SKEW.total_seconds() // 60)} minutes: the writer's clock ran backwards")
    return None


def refuse_backwards(head_state: bytes | None, envelopes: Sequence[Envelope]) -> None:
    """Called inside the write lock with the head row's bytes; raises ClockWentBack naming both times."""
    previous = recorded_at_of(head_state)
    for envelope in envelopes:
        problem = backwards_step(previous, envelope.recorded_at)
        if problem:
            raise ClockWentBack(f"{problem}; nothing was written (check this machine's clock)")
        previous = envelope.recorded_at


class RecordedTimes:
    """``verify``'s side: each event against the one before it in the global log."""

    def __init__(self, start: str | None = None):
        self.previous = start
        self._before = parse_recorded(start)  # the previous time, parsed once rather than on every step

    def step(self, recorded_at: str) -> str | None:
        """``backwards_step(previous, recorded_at)``, parsing each time once (verify's hot path)."""
        before, now = self._before, parse_recorded(recorded_at)
        problem = None
        if before is not None and (now is None or before - now > CLOCK_SKEW):
            problem = backwards_step(self.previous, recorded_at)  # the rare case: word it in one place
        self.previous, self._before = recorded_at, now
        return problem
