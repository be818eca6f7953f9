"""The incremental deviation book equals judging every prefix of the record from scratch.

``DeviationBook`` re-runs only the rules a new fact can change, as each rule
declares (domain/rules/rule.py). The reference here is the definition: after
every event and amendment, run every rule over the whole record so far
(``judge``) and diff with what is open. Random histories draw every event
type the rules read, with clinical times out of order, late entries,
corrections, voids (also of entries not yet in the log), amendments with and
without re-consent, and times that do not parse. A wrong declaration in any
rule shows up here as a book that differs from the reference.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.protocol import bundled_protocol_path, load_protocol
from domain.rules import DeviationBook, Entry, ProtocolVersion, Tracked
from domain.rules.book import Key, judge
from ledger.envelope import Envelope
from tests.builders import DAY0
from tests.fuzzing import scaled, tried

PROTOCOL = load_protocol(bundled_protocol_path())
GENESIS = ProtocolVersion(1, datetime(2010, 1, 1, tzinfo=UTC), PROTOCOL, PROTOCOL.icf_version, "genesis", "admin")


@dataclass
class ReferenceBook:
    """The old O(n²) book, kept as the definition: every rule over the whole record after every step."""

    participant: str
    versions: list[ProtocolVersion]
    entries: list[Entry] = field(default_factory=list)
    tracked: list[Tracked] = field(default_factory=list)
    open: dict[Key, Tracked] = field(default_factory=dict)

    def observe(self, entry: Entry) -> None:
        self.entries.append(entry)
        env = entry.envelope
        self._judge(entry.position, env.event_id, env.author, env.reason)

    def amend(self, version: ProtocolVersion) -> None:
        if self.entries:
            self._judge(version.position, version.event_id, version.author, version.reason)

    def _judge(self, position: int, event_id: str, who: str, why: str | None) -> None:
        found = judge(self.participant, self.entries, [v for v in self.versions if v.position <= position])
        now: dict[Key, Any] = {}
        for d in found:
            now.setdefault((d.kind, d.event_ids), d)
        for key, d in now.items():
            if key not in self.open:
                t = Tracked(d.participant, d.kind, d.important, d.event_ids, d.first_position, d.message,
                            raised_at_position=position, raised_by=event_id)
                self.tracked.append(t)
                self.open[key] = t
        for key in [k for k in self.open if k not in now]:
            t = self.open.pop(key)
            t.status, t.resolved_at_position, t.resolved_by = "resolved", position, event_id
            t.resolved_who, t.resolved_why = who, why


def amended_protocol(n: int, widen: int, icf: str) -> Any:
    doc = PROTOCOL.document()
    doc["version"] = f"1.{n}"
    doc["icf_version"] = icf
    for dose in doc["doses"]:
        dose["minus"] += widen
        dose["plus"] += widen
    doc["late_entry_hours"] = 72 + 24 * widen
    return type(PROTOCOL).model_validate(doc)


ANALYTES = st.sampled_from(["FBG", "HBA1C", "BMI", "ITT", "PREGNANCY", "CPEP"])
VALUES = st.one_of(st.floats(0, 40).map(lambda v: round(v, 1)), st.sampled_from(["resistant", "negative", "x"]))
AE = st.fixed_dictionaries({
    "ae_id": st.sampled_from(["AE1", "AE2"]), "serious": st.booleans(), "grade": st.integers(1, 5),
    "relatedness": st.sampled_from(["unrelated", "possible", "definite"]), "expected": st.booleans()},
    optional={"awareness_at": st.integers(-5, 40).map(lambda d: (DAY0 + timedelta(days=d)).isoformat())})
DATA: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "ParticipantRegistered": st.fixed_dictionaries(
        {"site": st.just("S01"), "sex": st.sampled_from(["F", "M"]), "birth_year": st.integers(1940, 2010)},
        optional={"birth_date": st.sampled_from(["1960-05-01", "2005-12-31", "bad"])}),
    "ConsentSigned": st.fixed_dictionaries({"icf_version": st.sampled_from(["1.0", "2.0", "3.0"])}),
    "ConsentWithdrawn": st.fixed_dictionaries({"scope": st.sampled_from(["all", "dosing"])}),
    "ScreeningAssessed": st.fixed_dictionaries({"criterion": st.sampled_from(["I1", "I2", "I3", "I4", "I8", "E1"]),
                                                "met": st.booleans()}, optional={"value": VALUES}),
    "LabResultRecorded": st.fixed_dictionaries({"analyte": ANALYTES, "value": VALUES}),
    "EligibilityConfirmed": st.just({}),
    "Enrolled": st.just({}),
    "ScreenFailed": st.just({}),
    "InfusionAdministered": st.fixed_dictionaries({
        "dose_number": st.integers(1, 4), "identity_checked": st.booleans(),
        "route": st.sampled_from(["intra-arterial-pancreatic", "intravenous"])}),
    "VisitCompleted": st.fixed_dictionaries({"visit": st.sampled_from(["D30", "D90", "D180", "D999"])}),
    "AdverseEventReported": AE,
    "AdverseEventUpdated": AE,
    "SafetyReportSubmitted": st.fixed_dictionaries({"ae_id": st.sampled_from(["AE1", "AE2"])}),
    "ProtocolDeviationRecorded": st.fixed_dictionaries({"important": st.booleans(), "category": st.just("other"),
                                                        "description": st.just("noted")}),
    "ParticipantWithdrawn": st.just({}),
    "ParticipantCompleted": st.just({}),
    "RecordReviewed": st.just({}),
    "SourceVerified": st.just({}),
}
# Mostly the events a long participant history is made of, so the incremental path is what gets exercised.
COMMON = ["LabResultRecorded"] * 6 + ["VisitCompleted", "ScreeningAssessed", "RecordReviewed"] * 2


@st.composite
def steps(draw: st.DrawFn) -> tuple[list[ProtocolVersion], list[Entry | ProtocolVersion]]:
    versions = [GENESIS]
    out: list[Entry | ProtocolVersion] = []
    ids: list[str] = []
    position = 100
    for _ in range(draw(st.integers(1, 45))):
        position += draw(st.integers(1, 3))
        kind = draw(st.sampled_from(["common"] * 6 + ["any"] * 4 + ["edit", "amend", "badtime"]))
        if kind == "amend":
            n = len(versions)
            icf = draw(st.sampled_from(["1.0", "2.0", "3.0"]))
            protocol = PROTOCOL if draw(st.booleans()) else amended_protocol(n, draw(st.integers(0, 3)), icf)
            version = ProtocolVersion(position, DAY0 + timedelta(days=draw(st.integers(-20, 40))), protocol, icf,
                                      f"amend-{n}", "admin", "amendment", reconsent_required=draw(st.booleans()))
            versions.append(version)
            out.append(version)
            continue
        if kind == "edit":
            target = draw(st.sampled_from(ids)) if ids and draw(st.integers(0, 5)) else str(uuid.uuid4())
            if draw(st.booleans()):
                type_name, data = "EntryVoided", {"target_event_id": target}
            else:
                changes = draw(st.one_of(DATA["LabResultRecorded"], DATA["InfusionAdministered"],
                                         DATA["ScreeningAssessed"], DATA["ParticipantRegistered"]))
                type_name, data = "EntryCorrected", {"target_event_id": target, "changes": changes}
        else:
            type_name = draw(st.sampled_from(COMMON if kind == "common" else sorted(DATA)))
            data = draw(DATA[type_name])
        day = draw(st.integers(-20, 60))
        occurred = DAY0 + timedelta(days=day, hours=draw(st.integers(0, 23)))
        recorded = occurred + timedelta(hours=draw(st.sampled_from([0, 1, 80, 24 * 20])))
        event_id = str(uuid.uuid4())  # unique, as the events table's unique index keeps them
        occurred_text = "not a time" if kind == "badtime" and draw(st.booleans()) else occurred.isoformat()
        env = Envelope(event_id=event_id, type=type_name, stream="S01-001", position=len(ids) + 1,
                       occurred_at=occurred_text, recorded_at=recorded.astimezone(UTC).isoformat(),
                       author=draw(st.sampled_from(["inv1", "lab1"])), key_id="k", meaning="authorship",
                       reason=draw(st.sampled_from([None, "why"])), data=data)
        ids.append(event_id)
        out.append(Entry(env, position))
    return versions, out


def replay(book: DeviationBook | ReferenceBook, script: list[Entry | ProtocolVersion]) -> list[dict[str, Any]]:
    for step in script:
        if isinstance(step, ProtocolVersion):
            book.amend(step)
        else:
            book.observe(step)
    return [t.as_dict() for t in book.tracked]


@settings(max_examples=scaled(150, 2000), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(steps())
def test_incremental_book_equals_judging_every_prefix(generated: tuple[list[ProtocolVersion],
                                                                       list[Entry | ProtocolVersion]]) -> None:
    versions, script = generated
    tried("incremental deviation book histories")
    expected = replay(ReferenceBook("S01-001", versions), script)
    assert replay(DeviationBook("S01-001", versions), script) == expected


def test_a_long_participant_is_judged_in_linear_time() -> None:
    """10,000 lab results after consent and dosing: the rules that read labs run once per lab, not once per lab
    per earlier lab. Counted, not timed: the rule that judges the whole record must not run per event."""
    import domain.rules.consent as consent

    calls = 0
    original = consent.PROCEDURE_BEFORE_CONSENT.judge

    def counting(h: Any) -> Any:
        nonlocal calls
        calls += 1
        return original(h)

    book = DeviationBook("S01-001", [GENESIS])
    object.__setattr__(consent.PROCEDURE_BEFORE_CONSENT, "judge", counting)
    try:
        for n in range(10_000):
            occurred = DAY0 + timedelta(days=n // 100, minutes=n)
            book.observe(Entry(Envelope(
                event_id=str(uuid.uuid4()), type="LabResultRecorded", stream="S01-001", position=n + 1,
                occurred_at=occurred.isoformat(), recorded_at=occurred.astimezone(UTC).isoformat(), author="lab1",
                key_id="k", meaning="authorship", data={"analyte": "FBG", "value": 8.0}), n + 10))
    finally:
        object.__setattr__(consent.PROCEDURE_BEFORE_CONSENT, "judge", original)
    assert calls == 1  # the first event is judged afresh; every later lab only adds its own finding
    assert len(book.tracked) == 10_000  # every lab before any consent is flagged, once


def _entry(position: int, type_name: str, data: dict[str, Any], day: int, event_id: str | None = None) -> Entry:
    occurred = DAY0 + timedelta(days=day)
    return Entry(Envelope(event_id=event_id or str(uuid.uuid4()), type=type_name, stream="S01-001",
                          position=position - 100, occurred_at=occurred.isoformat(),
                          recorded_at=(occurred + timedelta(hours=1)).astimezone(UTC).isoformat(), author="inv1",
                          key_id="k", meaning="authorship", data=data), position)


def test_an_edit_whose_target_a_correction_changes_is_judged_when_that_target_arrives() -> None:
    """Found by review: rules read an edit's corrected data, so a void corrected to name an entry not yet in the
    log must make that entry's arrival a fresh judgement (it raises dosing_record_edited from scratch)."""
    script: list[Entry | ProtocolVersion] = [
        _entry(101, "ConsentSigned", {"icf_version": "1.0"}, -5),
        _entry(102, "EntryVoided", {"target_event_id": "nothing-yet"}, -4, "E2"),
        _entry(103, "EntryCorrected", {"target_event_id": "E2", "changes": {"target_event_id": "X"}}, -4),
        _entry(104, "InfusionAdministered", {"dose_number": 1, "identity_checked": True,
                                             "route": "intra-arterial-pancreatic"}, 0, "X"),
    ]
    expected = replay(ReferenceBook("S01-001", [GENESIS]), script)
    assert "dosing_record_edited" in {t["kind"] for t in expected}
    assert replay(DeviationBook("S01-001", [GENESIS]), script) == expected
