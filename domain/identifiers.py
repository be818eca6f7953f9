"""User ids and event ids: each matched whole, and each with one spelling.

A pattern checked with ``re.match(...$)`` lets ``"S01-009\\n"`` through (``$``
matches before a final newline), and ``uuid.UUID`` reads one event id in many
spellings (``urn:uuid:``, no hyphens, upper case, braces). The ledger keeps
one of each, so a duplicate check cannot be dodged by spelling.
"""

from __future__ import annotations

import re
import uuid

from ledger.errors import InputRefused

# For pydantic fields (Rust regex: ``$`` is the end of the text) and for ``re.fullmatch``.
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
_USER_ID = re.compile(USER_ID_PATTERN.removeprefix("^").removesuffix("$"))
_EVENT_ID = re.compile(
    r"(?:urn:uuid:)?(?:\{)?([0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12})(?:\})?",
    re.IGNORECASE,
)


def check_user_id(user_id: object, field: str = "user_id") -> str:
    if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
        raise InputRefused(f"{field}: must be letters, digits, '.', '_', '@' or '-' (at most 64, "
                           "starting with a letter or digit)")
    return user_id


def canonical_event_id(event_id: object, field: str = "event_id") -> str:
    """The one spelling of a client-chosen event id: a lower-case hyphenated UUID."""
    match = _EVENT_ID.fullmatch(event_id) if isinstance(event_id, str) else None
    if match is None or len(match.group(1)) not in (32, 36):
        raise InputRefused(f"{field}: must be a UUID")
    return str(uuid.UUID(match.group(1).replace("-", "")))
