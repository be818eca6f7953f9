"""CDISC ODM 1.3.2 export (Transactional, Archival) that loses nothing the ledger signed.

A pure function of a verified log (``projections.verified_log``), so the
inspection package and ``verify-package`` produce the same bytes.

* **Metadata** comes from the event catalogue's pydantic models: one form
  and item group per participant event type, one ItemDef per payload field
  (DataType from the field's annotation), plus ``OCCURRED_AT`` (the clinical
  time with its offset) and ``MEANING``. Study facts (name, protocol,
  EffectiveDate) come from the protocol embedded in the log.
* **Clinical data**: each participant event is one ItemGroupData.
  ``Insert`` for an original (keyed by event id; an AE by its ``ae_id``),
  ``Update`` for ``AdverseEventUpdated`` and for ``EntryCorrected`` (only the
  changed items, under the target's key, so an AE correction sits under
  that AE), ``Remove`` for ``EntryVoided``. Originals are kept.
* Deviations the rules derive are listed per subject in form
  ``DerivedDeviation`` with an Annotation saying they are derived, not signed;
  explicit ``ProtocolDeviationRecorded`` entries are signed forms like any other.
* Every signed group has an AuditRecord (user, site, recorded time with offset,
  reason, SourceID = "event id hash") and a Signature with an ``ID``
  (meaning, signer, time; 21 CFR 11.50).
* **AdminData**: one User per signer (UserType from the role; Organization
  only when the registration names an organisation), the sites, one
  SignatureDef per meaning. Study-level events (registrations, revocations,
  amendments) are AdminData and MetaDataVersion facts, not subject data.

Nothing depends on the wall clock: CreationDateTime is the log head's
recorded time, so a regenerated file is byte-identical.
"""

from __future__ import annotations

import shutil
import tempfile
import types
import typing
from collections.abc import Iterator
from functools import cache
from typing import IO, Any

from domain.events import CATALOGUE, MEANINGS, EventType
from domain.timeutil import utc_text
from ledger.canonical import canonical_bytes
from ledger.envelope import Envelope, Record
from projections.verified_log import Pairs, VerifiedLog
from projections.xml_text import element, escape_attrib, escape_text

NS = "http://www.cdisc.org/ns/odm/v1.3"

# An event type whose entries are updated by another type shares its item group (keyed by ae_id).
SAME_GROUP = {"AdverseEventUpdated": "AdverseEventReported"}
KEYED_BY = {"AdverseEventReported": "ae_id"}
CHANGE_TYPES = ("EntryCorrected", "EntryVoided")
USER_TYPES = {"admin": "Sponsor", "investigator": "Investigator", "lab": "Lab"}
EXTRA_ITEMS = (("OCCURRED_AT", "datetime"), ("MEANING", "text"))
# Deviations the rules derive (SPEC §4), listed after each subject's signed entries.
DERIVED = "DerivedDeviation"
DERIVED_ITEMS = [("kind", "text"), ("important", "boolean"), ("message", "text"), ("event_ids", "text"),
                 ("position", "integer"), ("status", "text")]


def forms() -> dict[str, EventType]:
    """Participant event types that are forms of their own (corrections and voids act on others)."""
    return {name: et for name, et in CATALOGUE.items()
            if et.participant and name not in CHANGE_TYPES and name not in SAME_GROUP}


def _data_type(et: EventType, name: str, annotation: Any) -> str:
    if name in et.times:
        return "datetime"
    args = [a for a in typing.get_args(annotation) if a is not type(None)] \
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union else [annotation]
    if len(args) != 1:
        return "text"
    base = typing.get_origin(args[0]) or args[0]
    return {bool: "boolean", int: "integer", float: "float", dict: "object"}.get(base, "text")


@cache
def item_defs(et: EventType) -> list[tuple[str, str]]:
    """(field, ODM DataType) of every item of a form, derived from the payload model ("object" for a dict)."""
    hints = typing.get_type_hints(et.model)
    return [(name, _data_type(et, name, hints[name])) for name in et.model.model_fields] + list(EXTRA_ITEMS)


def _oid(type_name: str, field: str) -> str:
    return f"IT.{type_name}.{field}"


def _leaf(tag: str, text: str) -> str:
    """An element holding only text, as ElementTree writes it (empty text: an empty element)."""
    return f"<{tag}>{escape_text(text)}</{tag}>" if text else f"<{tag} />"


def _flat(items: dict[str, Any]) -> dict[str, Any]:
    """``{"product": {"cell_count": 1e6}}`` as ``{"product.cell_count": 1e6}``, keeping the whole object too."""
    out = dict(items)
    for key, value in items.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
    return out


def _value(v: Any) -> str:
    if type(v) is str:  # most values; the checks below would all fail for a str
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, list):
        return ",".join(_value(x) for x in v)
    if isinstance(v, dict):
        return canonical_bytes(v).decode()
    return str(v)


def _utc(text: str) -> str:
    return utc_text(text)


def write_odm(log: VerifiedLog, out: IO[str]) -> int:
    """Write the whole log as ODM; returns the number of subjects."""
    for _participant in odm_stages(log, out):
        pass
    return len(log.participants)


def odm_stages(log: VerifiedLog, out: IO[str]) -> Iterator[str]:
    """Write the ODM file, yielding after each subject (see ``projections.report.stages``)."""
    return _Writer(log).write(out)


class _Writer:
    """Writes the ODM text directly (``projections.xml_text``): the bytes ``xml.etree.ElementTree`` wrote
    for the same elements, without building ~37 element objects per event (bench/PROFILE.md, "ODM writer")."""

    def __init__(self, log: VerifiedLog):
        self.log = log
        self.registry = log.registry
        self.study = self.registry.study_id or "STUDY"
        protocol = self.registry.protocol
        self.mdv = f"MDV.{protocol.version}" if protocol else "MDV.1"
        self.registrations: list[tuple[int, str, str]] = []
        # Per form, the layout and each item's opening text; the registry (hence the protocol) is fixed.
        self._layouts: dict[str, list[tuple[str, str]]] = {}
        self._item_heads: dict[str, list[tuple[str, str]]] = {}

    def items_of(self, type_name: str) -> list[tuple[str, str]]:
        """A form's items: the payload model's fields, a dict field spread into the keys the protocol declares
        for it (the investigational product's values: ``product.cell_count``), then the envelope's extras."""
        if type_name in self._layouts:
            return self._layouts[type_name]
        layout: list[tuple[str, str]] = []
        product = self.registry.protocol.investigational_product() if self.registry.protocol else None
        for field, data_type in item_defs(CATALOGUE[type_name]):
            if data_type != "object":
                layout.append((field, data_type))
            elif field == "product" and product is not None:
                layout += [(f"product.{f.id}", "float" if f.kind == "number" else "text") for f in product.fields]
            else:
                layout.append((field, "text"))  # canonical JSON of the whole object
        self._layouts[type_name] = layout
        return layout

    def _item_heads_of(self, form: str) -> list[tuple[str, str]]:
        """(field, ``<ItemData ItemOID="..." Value="``) of each item of a form, in the form's order."""
        if form not in self._item_heads:
            self._item_heads[form] = [(field, f'<ItemData ItemOID="{escape_attrib(_oid(form, field))}" Value="')
                                      for field, _dt in (DERIVED_ITEMS if form == DERIVED else self.items_of(form))]
        return self._item_heads[form]

    def write(self, out: IO[str]) -> Iterator[str]:
        """Subjects are rendered one participant at a time into a spool (noting each site), then the
        header, metadata and AdminData (which lists those sites) are written and the spool copied after.

        The header's values are escaped too (they were not: a study id with ``&``, ``<`` or ``"`` made the
        file ill-formed); for any study id without those characters the bytes are as before."""
        with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as spool:
            sites = {"SPONSOR"}
            self.registrations = self._registrations(self.log.study)
            for participant in self.log.participants:
                stream = self.log.stream(participant)
                self.registrations += self._registrations(stream)
                site = self._site(stream)
                sites.add(site)
                spool.write(self._subject(participant, stream, site) + "\n")
                yield participant
            head = self.log.head_hash.hex()[:16] if self.log.head_hash is not None else "empty"
            created = _utc(self.log.head_recorded_at) if self.log.head_recorded_at else "1970-01-01T00:00:00+00:00"
            out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
            out.write(f'<ODM xmlns="{NS}" FileType="Transactional" Archival="Yes" ODMVersion="1.3.2" '
                      f'FileOID="trial-ledger.{escape_attrib(self.study)}.{head}" '
                      f'CreationDateTime="{escape_attrib(created)}" '
                      'Granularity="All" Originator="trial-ledger" SourceSystem="trial-ledger">\n')
            for text in (self._study(), self._admin(sorted(sites))):
                out.write(text + "\n")
            out.write(f'<ClinicalData StudyOID="{escape_attrib(self.study)}" '
                      f'MetaDataVersionOID="{escape_attrib(self.mdv)}">\n')
            spool.seek(0)
            shutil.copyfileobj(spool, out, 1 << 20)
        out.write("</ClinicalData>\n</ODM>\n")

    # -- metadata ---------------------------------------------------------------------------

    def _study(self) -> str:
        protocol = self.registry.protocol
        dates = [f"{label} {day.isoformat()}" for label, day in (
            ("start", protocol.start_date if protocol else None),
            ("primary completion", protocol.primary_completion_date if protocol else None),
            ("completion", protocol.completion_date if protocol else None)) if day is not None]
        description = (protocol.title if protocol else self.study) + (f" ({'; '.join(dates)})" if dates else "")
        gv = element("GlobalVariables", children=[
            element("StudyName", text=self.study),
            element("StudyDescription", text=description),
            element("ProtocolName", text=protocol.protocol_id if protocol else self.study)])
        name = f"Protocol {protocol.protocol_id} v{protocol.version}" if protocol else "Protocol"
        layouts = [(name, self.items_of(name)) for name in forms()] + [(DERIVED, DERIVED_ITEMS)]
        mdv: list[str] = [element("Protocol", children=[
            element("StudyEventRef", {"StudyEventOID": "SE.TRIAL", "Mandatory": "Yes"})])]
        mdv.append(element("StudyEventDef", {"OID": "SE.TRIAL", "Name": "Trial record", "Repeating": "No",
                                             "Type": "Common"},
                           children=[element("FormRef", {"FormOID": f"F.{type_name}", "Mandatory": "No"})
                                     for type_name, _items in layouts]))
        mdv += [element("FormDef", {"OID": f"F.{type_name}", "Name": type_name, "Repeating": "Yes"}, children=[
                    element("ItemGroupRef", {"ItemGroupOID": f"IG.{type_name}", "Mandatory": "Yes"})])
                for type_name, _items in layouts]
        mdv += [element("ItemGroupDef", {"OID": f"IG.{type_name}", "Name": type_name, "Repeating": "Yes"},
                        children=[element("ItemRef", {"ItemOID": _oid(type_name, field), "Mandatory": "No"})
                                  for field, _dt in layout])
                for type_name, layout in layouts]
        mdv += [element("ItemDef", {"OID": _oid(type_name, field), "Name": field, "DataType": data_type})
                for type_name, layout in layouts for field, data_type in layout]
        return element("Study", {"OID": self.study}, xmlns=NS, children=[gv, element("MetaDataVersion", {
            "OID": self.mdv, "Name": name,
            "Description": f"protocol sha256 {self.registry.protocol_sha256}; ICF {self.registry.icf_version}"},
            children=mdv)])

    def _admin(self, sites: list[str]) -> str:
        admin: list[str] = []
        organisations = self._organisations()
        for s in self.registry.signers.values():
            revoked = f"; revoked {s.revoked_at}: {s.revoke_reason}" if s.revoked_at else ""
            user = [element("LoginName", text=s.user_id),
                    element("DisplayName", text=f"{s.name} ({s.role}{revoked})"),
                    element("FullName", text=s.name)]
            if organisations.get(s.user_id):
                user.append(element("Organization", text=organisations[s.user_id]))
            admin.append(element("User", {"OID": f"USR.{s.user_id}", "UserType": USER_TYPES.get(s.role, "Other")},
                                 children=user))
        protocol = self.registry.protocol
        effective = (protocol.start_date.isoformat() if protocol and protocol.start_date
                     else (first.occurred_at[:10] if (first := self.log.first_envelope) else "1970-01-01"))
        admin += [element("Location", {"OID": f"LOC.{site}", "Name": site, "LocationType": "Site"}, children=[
                      element("MetaDataVersionRef", {"StudyOID": self.study, "MetaDataVersionOID": self.mdv,
                                                     "EffectiveDate": effective})])
                  for site in sites]
        admin += [element("SignatureDef", {"OID": f"SD.{meaning}", "Methodology": "Electronic"}, children=[
                      element("Meaning", text=meaning),
                      element("LegalReason", text=f"21 CFR 11.50: {meaning}; Ed25519 over the event's chained hash")])
                  for meaning in MEANINGS]
        return element("AdminData", {"StudyOID": self.study}, xmlns=NS, children=admin)

    def _organisations(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for _position, user, organisation in sorted(self.registrations):
            found[user] = organisation
        return found

    @staticmethod
    def _registrations(stream: Pairs) -> list[tuple[int, str, str]]:
        """(position, user, organisation) of every registration naming an organisation, in any stream."""
        return [(record.position, str(env.data["user_id"]), str(env.data["organisation"])) for record, env in stream
                if env.type == "SignerRegistered" and env.data.get("organisation")]

    @staticmethod
    def _site(stream: Pairs) -> str:
        return str(stream[0][1].data.get("site", "SITE")) if stream else "SITE"

    # -- clinical data ----------------------------------------------------------------------
    # The hot path (every event of every subject): written as strings, element by element in the
    # order ElementTree wrote them; every value from the log goes through escape_attrib/escape_text.

    def _subject(self, participant: str, stream: Pairs, site: str) -> str:
        location = f'LOC.{escape_attrib(site)}'
        forms_: list[str] = []
        originals: dict[str, Envelope] = {}
        for record, env in stream:
            originals[env.event_id] = env
            placed = self._place(env, originals)
            if placed is None:
                continue
            form, key, kind, items = placed
            forms_.append(f'<FormData FormOID="F.{escape_attrib(form)}" FormRepeatKey="{escape_attrib(key)}" '
                          'TransactionType="Upsert">')
            forms_.append(self._group(form, key, kind, items, env, record, location))
            forms_.append("</FormData>")
        comment = _leaf("Comment", "derived by the protocol's deviation rules from the signed log; "
                                   "not itself a signed entry")
        derived = self._item_heads_of(DERIVED)
        for n, deviation in enumerate(self.log.deviation_rows(participant, stream), 1):
            key = f"DEV.{n}"
            forms_.append(f'<FormData FormOID="F.{DERIVED}" FormRepeatKey="{key}" TransactionType="Upsert">'
                          f'<ItemGroupData ItemGroupOID="IG.{DERIVED}" ItemGroupRepeatKey="{key}" '
                          f'TransactionType="Insert"><Annotation SeqNum="1">{comment}</Annotation>')
            values = {**deviation, "event_ids": " ".join(deviation["event_ids"])}
            forms_ += [f'{head}{escape_attrib(_value(values[field]))}" TransactionType="Insert" />'
                       for field, head in derived]
            forms_.append("</ItemGroupData></FormData>")
        event = '<StudyEventData StudyEventOID="SE.TRIAL" TransactionType="Upsert"'
        event = f'{event}>{"".join(forms_)}</StudyEventData>' if forms_ else f"{event} />"
        return (f'<SubjectData xmlns="{NS}" SubjectKey="{escape_attrib(participant)}" TransactionType="Insert">'
                f'<SiteRef LocationOID="{location}" />{event}</SubjectData>')

    def _place(self, env: Envelope, originals: dict[str, Envelope]
               ) -> tuple[str, str, str, dict[str, Any]] | None:
        """(form, repeat key, transaction type, items) of one event."""
        if env.type in CHANGE_TYPES:
            target = originals.get(str(env.data.get("target_event_id")))
            if target is None or target.type in CHANGE_TYPES:
                return None
            form = SAME_GROUP.get(target.type, target.type)
            key = self._key(form, target)
            if env.type == "EntryVoided":
                return form, key, "Remove", {}
            fields = {name for name, _dt in self.items_of(form)}
            changes = {k: v for k, v in _flat(env.data.get("changes") or {}).items() if k in fields}
            return form, key, "Update", changes
        if env.type not in CATALOGUE or not CATALOGUE[env.type].participant:
            return None
        form = SAME_GROUP.get(env.type, env.type)
        kind = "Update" if env.type in SAME_GROUP else "Insert"
        items = dict(env.data)
        if kind == "Insert":
            items["OCCURRED_AT"] = env.occurred_at
        items["MEANING"] = env.meaning
        return form, self._key(form, env), kind, items

    @staticmethod
    def _key(form: str, env: Envelope) -> str:
        field = KEYED_BY.get(form)
        return str(env.data.get(field)) if field and env.data.get(field) else env.event_id

    def _group(self, form: str, key: str, kind: str, items: dict[str, Any], env: Envelope, record: Record,
               location: str) -> str:
        """One signed entry: ItemGroupData with its AuditRecord, Signature and ItemData (``location`` escaped)."""
        event_id = escape_attrib(env.event_id)
        user = f'<UserRef UserOID="USR.{escape_attrib(env.author)}" /><LocationRef LocationOID="{location}" />'
        stamp = _leaf("DateTimeStamp", _utc(env.recorded_at))
        reason = _leaf("ReasonForChange", env.reason) if env.reason else ""
        parts = [f'<ItemGroupData ItemGroupOID="IG.{escape_attrib(form)}" ItemGroupRepeatKey="{escape_attrib(key)}" '
                 f'TransactionType="{kind}"><AuditRecord ID="AR.{event_id}" UsedImputationMethod="No">{user}'
                 f'{stamp}{reason}{_leaf("SourceID", f"{env.event_id} {record.hash.hex()}")}</AuditRecord>'
                 f'<Signature ID="SIG.{event_id}">{user}<SignatureRef SignatureOID="SD.{escape_attrib(env.meaning)}" />'
                 f'{stamp}</Signature>']
        tail = f'" TransactionType="{kind}" />'
        items = _flat(items)
        parts += [f"{head}{escape_attrib(_value(items[field]))}{tail}" for field, head in self._item_heads_of(form)
                  if field in items and items[field] is not None]
        parts.append("</ItemGroupData>")
        return "".join(parts)
