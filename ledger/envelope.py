"""The signed envelope of every event (SPEC §3, §5.1).

An envelope is a small immutable value. Its canonical bytes (RFC 8785) are
exactly what is stored, hashed and signed; nothing the verifier checks is
ever re-derived from a parsed copy. The ledger knows streams, not
participants: the domain decides what a stream is.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from ledger.canonical import canonical_bytes


class Envelope(BaseModel):
    """Header fields plus the typed payload, as signed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str
    type: str
    stream: str
    position: int = Field(ge=1, description="1-based position in the stream")
    occurred_at: str
    recorded_at: str
    author: str
    key_id: str
    meaning: str
    reason: str | None = None
    data: dict[str, Any]

    # eventsourcing's DomainEventProtocol: one stream is one aggregate.
    @property
    def originator_id(self) -> str:
        return self.stream

    @property
    def originator_version(self) -> int:
        return self.position

    def canonical(self) -> bytes:
        return canonical_bytes(self.model_dump(mode="json"))

    @classmethod
    def from_canonical(cls, blob: bytes) -> Envelope:
        """Parse stored bytes; raises ValueError (pydantic's ValidationError is one) when damaged."""
        return cls.model_validate_json(blob)


class Record(NamedTuple):
    """One row of the global log, exactly as stored.

    ``position`` is the global position (eventsourcing's notification id);
    the other columns are unsigned copies that the verifier checks against
    ``state``, which is the signed canonical envelope. A named tuple rather
    than a frozen dataclass: the verifier builds one per row, and a frozen
    dataclass's ``__init__`` cost ~5 µs of a ~25 µs budget (bench/PROFILE.md).
    """

    position: int
    stream: str
    stream_position: int
    type: str
    event_id: str
    state: bytes
    prev_hash: bytes
    hash: bytes
    signature: bytes
    key_id: str

    def envelope(self) -> Envelope:
        return Envelope.from_canonical(self.state)
