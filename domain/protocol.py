"""The protocol model: a trial is data, not code (SPEC §2).

A protocol file (TOML or JSON) is validated by these pydantic models. Its
hash is SHA-256 over the RFC 8785 form of the validated document, so the
same protocol written as TOML or JSON has the same hash. The whole document
is embedded in the genesis event, so an inspector needs nothing from the
sponsor to check who was allowed to sign what.
"""

from __future__ import annotations

import hashlib
import json
import string
import tomllib
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from ledger.canonical import canonical_bytes
from ledger.errors import InputRefused

PARTICIPANT_EVENTS = "@participant"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Check(_Strict):
    """One machine-checkable condition of a criterion.

    ``source = "age"`` compares the age at screening (year of the event minus
    birth year); ``source = "lab"`` compares the latest value of an analyte.
    """

    source: Literal["age", "lab"]
    analyte: str | None = None
    min: float | None = None
    max: float | None = None
    equals: str | None = None
    applies_to_sex: Literal["F", "M"] | None = None

    @model_validator(mode="after")
    def _complete(self) -> Check:
        if self.source == "lab" and not self.analyte:
            raise ValueError("a lab check needs an analyte")
        if self.min is None and self.max is None and self.equals is None:
            raise ValueError("a check needs min, max or equals")
        return self


class Criterion(_Strict):
    id: str = Field(pattern=r"^[IE][0-9]{1,2}$")
    kind: Literal["inclusion", "exclusion"]
    text: str
    checks: tuple[Check, ...] = ()


class Analyte(_Strict):
    id: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    units: tuple[str, ...] = ()
    qualitative: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None


class Dose(_Strict):
    number: int = Field(ge=1)
    day: int = Field(ge=0)
    minus: int = Field(ge=0, default=0)
    plus: int = Field(ge=0, default=0)
    route: str


class ProductField(_Strict):
    """One value recorded with each dose of the investigational product (e.g. a cell count)."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: Literal["text", "number"]
    min: float | None = None
    above: float | None = Field(default=None, description="exclusive lower bound")
    max: float | None = None
    required: bool = True

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not acceptable here, or None."""
        if self.kind == "text":
            if not isinstance(value, str) or not 1 <= len(value) <= 200:
                return "must be text of 1 to 200 characters"
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return "must be a number"
        if self.min is not None and value < self.min:
            return f"must be at least {self.min:g}"
        if self.above is not None and value <= self.above:
            return f"must be greater than {self.above:g}"
        if self.max is not None and value > self.max:
            return f"must be at most {self.max:g}"
        return None


class Product(_Strict):
    """The investigational product: its routes and the values recorded with each dose.

    A trial-specific fact, so it lives in the protocol file and not in the
    generic event catalogue: a vaccine declares intramuscular doses and no cell
    fields; the MSC trial declares cell source, count and viability.
    """

    name: str = Field(min_length=1)
    routes: tuple[str, ...] = Field(min_length=1)
    fields: tuple[ProductField, ...] = ()
    display: str = Field(default="", description="how `show` prints a dose's values, e.g. '{cell_count:g} cells'")

    @model_validator(mode="after")
    def _display_names_declared_fields(self) -> Product:
        ids = {f.id for f in self.fields}
        try:
            names = [name for _text, name, _spec, _conv in string.Formatter().parse(self.display) if name is not None]
        except ValueError as e:
            raise ValueError(f"display: {e}") from None
        for name in names:
            if name not in ids:
                raise ValueError(f"display: {{{name}}} is not a declared field")
        return self

    def check(self, values: object, where: str = "data.product") -> None:
        """Refuse values the protocol does not declare, or declares otherwise (one line naming the field)."""
        if not isinstance(values, dict):
            raise InputRefused(f"{where}: must be a JSON object")
        declared = {f.id: f for f in self.fields}
        for name in values:
            if name not in declared:
                known = ", ".join(declared) or "none"
                raise InputRefused(f"{where}.{name}: not a field of {self.name} (declared: {known})")
        for f in self.fields:
            if f.id not in values:
                if f.required:
                    raise InputRefused(f"{where}.{f.id}: required by the protocol for {self.name}")
                continue
            problem = f.problem(values[f.id])
            if problem:
                raise InputRefused(f"{where}.{f.id}: {problem}")

    def describe(self, values: dict[str, Any]) -> str:
        """A dose's values as the protocol's ``display`` says (each placeholder a declared field)."""
        out = []
        for text, name, spec, _conv in string.Formatter().parse(self.display):
            out.append(text)
            if name is not None:
                value = values.get(name)
                try:
                    out.append(format(value, spec or ""))
                except (TypeError, ValueError):
                    out.append(str(value))
        return "".join(out)


LEGACY_PRODUCT = Product(
    name="cell product", routes=("intra-arterial-pancreatic", "intravenous"),
    fields=(ProductField(id="cell_source", kind="text"), ProductField(id="cell_count", kind="number", above=0),
            ProductField(id="viability_pct", kind="number", min=0, max=100)),
    display="{cell_count:g} cells, viability {viability_pct}%",
)
"""What a protocol without a ``[product]`` section (written before products were declared) records."""


class Visit(_Strict):
    id: str
    day: int = Field(ge=0)
    minus: int = Field(ge=0, default=0)
    plus: int = Field(ge=0, default=0)


class Role(_Strict):
    """What one role may sign, whose entries it may correct or void, and which signature meanings it may use.

    ``supervises`` names the roles whose entries this role may correct or
    void besides its own (SPEC §4); ``meanings`` the 21 CFR 11.50 meanings it
    may sign with (``None``: any).
    """

    may_sign: tuple[str, ...]
    except_: tuple[str, ...] = Field(default=(), alias="except")
    own_entries_only: tuple[str, ...] = ()
    supervises: tuple[str, ...] = ()
    meanings: tuple[Literal["authorship", "review", "approval", "responsibility"], ...] | None = None
    # Whether a signer of this role may be named as ``obtained_by`` of a consent (SPEC §10);
    # unset means: exactly when the role may sign ``ConsentSigned``.
    may_obtain_consent: bool | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Protocol(_Strict):
    protocol_id: str
    version: str
    title: str
    icf_version: str
    target_enrolment: int = Field(ge=1)
    start_date: date | None = None  # study facts the ODM export states (EffectiveDate) instead of guessing
    primary_completion_date: date | None = None
    completion_date: date | None = None
    late_entry_hours: float = Field(gt=0, default=72)
    sae_report_hours: float = Field(gt=0, default=24)
    criteria: tuple[Criterion, ...]
    analytes: tuple[Analyte, ...]
    doses: tuple[Dose, ...]
    visits: tuple[Visit, ...] = ()
    roles: dict[str, Role]
    # target event type -> the only roles that may correct or void it (e.g. an infusion: pharmacy, investigator)
    editors: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # expedited reporting of a suspected unexpected serious adverse reaction, in days from awareness
    susar_report_days: int = Field(gt=0, default=15)
    susar_report_days_fatal: int = Field(gt=0, default=7)
    product: Product | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Protocol:
        numbers = [d.number for d in self.doses]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError("doses: numbers must run 1, 2, 3, … in order")
        analytes = {a.id for a in self.analytes}
        for c in self.criteria:
            for check in c.checks:
                if check.source == "lab" and check.analyte not in analytes:
                    raise ValueError(f"criteria.{c.id}: unknown analyte {check.analyte!r}")
        if "admin" not in self.roles:
            raise ValueError("roles: an 'admin' role is required")
        for name, role in self.roles.items():
            for other in role.supervises:
                if other not in self.roles:
                    raise ValueError(f"roles.{name}.supervises: unknown role {other!r}")
        for type_name, roles in self.editors.items():
            for other in roles:
                if other not in self.roles:
                    raise ValueError(f"editors.{type_name}: unknown role {other!r}")
        routes = self.investigational_product().routes
        for d in self.doses:
            if d.route not in routes:
                raise ValueError(f"doses: dose {d.number}'s route {d.route!r} is not a product route ({', '.join(routes)})")
        return self

    @model_serializer(mode="wrap")
    def _without_absent_product(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A protocol without a product section keeps the document (and hash) it always had."""
        data: dict[str, Any] = handler(self)
        if self.product is None:
            data.pop("product", None)
        return data

    # -- derived views --------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def sha256(self) -> str:
        return hashlib.sha256(canonical_bytes(self.document())).hexdigest()

    def criterion(self, criterion_id: str) -> Criterion | None:
        return next((c for c in self.criteria if c.id == criterion_id), None)

    def analyte(self, analyte_id: str) -> Analyte | None:
        return next((a for a in self.analytes if a.id == analyte_id), None)

    def dose(self, number: int) -> Dose | None:
        return next((d for d in self.doses if d.number == number), None)

    def investigational_product(self) -> Product:
        return self.product or LEGACY_PRODUCT

    def visit(self, visit_id: str) -> Visit | None:
        return next((v for v in self.visits if v.id == visit_id), None)

    @property
    def supervision(self) -> bool:
        """Whether the file declares who supervises whom; without it any editor role may edit (older files)."""
        return any(r.supervises for r in self.roles.values())


def _location(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"]) or "protocol"


def parse_protocol(document: dict[str, Any], source: str = "protocol") -> Protocol:
    try:
        return Protocol.model_validate(document)
    except ValidationError as e:
        first = e.errors()[0]
        raise InputRefused(f"{source}: {_location(dict(first))}: {first['msg']}") from None


def load_protocol(path: Path) -> Protocol:
    """Load a TOML or JSON protocol file; a bad field is named in a one-line error."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputRefused(f"--protocol {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
        document = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise InputRefused(f"--protocol {path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {e}") from None
    if not isinstance(document, dict):
        raise InputRefused(f"--protocol {path}: must hold a table/object")
    return parse_protocol(document, source=str(path))


def bundled_protocol_path(name: str = "msc-t2dm") -> Path:
    return Path(__file__).parent / "protocols" / f"{name}.toml"
