"""The one time-parsing module. Times are ISO 8601 with an explicit offset; recorded times are UTC.

Input is refused (``parse_instant``); stored times that may be damaged are
read leniently (``parse_time``, ``calendar_date``, ``epoch_us``, ``utc_text``)
so a hostile row never crashes a read, and verify reports it elsewhere.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from ledger.errors import InputRefused

FUTURE_TOLERANCE = timedelta(minutes=5)


def parse_instant(text: object, field: str) -> datetime:
    """An aware datetime; a time without an offset is refused, never guessed."""
    if not isinstance(text, str):
        raise InputRefused(f"{field}: must be an ISO 8601 time with an offset")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InputRefused(f"{field}: {text[:60]!r} is not an ISO 8601 time") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputRefused(f"{field}: {text[:60]!r} has no UTC offset (add e.g. +08:00 or Z)")
    return value


def parse_time(text: object, *, aware: bool = True) -> datetime | None:
    """A stored ISO 8601 time, or None if it is not one (or has no offset, when ``aware``)."""
    try:
        value = datetime.fromisoformat(str(text)) if isinstance(text, str) else None
    except ValueError:
        return None
    if value is None or (aware and value.tzinfo is None):
        return None
    return value


def calendar_date(text: object) -> date | None:
    """The date of a stored time, read in its own offset (what a site calls "that day")."""
    value = parse_time(text, aware=False)
    return value.date() if value else None


def study_day(dose1: date | None, day: date | None) -> int | None:
    """Days since dose 1, each date read in its own offset (dose 1 is day 0); None if either is unknown."""
    return None if dose1 is None or day is None else (day - dose1).days


def epoch_us(text: object) -> int:
    """Microseconds since the epoch of an aware time; 0 for anything else."""
    value = parse_time(text)
    return 0 if value is None else int(value.timestamp() * 1_000_000)


def utc_text(text: str) -> str:
    """A stored time shown in UTC with microseconds, whatever its stored form (unparsable: as found)."""
    value = parse_time(text)
    return text if value is None else value.astimezone(UTC).isoformat(timespec="microseconds")


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime) -> str:
    return value.isoformat()


def refuse_future(occurred: datetime, now: datetime, field: str = "occurred_at") -> None:
    if occurred - now > FUTURE_TOLERANCE:
        raise InputRefused(f"{field}: {occurred.isoformat()} is more than 5 minutes in the future")
