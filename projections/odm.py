"""CDISC ODM 1.3.2 export (Transactional, Archival) with an AuditRecord and a Signature on every entry.

Each signed participant event becomes one ItemGroupData transaction:

* ``Insert`` for an original entry, keyed by its event id (an AE by its ae_id);
* ``Update`` for ``EntryCorrected`` (only the changed items) and ``AdverseEventUpdated``,
  after the original, which is kept;
* ``Remove`` for ``EntryVoided``.

Every AuditRecord carries the signer (UserRef), the site (LocationRef), the
recorded time with its UTC offset, the reason, and SourceID = "event id
hash". Subjects are written one at a time, so memory stays flat.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

from domain.service import Trial
from domain.signers import STUDY_STREAM, SignerRegistry
from ledger.envelope import Envelope, Record

NS = "http://www.cdisc.org/ns/odm/v1.3"
ET.register_namespace("", NS)

# event type -> (form/item group suffix, item fields)
FORMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ConsentSigned": ("CONSENT", ("icf_version", "obtained_by", "witness", "document_sha256")),
    "ConsentWithdrawn": ("WITHDRAWAL", ("scope",)),
    "ScreeningAssessed": ("SCREENING", ("criterion", "met", "value", "evidence")),
    "LabResultRecorded": ("LAB", ("analyte", "value", "unit", "reference_low", "reference_high")),
    "InfusionAdministered": ("DOSE", ("dose_number", "route", "lot", "cell_source", "cell_count", "viability_pct",
                                      "identity_checked", "ended_at")),
    "AdverseEventReported": ("AE", ("ae_id", "term", "grade", "serious", "relatedness", "expected",
                                    "awareness_at")),
    "VisitCompleted": ("VISIT", ("visit",)),
}
FORMS["AdverseEventUpdated"] = FORMS["AdverseEventReported"]
DATA_TYPES = {"grade": "integer", "dose_number": "integer", "value": "text", "cell_count": "float",
              "viability_pct": "float", "met": "boolean", "serious": "boolean", "expected": "boolean",
              "identity_checked": "boolean", "awareness_at": "datetime", "ended_at": "datetime"}
MEANINGS = ("authorship", "review", "approval", "responsibility")


def _el(tag: str, attrs: dict[str, str] | None = None, text: str | None = None) -> ET.Element:
    e = ET.Element(f"{{{NS}}}{tag}", {k: v for k, v in (attrs or {}).items() if v is not None})
    if text is not None:
        e.text = text
    return e


def _sub(parent: ET.Element, tag: str, attrs: dict[str, str] | None = None, text: str | None = None) -> ET.Element:
    e = _el(tag, attrs, text)
    parent.append(e)
    return e


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _utc(text: str) -> str:
    return datetime.fromisoformat(text).astimezone(UTC).isoformat(timespec="microseconds")


class OdmWriter:
    def __init__(self, trial: Trial):
        self.trial = trial
        self.registry: SignerRegistry = trial.registry()
        self.study = self.registry.study_id or "STUDY"

    def write(self, out: IO[str], participants: list[str]) -> None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        out.write(f'<ODM xmlns="{NS}" FileType="Transactional" Archival="Yes" ODMVersion="1.3.2" '
                  f'FileOID="trial-ledger.{self.study}.{now.replace(":", "")}" CreationDateTime="{now}" '
                  'Granularity="All" Originator="trial-ledger" SourceSystem="trial-ledger">\n')
        for element in (self._study(), self._admin(participants)):
            out.write(ET.tostring(element, encoding="unicode") + "\n")
        out.write(f'<ClinicalData StudyOID="{self.study}" MetaDataVersionOID="MDV.1">\n')
        for participant in participants:
            out.write(ET.tostring(self._subject(participant), encoding="unicode") + "\n")
        out.write("</ClinicalData>\n</ODM>\n")

    def _study(self) -> ET.Element:
        protocol = self.registry.protocol
        study = _el("Study", {"OID": self.study})
        gv = _sub(study, "GlobalVariables")
        _sub(gv, "StudyName", text=self.study)
        _sub(gv, "StudyDescription", text=protocol.title if protocol else self.study)
        _sub(gv, "ProtocolName", text=protocol.protocol_id if protocol else self.study)
        mdv = _sub(study, "MetaDataVersion", {"OID": "MDV.1", "Name": f"Protocol {protocol.version if protocol else ''}"})
        _sub(_sub(mdv, "Protocol"), "StudyEventRef", {"StudyEventOID": "SE.TRIAL", "Mandatory": "Yes"})
        se = _sub(mdv, "StudyEventDef", {"OID": "SE.TRIAL", "Name": "Trial record", "Repeating": "No",
                                         "Type": "Common"})
        forms = sorted({form for form, _ in FORMS.values()})
        for form in forms:
            _sub(se, "FormRef", {"FormOID": f"F.{form}", "Mandatory": "No"})
        for form in forms:
            fd = _sub(mdv, "FormDef", {"OID": f"F.{form}", "Name": form.title(), "Repeating": "Yes"})
            _sub(fd, "ItemGroupRef", {"ItemGroupOID": f"IG.{form}", "Mandatory": "Yes"})
        items: dict[str, None] = {}
        for form in forms:
            fields = next(f for name, f in FORMS.values() if name == form)
            ig = _sub(mdv, "ItemGroupDef", {"OID": f"IG.{form}", "Name": form.title(), "Repeating": "Yes"})
            for field in fields:
                _sub(ig, "ItemRef", {"ItemOID": f"IT.{form}.{field.upper()}", "Mandatory": "No"})
                items[f"{form}.{field}"] = None
        for key in items:
            form, field = key.split(".")
            _sub(mdv, "ItemDef", {"OID": f"IT.{form}.{field.upper()}", "Name": field,
                                  "DataType": DATA_TYPES.get(field, "text")})
        return study

    def _admin(self, participants: list[str]) -> ET.Element:
        admin = _el("AdminData", {"StudyOID": self.study})
        for s in self.registry.signers.values():
            user = _sub(admin, "User", {"OID": f"USR.{s.user_id}", "UserType": "Other"})
            _sub(user, "LoginName", text=s.user_id)
            _sub(user, "FullName", text=s.name)
            _sub(user, "Organization", text=f"role: {s.role}")
        for site in self._sites(participants):
            loc = _sub(admin, "Location", {"OID": f"LOC.{site}", "Name": site, "LocationType": "Site"})
            _sub(loc, "MetaDataVersionRef", {"StudyOID": self.study, "MetaDataVersionOID": "MDV.1",
                                             "EffectiveDate": "2010-08-31"})
        for meaning in MEANINGS:
            sd = _sub(admin, "SignatureDef", {"OID": f"SD.{meaning}", "Methodology": "Electronic"})
            _sub(sd, "Meaning", text=meaning)
            _sub(sd, "LegalReason", text=f"21 CFR 11.50: {meaning}; Ed25519 over the event's chained hash")
        return admin

    def _sites(self, participants: list[str]) -> list[str]:
        sites = {"SPONSOR"}
        for p in participants:
            first = self.trial.store.stream(p, lte=1)
            if first:
                sites.add(str(first[0].data.get("site", "SITE")))
        return sorted(sites)

    def _subject(self, participant: str) -> ET.Element:
        records = self.trial.store.stream_records(participant)
        site = str(records[0].envelope().data.get("site", "SITE")) if records else "SITE"
        subject = _el("SubjectData", {"SubjectKey": participant, "TransactionType": "Insert"})
        _sub(subject, "SiteRef", {"LocationOID": f"LOC.{site}"})
        event = _sub(subject, "StudyEventData", {"StudyEventOID": "SE.TRIAL", "TransactionType": "Upsert"})
        types: dict[str, str] = {}
        for record in records:
            env = record.envelope()
            types[env.event_id] = env.type
            for form, group in self._groups(env, record, site, types):
                fd = _sub(event, "FormData", {"FormOID": f"F.{form}", "FormRepeatKey": "1",
                                               "TransactionType": "Upsert"})
                fd.append(group)
        return subject

    def _groups(self, env: Envelope, record: Record, site: str,
                types: dict[str, str]) -> Iterator[tuple[str, ET.Element]]:
        data = env.data
        if env.type in ("EntryCorrected", "EntryVoided"):
            target = str(data.get("target_event_id"))
            target_type = types.get(target)
            if target_type not in FORMS:
                return
            form, fields = FORMS[target_type]
            if env.type == "EntryVoided":
                yield form, self._group(form, target, "Remove", {}, env, record, site)
            else:
                changes = {k: v for k, v in (data.get("changes") or {}).items() if k in fields}
                yield form, self._group(form, target, "Update", changes, env, record, site)
            return
        if env.type not in FORMS:
            return
        form, fields = FORMS[env.type]
        key = str(data.get("ae_id")) if form == "AE" else env.event_id
        kind = "Update" if env.type == "AdverseEventUpdated" else "Insert"
        yield form, self._group(form, key, kind, {f: data[f] for f in fields if f in data}, env, record, site)

    def _group(self, form: str, key: str, kind: str, items: dict[str, Any], env: Envelope, record: Record,
               site: str) -> ET.Element:
        group = _el("ItemGroupData", {"ItemGroupOID": f"IG.{form}", "ItemGroupRepeatKey": key,
                                      "TransactionType": kind})
        audit = _sub(group, "AuditRecord", {"UsedImputationMethod": "No"})
        _sub(audit, "UserRef", {"UserOID": f"USR.{env.author}"})
        _sub(audit, "LocationRef", {"LocationOID": f"LOC.{site}"})
        _sub(audit, "DateTimeStamp", text=_utc(env.recorded_at))
        if env.reason:
            _sub(audit, "ReasonForChange", text=env.reason)
        _sub(audit, "SourceID", text=f"{env.event_id} {record.hash.hex()}")
        sig = _sub(group, "Signature")
        _sub(sig, "UserRef", {"UserOID": f"USR.{env.author}"})
        _sub(sig, "LocationRef", {"LocationOID": f"LOC.{site}"})
        _sub(sig, "SignatureRef", {"SignatureOID": f"SD.{env.meaning}"})
        _sub(sig, "DateTimeStamp", text=_utc(env.recorded_at))
        for field, value in items.items():
            if value is not None:
                _sub(group, "ItemData", {"ItemOID": f"IT.{form}.{field.upper()}", "Value": _value(value),
                                         "TransactionType": kind})
        return group


def participants_of(trial: Trial) -> list[str]:
    return [s for s in trial.store.streams() if s != STUDY_STREAM]
