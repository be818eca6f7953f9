"""The event catalogue (SPEC §3): one pydantic payload model per event type.

Field names are the contract of the JSON Lines import and of ``--data``.
Unknown fields are refused; ranges are checked here, protocol-specific
values (analytes, units, criteria, visits) by the participant aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError, model_validator

from ledger.errors import InputRefused

from domain.identifiers import USER_ID_PATTERN
from domain.input_limits import check_depth

Text = Field(min_length=1, max_length=2000)
ShortText = Field(min_length=1, max_length=200)
UserId = Field(pattern=USER_ID_PATTERN)  # matched whole (domain.identifiers)

MEANINGS = ("authorship", "review", "approval", "responsibility")
Meaning = Literal["authorship", "review", "approval", "responsibility"]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False, defer_build=True)


# -- study-level events ------------------------------------------------------------------


class StudyInitialised(Payload):
    study_id: str = ShortText
    protocol_id: str = ShortText
    protocol_version: str = ShortText
    protocol_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    root_public_key: str = Field(min_length=44, max_length=44)
    admin_id: str = UserId
    admin_name: str = ShortText
    protocol: dict[str, Any] | None = Field(
        default=None, description="The whole protocol document, so the ledger is self-contained"
    )


class SignerRegistered(Payload):
    user_id: str = UserId
    name: str = ShortText
    role: str = ShortText
    public_key: str = Field(min_length=44, max_length=44)
    valid_from: str = ShortText
    organisation: str | None = Field(default=None, min_length=1, max_length=200)


class SignerRevoked(Payload):
    user_id: str = UserId


class ProtocolAmended(Payload):
    protocol_version: str = ShortText
    protocol_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    icf_version: str = ShortText
    protocol: dict[str, Any] | None = None
    reconsent_required: StrictBool = False


class DocumentRegistered(Payload):
    """A controlled document (ICF, protocol) bound by the SHA-256 of its file's bytes (SPEC §10)."""

    kind: Literal["icf", "protocol"]
    version: str = ShortText
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    file_name: str = ShortText
    size: int | None = Field(default=None, ge=0)
    rules_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", description=(
        "For a protocol file the ledger reads (TOML/JSON): SHA-256 of its rules in canonical form, "
        "which an amendment embedding rules must match"))


# -- participant events ------------------------------------------------------------------


class ParticipantRegistered(Payload):
    site: str = ShortText
    sex: Literal["F", "M"]
    birth_year: int = Field(ge=1900, le=2100)
    birth_date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$",
                                   description="Full date of birth when the site may record it (exact age)")


class ConsentSigned(Payload):
    icf_version: str = ShortText
    obtained_by: str = ShortText
    witness: str | None = Field(default=None, min_length=1, max_length=200)
    document_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class ConsentWithdrawn(Payload):
    scope: Literal["treatment", "all"]


class ScreeningAssessed(Payload):
    criterion: str = Field(pattern=r"^[IE][0-9]{1,2}$")
    met: StrictBool
    value: float | str | None = None
    evidence: str | None = Field(default=None, min_length=1, max_length=2000)


class LabResultRecorded(Payload):
    analyte: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$", max_length=40)
    value: float | str
    unit: str = Field(min_length=0, max_length=40)
    reference_low: float | None = None
    reference_high: float | None = None


class EligibilityConfirmed(Payload):
    pass


class ScreenFailed(Payload):
    failed_criteria: list[str] = Field(min_length=1, max_length=20)


class Enrolled(Payload):
    pass


LEGACY_PRODUCT_FIELDS = ("cell_source", "cell_count", "viability_pct")
"""Product values that events written before protocols declared a product hold at the top level."""


class InfusionAdministered(Payload):
    """A dose: generic fields here; the product's own values in ``product``, checked against the protocol."""

    dose_number: int = Field(ge=1, le=3)
    route: str = ShortText
    lot: str = ShortText
    identity_checked: StrictBool
    ended_at: str | None = None
    product: dict[str, StrictStr | StrictBool | float] = Field(
        default_factory=dict, description="Values the protocol's [product] declares, e.g. cell_count")

    @model_validator(mode="before")
    @classmethod
    def _legacy_product_fields(cls, data: Any) -> Any:
        """Input in the older spelling (cell fields at the top level) is stored in ``product``."""
        if isinstance(data, dict) and any(k in data for k in LEGACY_PRODUCT_FIELDS):
            data = dict(data)
            product = dict(data["product"]) if isinstance(data.get("product"), dict) else {}
            for k in LEGACY_PRODUCT_FIELDS:
                if k in data:
                    product.setdefault(k, data.pop(k))
            data["product"] = product
        return data


def product_values(data: dict[str, Any]) -> dict[str, Any]:
    """A stored dose's product values, in either spelling (old events hold them at the top level)."""
    product = data.get("product")
    if isinstance(product, dict):
        return dict(product)
    return {k: data[k] for k in LEGACY_PRODUCT_FIELDS if k in data}


class VisitCompleted(Payload):
    visit: str = ShortText


Relatedness = Literal["unrelated", "unlikely", "possible", "probable", "definite"]


class AdverseEventReported(Payload):
    ae_id: str = ShortText
    term: str = ShortText
    grade: int = Field(ge=1, le=5)
    serious: StrictBool
    relatedness: Relatedness
    expected: StrictBool
    awareness_at: str = ShortText


class AdverseEventUpdated(Payload):
    ae_id: str = ShortText
    term: str | None = Field(default=None, min_length=1, max_length=200)
    grade: int | None = Field(default=None, ge=1, le=5)
    serious: StrictBool | None = None
    relatedness: Relatedness | None = None
    expected: StrictBool | None = None
    awareness_at: str | None = None


class ProtocolDeviationRecorded(Payload):
    category: str = ShortText
    description: str = Text
    important: StrictBool
    corrective_action: str | None = Field(default=None, min_length=1, max_length=2000)


class SafetyReportSubmitted(Payload):
    """An expedited safety report (e.g. of a SUSAR) sent to the regulator; stops the AE's reporting clock."""

    ae_id: str = ShortText
    recipient: str = ShortText
    reference: str | None = Field(default=None, min_length=1, max_length=200)


class EntryCorrected(Payload):
    target_event_id: str = Field(min_length=36, max_length=36)
    changes: dict[str, Any] = Field(min_length=1)


class EntryVoided(Payload):
    target_event_id: str = Field(min_length=36, max_length=36)


class RecordReviewed(Payload):
    scope: str = ShortText


class ParticipantCompleted(Payload):
    pass


class ParticipantWithdrawn(Payload):
    pass


# -- data management (SPEC §11): queries, source data verification, sign-off, lock ---------

QueryId = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
EventId = Field(min_length=36, max_length=36)


class QueryRaised(Payload):
    query_id: str = QueryId
    target_event_id: str = EventId
    text: str = Text


class QueryAnswered(Payload):
    query_id: str = QueryId
    text: str = Text
    correction_event_id: str | None = Field(default=None, min_length=36, max_length=36)


class QueryClosed(Payload):
    query_id: str = QueryId
    reason: str | None = Field(default=None, min_length=1, max_length=2000)


class QueryReopened(Payload):
    query_id: str = QueryId
    text: str | None = Field(default=None, min_length=1, max_length=2000)


class SourceVerified(Payload):
    target_event_id: str = EventId
    target_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="The target's chain hash (hex), as verify binds it")


class CasebookSigned(Payload):
    up_to_position: int = Field(ge=1, description="The participant's stream position the signature covers")
    casebook_hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class DatabaseLocked(Payload):
    participant: str | None = Field(default=None, min_length=1, max_length=64,
                                    description="Lock one participant; absent: the whole study")


class DatabaseUnlocked(Payload):
    participant: str | None = Field(default=None, min_length=1, max_length=64)


# -- witnesses (SPEC §9): who cosigns the log's checkpoints ---------------------------------


class WitnessAdded(Payload):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\s+]+$")
    url: str = Field(min_length=1, max_length=500, pattern=r"^https?://\S+$")
    vkey: str = Field(min_length=1, max_length=400)


class WitnessRemoved(Payload):
    name: str = ShortText


class WitnessPolicySet(Payload):
    quorum: int = Field(ge=0, le=100)


@dataclass(frozen=True)
class EventType:
    """What the ledger needs to know about one event type."""

    name: str
    model: type[Payload]
    participant: bool
    default_meaning: str = "authorship"
    reason_required: bool = False
    times: tuple[str, ...] = ()  # payload fields holding ISO 8601 times


CATALOGUE: dict[str, EventType] = {
    t.name: t
    for t in (
        EventType("StudyInitialised", StudyInitialised, participant=False),
        EventType("SignerRegistered", SignerRegistered, participant=False, times=("valid_from",)),
        EventType("SignerRevoked", SignerRevoked, participant=False, reason_required=True),
        EventType("ProtocolAmended", ProtocolAmended, participant=False),
        EventType("DocumentRegistered", DocumentRegistered, participant=False),
        EventType("WitnessAdded", WitnessAdded, participant=False),
        EventType("WitnessRemoved", WitnessRemoved, participant=False, reason_required=True),
        EventType("WitnessPolicySet", WitnessPolicySet, participant=False),
        EventType("ParticipantRegistered", ParticipantRegistered, participant=True),
        EventType("ConsentSigned", ConsentSigned, participant=True),
        EventType("ConsentWithdrawn", ConsentWithdrawn, participant=True, reason_required=True),
        EventType("ScreeningAssessed", ScreeningAssessed, participant=True),
        EventType("LabResultRecorded", LabResultRecorded, participant=True),
        EventType("EligibilityConfirmed", EligibilityConfirmed, participant=True),
        EventType("ScreenFailed", ScreenFailed, participant=True),
        EventType("Enrolled", Enrolled, participant=True),
        EventType("InfusionAdministered", InfusionAdministered, participant=True, times=("ended_at",)),
        EventType("VisitCompleted", VisitCompleted, participant=True),
        EventType("AdverseEventReported", AdverseEventReported, participant=True, times=("awareness_at",)),
        EventType("AdverseEventUpdated", AdverseEventUpdated, participant=True, times=("awareness_at",)),
        EventType("ProtocolDeviationRecorded", ProtocolDeviationRecorded, participant=True),
        EventType("SafetyReportSubmitted", SafetyReportSubmitted, participant=True),
        EventType("EntryCorrected", EntryCorrected, participant=True, reason_required=True),
        EventType("EntryVoided", EntryVoided, participant=True, reason_required=True),
        EventType("RecordReviewed", RecordReviewed, participant=True, default_meaning="review"),
        EventType("ParticipantCompleted", ParticipantCompleted, participant=True),
        EventType("ParticipantWithdrawn", ParticipantWithdrawn, participant=True, reason_required=True),
        EventType("QueryRaised", QueryRaised, participant=True),
        EventType("QueryAnswered", QueryAnswered, participant=True),
        EventType("QueryClosed", QueryClosed, participant=True),
        EventType("QueryReopened", QueryReopened, participant=True),
        EventType("SourceVerified", SourceVerified, participant=True, default_meaning="review"),
        EventType("CasebookSigned", CasebookSigned, participant=True, default_meaning="approval"),
        EventType("DatabaseLocked", DatabaseLocked, participant=False),
        EventType("DatabaseUnlocked", DatabaseUnlocked, participant=False, reason_required=True),
    )
}

# Withdrawal and completion end a participant's course (SPEC §4).
TERMINAL = ("ParticipantWithdrawn", "ParticipantCompleted")
ADVERSE_EVENTS = ("AdverseEventReported", "AdverseEventUpdated")
# Safety follow-up continues after a lock, a withdrawal or a completion (SPEC §4, §11).
SAFETY_FOLLOW_UP = ("AdverseEventReported", "AdverseEventUpdated", "SafetyReportSubmitted")
# Data management and record keeping about entries, not procedures on the participant.
RECORD_KEEPING = ("EntryCorrected", "EntryVoided", "RecordReviewed", "ProtocolDeviationRecorded", "ConsentWithdrawn",
                  "QueryRaised", "QueryAnswered", "QueryClosed", "QueryReopened", "SourceVerified", "CasebookSigned")
PARTICIPANT_TYPES = tuple(name for name, t in CATALOGUE.items() if t.participant)
STUDY_TYPES = tuple(name for name, t in CATALOGUE.items() if not t.participant)


def event_type(name: str) -> EventType:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise InputRefused(f"type: unknown event type {name!r}") from None


def validate_payload(type_name: str, data: Any, where: str = "data") -> dict[str, Any]:
    """Validate ``data`` against its model; return it in JSON form, defaults omitted.

    The error names the first bad field as ``data.<field>``.
    """
    et = event_type(type_name)
    if not isinstance(data, dict):
        raise InputRefused(f"{where}: must be a JSON object for {type_name}")
    check_depth(data, where)
    try:
        model = et.model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        field = f"{where}.{loc}" if loc else where
        raise InputRefused(f"{field}: {first['msg']}") from None
    return model.model_dump(mode="json", exclude_none=True)


def json_schema(type_name: str) -> dict[str, Any]:
    return event_type(type_name).model.model_json_schema()
