"""The ODM writer writes text directly (``projections.xml_text``); it must write exactly the bytes
``xml.etree.ElementTree`` wrote for the same elements. The ElementTree writer it replaced is kept here as the
reference, and both render the same log of hostile text (quotes, ``< > &``, entity look-alikes, CR/LF/TAB in
attribute values, C1 controls, line separators, non-ASCII, empty strings), so the escaping cannot drift."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from types import SimpleNamespace
from typing import Any

import pytest

from domain.events import MEANINGS
from ledger.envelope import Envelope, Record
from projections import odm
from projections.xml_text import element, escape_attrib, escape_text

NS = odm.NS
# Every character class an escaper could get wrong; all allowed in XML 1.0 (so the output also parses).
HOSTILE = 'q"uo\'te <tag> & &amp; &#10; ]]> <!-- --> \t tab\nline\r\ncrlf\rcr \x7f\x85\x9f \u2028\u2029 é ü 中 😀 '
# Characters XML forbids: neither writer checks them; both pass them through unchanged.
FORBIDDEN = "nul-free but \x01\x08\x0b\x0c\x1f\ufffe"
SAMPLES = ["", " ", "plain", HOSTILE, FORBIDDEN, "&", "<", ">", '"', "'", "\t", "\n", "\r", "\r\n", "&lt;", "x" * 600]


@pytest.mark.parametrize("value", SAMPLES)
def test_escaping_is_elementtrees(value: str) -> None:
    e = ET.Element("E", {"a": value, "b": "1"})
    e.text = value
    assert element("E", {"a": value, "b": "1"}, text=value) == ET.tostring(e, encoding="unicode")
    assert escape_attrib(value) == ET.tostring(ET.Element("E", {"a": value}), encoding="unicode")[6:-4]
    e = ET.Element("E")
    e.text = value
    assert (f"<E>{escape_text(value)}</E>" if value else "<E />") == ET.tostring(e, encoding="unicode")


def test_elements_nest_and_declare_the_namespace_as_elementtree_does() -> None:
    ET.register_namespace("", NS)
    root = ET.Element(f"{{{NS}}}Root", {"OID": HOSTILE})  # odm's _el dropped None attributes; so does element
    ET.SubElement(root, f"{{{NS}}}Empty")
    ET.SubElement(root, f"{{{NS}}}EmptyText").text = ""
    ET.SubElement(ET.SubElement(root, f"{{{NS}}}Inner", {"x": "<"}), f"{{{NS}}}Leaf").text = HOSTILE
    mine = element("Root", {"OID": HOSTILE, "Skipped": None}, xmlns=NS, children=[
        element("Empty"), element("EmptyText", text=""),
        element("Inner", {"x": "<"}, children=[element("Leaf", text=HOSTILE)])])
    assert mine == ET.tostring(root, encoding="unicode")


# -- the reference: the ElementTree writer as it was (projections/odm.py before the direct writer) ----------

def _el(tag: str, attrs: dict[str, str | None] | None = None, text: str | None = None) -> ET.Element:
    e = ET.Element(f"{{{NS}}}{tag}", {k: v for k, v in (attrs or {}).items() if v is not None})
    if text is not None:
        e.text = text
    return e


def _sub(parent: ET.Element, tag: str, attrs: dict[str, str | None] | None = None,
         text: str | None = None) -> ET.Element:
    e = _el(tag, attrs, text)
    parent.append(e)
    return e


class ElementTreeWriter(odm._Writer):
    """The old ``_study``, ``_admin``, ``_subject`` and ``_group``, serialised with ``ET.tostring``."""

    def _study(self) -> str:
        ET.register_namespace("", NS)
        protocol = self.registry.protocol
        study = _el("Study", {"OID": self.study})
        gv = _sub(study, "GlobalVariables")
        _sub(gv, "StudyName", text=self.study)
        dates = [f"{label} {day.isoformat()}" for label, day in (
            ("start", protocol.start_date if protocol else None),
            ("primary completion", protocol.primary_completion_date if protocol else None),
            ("completion", protocol.completion_date if protocol else None)) if day is not None]
        description = (protocol.title if protocol else self.study) + (f" ({'; '.join(dates)})" if dates else "")
        _sub(gv, "StudyDescription", text=description)
        _sub(gv, "ProtocolName", text=protocol.protocol_id if protocol else self.study)
        name = f"Protocol {protocol.protocol_id} v{protocol.version}" if protocol else "Protocol"
        mdv = _sub(study, "MetaDataVersion", {
            "OID": self.mdv, "Name": name,
            "Description": f"protocol sha256 {self.registry.protocol_sha256}; ICF {self.registry.icf_version}"})
        _sub(_sub(mdv, "Protocol"), "StudyEventRef", {"StudyEventOID": "SE.TRIAL", "Mandatory": "Yes"})
        se = _sub(mdv, "StudyEventDef", {"OID": "SE.TRIAL", "Name": "Trial record", "Repeating": "No",
                                         "Type": "Common"})
        layouts = [(name, self.items_of(name)) for name in odm.forms()] + [(odm.DERIVED, odm.DERIVED_ITEMS)]
        for type_name, _items in layouts:
            _sub(se, "FormRef", {"FormOID": f"F.{type_name}", "Mandatory": "No"})
        for type_name, _items in layouts:
            fd = _sub(mdv, "FormDef", {"OID": f"F.{type_name}", "Name": type_name, "Repeating": "Yes"})
            _sub(fd, "ItemGroupRef", {"ItemGroupOID": f"IG.{type_name}", "Mandatory": "Yes"})
        for type_name, layout in layouts:
            ig = _sub(mdv, "ItemGroupDef", {"OID": f"IG.{type_name}", "Name": type_name, "Repeating": "Yes"})
            for field, _dt in layout:
                _sub(ig, "ItemRef", {"ItemOID": odm._oid(type_name, field), "Mandatory": "No"})
        for type_name, layout in layouts:
            for field, data_type in layout:
                _sub(mdv, "ItemDef", {"OID": odm._oid(type_name, field), "Name": field, "DataType": data_type})
        return ET.tostring(study, encoding="unicode")

    def _admin(self, sites: list[str]) -> str:
        ET.register_namespace("", NS)
        admin = _el("AdminData", {"StudyOID": self.study})
        organisations = self._organisations()
        for s in self.registry.signers.values():
            user = _sub(admin, "User", {"OID": f"USR.{s.user_id}", "UserType": odm.USER_TYPES.get(s.role, "Other")})
            _sub(user, "LoginName", text=s.user_id)
            revoked = f"; revoked {s.revoked_at}: {s.revoke_reason}" if s.revoked_at else ""
            _sub(user, "DisplayName", text=f"{s.name} ({s.role}{revoked})")
            _sub(user, "FullName", text=s.name)
            if organisations.get(s.user_id):
                _sub(user, "Organization", text=organisations[s.user_id])
        protocol = self.registry.protocol
        effective = (protocol.start_date.isoformat() if protocol and protocol.start_date
                     else (first.occurred_at[:10] if (first := self.log.first_envelope) else "1970-01-01"))
        for site in sites:
            loc = _sub(admin, "Location", {"OID": f"LOC.{site}", "Name": site, "LocationType": "Site"})
            _sub(loc, "MetaDataVersionRef", {"StudyOID": self.study, "MetaDataVersionOID": self.mdv,
                                             "EffectiveDate": effective})
        for meaning in MEANINGS:
            sd = _sub(admin, "SignatureDef", {"OID": f"SD.{meaning}", "Methodology": "Electronic"})
            _sub(sd, "Meaning", text=meaning)
            _sub(sd, "LegalReason", text=f"21 CFR 11.50: {meaning}; Ed25519 over the event's chained hash")
        return ET.tostring(admin, encoding="unicode")

    def _subject(self, participant: str, stream: Any, site: str) -> str:
        ET.register_namespace("", NS)
        subject = _el("SubjectData", {"SubjectKey": participant, "TransactionType": "Insert"})
        _sub(subject, "SiteRef", {"LocationOID": f"LOC.{site}"})
        event = _sub(subject, "StudyEventData", {"StudyEventOID": "SE.TRIAL", "TransactionType": "Upsert"})
        originals: dict[str, Envelope] = {}
        for record, env in stream:
            originals[env.event_id] = env
            placed = self._place(env, originals)
            if placed is None:
                continue
            form, key, kind, items = placed
            fd = _sub(event, "FormData", {"FormOID": f"F.{form}", "FormRepeatKey": key,
                                           "TransactionType": "Upsert"})
            fd.append(self._et_group(form, key, kind, items, env, record, site))
        for n, deviation in enumerate(self.log.deviation_rows(participant, stream), 1):
            key = f"DEV.{n}"
            fd = _sub(event, "FormData", {"FormOID": f"F.{odm.DERIVED}", "FormRepeatKey": key,
                                           "TransactionType": "Upsert"})
            group = _sub(fd, "ItemGroupData", {"ItemGroupOID": f"IG.{odm.DERIVED}", "ItemGroupRepeatKey": key,
                                                "TransactionType": "Insert"})
            _sub(_sub(group, "Annotation", {"SeqNum": "1"}), "Comment",
                 text="derived by the protocol's deviation rules from the signed log; not itself a signed entry")
            values = {**deviation, "event_ids": " ".join(deviation["event_ids"])}
            for field, _dt in odm.DERIVED_ITEMS:
                _sub(group, "ItemData", {"ItemOID": odm._oid(odm.DERIVED, field), "Value": odm._value(values[field]),
                                         "TransactionType": "Insert"})
        return ET.tostring(subject, encoding="unicode")

    def _et_group(self, form: str, key: str, kind: str, items: dict[str, Any], env: Envelope, record: Record,
                  site: str) -> ET.Element:
        group = _el("ItemGroupData", {"ItemGroupOID": f"IG.{form}", "ItemGroupRepeatKey": key,
                                      "TransactionType": kind})
        audit = _sub(group, "AuditRecord", {"ID": f"AR.{env.event_id}", "UsedImputationMethod": "No"})
        _sub(audit, "UserRef", {"UserOID": f"USR.{env.author}"})
        _sub(audit, "LocationRef", {"LocationOID": f"LOC.{site}"})
        _sub(audit, "DateTimeStamp", text=odm._utc(env.recorded_at))
        if env.reason:
            _sub(audit, "ReasonForChange", text=env.reason)
        _sub(audit, "SourceID", text=f"{env.event_id} {record.hash.hex()}")
        sig = _sub(group, "Signature", {"ID": f"SIG.{env.event_id}"})
        _sub(sig, "UserRef", {"UserOID": f"USR.{env.author}"})
        _sub(sig, "LocationRef", {"LocationOID": f"LOC.{site}"})
        _sub(sig, "SignatureRef", {"SignatureOID": f"SD.{env.meaning}"})
        _sub(sig, "DateTimeStamp", text=odm._utc(env.recorded_at))
        items = odm._flat(items)
        for field, _dt in self.items_of(form):
            if field in items and items[field] is not None:
                _sub(group, "ItemData", {"ItemOID": odm._oid(form, field), "Value": odm._value(items[field]),
                                         "TransactionType": kind})
        return group


# -- a log of hostile text (the writers read only these attributes of a VerifiedLog) -----------------------

def _pairs(stream: str, events: list[dict[str, Any]]) -> list[tuple[Record, Envelope]]:
    out = []
    for n, fields in enumerate(events, 1):
        env = Envelope(**{"stream": stream, "position": n, "occurred_at": "2025-03-01T09:00:00+01:00",
                          "recorded_at": f"2025-03-01T10:{n:02d}:00-05:00", "author": HOSTILE, "key_id": "k",
                          "meaning": "authorship", **fields})
        out.append((Record(n, stream, n, env.type, env.event_id, b"{}", b"", bytes([n]) * 32, b"", "k"), env))
    return out


def _hostile_log(value: str) -> SimpleNamespace:
    participant = f"P{value}"
    stream = _pairs(participant, [
        {"event_id": f"e1{value}", "type": "ParticipantRegistered",
         "data": {"site": f"S{value}", "sex": value, "birth_year": 1970, "birth_date": None}},
        {"event_id": f"e2{value}", "type": "LabResultRecorded", "reason": value,
         "data": {"analyte": value, "value": 4.0, "unit": [value, 1.5, True], "reference_low": 1.25,
                  "reference_high": {"k": value}}},
        {"event_id": f"e3{value}", "type": "AdverseEventReported",
         "data": {"ae_id": f"AE{value}", "term": value, "grade": 2, "serious": False, "relatedness": value,
                  "expected": True, "awareness_at": "2025-03-01T09:00:00Z"}},
        {"event_id": f"e4{value}", "type": "AdverseEventUpdated", "reason": value,
         "data": {"ae_id": f"AE{value}", "term": value + "!", "grade": 3}},
        {"event_id": f"e5{value}", "type": "EntryCorrected", "reason": value,
         "data": {"target_event_id": f"e2{value}", "changes": {"analyte": value * 2, "value": "7.5"}}},
        {"event_id": f"e6{value}", "type": "EntryCorrected", "reason": "",
         "data": {"target_event_id": f"e3{value}", "changes": {"term": ""}}},
        {"event_id": f"e7{value}", "type": "EntryVoided", "reason": value, "data": {"target_event_id": f"e4{value}"}},
        {"event_id": f"e8{value}", "type": "InfusionAdministered",
         "data": {"dose_number": 1, "route": value, "lot": value, "identity_checked": True, "ended_at": None,
                  "product": {"cell_count": 1e6, "note": value}}},
    ])
    deviations = [{"kind": value, "important": True, "message": value, "event_ids": [f"e2{value}", "e3"],
                   "position": 2, "status": value}, {"kind": "k", "important": False, "message": "",
                                                     "event_ids": [], "position": 9, "status": "open"}]
    signers = {k: SimpleNamespace(user_id=f"{k}{value}", name=value, role=role, revoked_at=revoked,
                                  revoke_reason=value)
               for k, role, revoked in (("a", "admin", None), ("b", "lab", "2025-01-01"), ("c", value, None))}
    registry = SimpleNamespace(study_id=f"ST{value}", protocol=None, protocol_sha256=value, icf_version=value,
                               signers=signers)
    study = _pairs("study", [{"event_id": "s1", "type": "SignerRegistered",
                              "data": {"user_id": f"a{value}", "organisation": value}}])
    streams = {participant: stream, "P-empty": [], "study": study}
    return SimpleNamespace(registry=registry, study=study, participants=[participant, "P-empty"],
                           stream=streams.__getitem__, deviation_rows=lambda p, s: deviations if s else [],
                           head_hash=b"\x01" * 32, head_recorded_at="2025-03-01T10:00:00Z",
                           first_envelope=stream[0][1])


@pytest.mark.parametrize("value", SAMPLES)
def test_the_odm_writer_writes_elementtrees_bytes_for_hostile_text(value: str) -> None:
    log = _hostile_log(value)
    mine, theirs = io.StringIO(), io.StringIO()
    for _ in odm._Writer(log).write(mine):  # type: ignore[arg-type]
        pass
    for _ in ElementTreeWriter(log).write(theirs):  # type: ignore[arg-type]
        pass
    assert mine.getvalue() == theirs.getvalue()
    assert value in mine.getvalue() or escape_attrib(value) in mine.getvalue()
    if value != FORBIDDEN:  # XML refuses those characters; ElementTree wrote them all the same
        root = ET.fromstring(mine.getvalue().encode())  # and what it wrote reads back: attribute values exact
        subject = root.find(f"{{{NS}}}ClinicalData/{{{NS}}}SubjectData")
        assert subject is not None and subject.get("SubjectKey") == f"P{value}"
        values = [i.get("Value") for i in subject.iter(f"{{{NS}}}ItemData")]
        assert value * 2 in values and f"{value}!" in values
