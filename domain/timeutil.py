"""Times are ISO 8601 with an explicit offset; recorded times are UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime) -> str:
    return value.isoformat()


def refuse_future(occurred: datetime, now: datetime, field: str = "occurred_at") -> None:
    if occurred - now > FUTURE_TOLERANCE:
        raise InputRefused(f"{field}: {occurred.isoformat()} is more than 5 minutes in the future")
