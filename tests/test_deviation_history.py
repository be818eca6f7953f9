"""Issue 17, as a GCP inspector tried it: build a small hostile history, then try to make it look clean.

Every scenario runs end to end through the CLI: refused (exit 3, one line, nothing written), flagged, or kept
as a resolved deviation with the event, who and why (SPEC §4, "Deviations are facts with a history").
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.protocol import bundled_protocol_path
from tests.conftest import Cli, Keys, initialise
from tests.test_refusals import refused

START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=60)  # within the 72 h late-entry limit
DOSE = {"dose_number": 1, "route": "intra-arterial-pancreatic", "lot": "L1", "cell_source": "autologous bone marrow",
        "cell_count": 1e6, "viability_pct": 95, "identity_checked": True}
P = "S01-001"


def at(hours: float) -> str:
    return (START + timedelta(hours=hours)).isoformat()


class Site:
    """The CLI as each member of the site staff uses it."""

    def __init__(self, db: str, keys: Keys):
        self.run = Cli(db)
        self.keys = keys

    def args(self, user: str, type_name: str, data: dict[str, Any] | None = None, hours: float | None = None,
             reason: str | None = None, meaning: str | None = None, participant: str = P,
             when: datetime | None = None) -> list[str]:
        out = ["append", type_name, "--participant", participant, "--data", json.dumps(data or {}),
               "--key", str(self.keys.path(user))]
        if hours is not None or when is not None:
            out += ["--occurred-at", when.isoformat() if when is not None else at(hours or 0)]
        if reason is not None:
            out += ["--reason", reason]
        if meaning is not None:
            out += ["--meaning", meaning]
        return out

    def add(self, user: str, type_name: str, data: dict[str, Any] | None = None, **kw: Any) -> str:
        r = self.run("--json", *self.args(user, type_name, data, **kw))
        assert r.exit_code == 0, r.output
        return str(json.loads(r.stdout)["event_id"])

    def refused(self, user: str, type_name: str, data: dict[str, Any] | None = None, *, needle: str,
                **kw: Any) -> None:
        refused(self.run, *self.args(user, type_name, data, **kw), needle=needle)

    def deviations(self, *flags: str) -> list[dict[str, Any]]:
        return self.run.json("deviations", *flags)  # type: ignore[return-value]

    def kinds(self, status: str | None = None) -> list[str]:
        return sorted(d["kind"] for d in self.deviations() if status is None or d["status"] == status)

    def show(self, participant: str = P) -> dict[str, Any]:
        return self.run.json("show", participant)  # type: ignore[return-value]

    # -- building blocks --------------------------------------------------------------------------

    def register(self, sex: str = "M", birth_year: int = 1960, participant: str = P, **extra: Any) -> str:
        return self.add("coord1", "ParticipantRegistered", {"site": "S01", "sex": sex, "birth_year": birth_year,
                                                            **extra}, hours=0, participant=participant)

    def lab(self, analyte: str, value: float | str, unit: str, hours: float, user: str = "lab1") -> str:
        return self.add(user, "LabResultRecorded", {"analyte": analyte, "value": value, "unit": unit}, hours=hours)

    def consent(self, hours: float) -> str:
        return self.add("coord1", "ConsentSigned", {"icf_version": "1.0", "obtained_by": "inv1"}, hours=hours)

    def screened(self, hours: float, sex: str = "M", fbg: float = 8.4) -> dict[str, str]:
        """Labs and every criterion assessed, eligibility confirmed and enrolled: a clean start."""
        ids = {"FBG": self.lab("FBG", fbg, "mmol/L", hours), "HBA1C": self.lab("HBA1C", 8.1, "%", hours),
               "BMI": self.lab("BMI", 26.0, "kg/m2", hours), "ITT": self.lab("ITT", "resistant", "", hours)}
        if sex == "F":
            ids["PREGNANCY"] = self.lab("PREGNANCY", "negative", "", hours)
        for c in ("I1", "I2", "I3", "I4", "I5", "I6", "I7", "I8", "I9", "E1", "E2", "E3", "E4"):
            if c == "I8" and sex != "F":
                continue
            ids[c] = self.add("inv1", "ScreeningAssessed", {"criterion": c, "met": c.startswith("I")}, hours=hours + 1)
        ids["eligible"] = self.add("inv1", "EligibilityConfirmed", hours=hours + 2)
        ids["enrolled"] = self.add("coord1", "Enrolled", hours=hours + 3)
        return ids


@pytest.fixture
def site(sqlite_db: str, keys: Keys) -> Site:
    initialise(sqlite_db, keys).store.close()
    return Site(sqlite_db, keys)


def by_kind(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in rows if d["kind"] == kind]


# -- 1. deviations are facts with a history -------------------------------------------------------


def test_backdated_consent_eligibility_and_enrolment_resolve_but_never_erase(site: Site) -> None:
    site.register()
    dose = site.add("pharm1", "InfusionAdministered", DOSE, hours=10)
    raised = site.deviations()
    assert {d["kind"] for d in raised} == {"procedure_before_consent", "dose_not_enrolled_or_ineligible"}
    # six hours after the dose, consent, eligibility and enrolment are typed in with earlier clinical times
    consent = site.add("coord1", "ConsentSigned", {"icf_version": "1.0", "obtained_by": "inv1"}, hours=1)
    site.add("inv1", "EligibilityConfirmed", hours=2)
    site.add("coord1", "Enrolled", hours=3)
    rows = site.deviations()
    before_consent = by_kind(rows, "procedure_before_consent")
    assert len(before_consent) == 1 and before_consent[0]["status"] == "resolved"
    assert before_consent[0]["resolved_by"] == consent and before_consent[0]["resolved_who"] == "coord1"
    assert before_consent[0]["event_ids"] == [dose]
    assert by_kind(rows, "dose_not_enrolled_or_ineligible")[0]["status"] == "resolved"
    # ... and each entry recorded after the procedure it should precede is a deviation itself
    retro = by_kind(rows, "retrospective_entry")
    assert len(retro) == 3 and all(d["important"] and d["status"] == "open" for d in retro)
    assert {(d["kind"], tuple(d["event_ids"])) for d in raised} <= {(d["kind"], tuple(d["event_ids"])) for d in rows}
    still_open = {d["kind"] for d in site.deviations("--open")}
    assert "retrospective_entry" in still_open
    assert not still_open & {"procedure_before_consent", "dose_not_enrolled_or_ineligible"}
    # the text form names the resolution
    text = site.run("deviations").stdout
    assert "resolved at #" in text and "by coord1" in text


def test_replaying_history_gives_the_same_book(site: Site) -> None:
    site.register()
    site.add("pharm1", "InfusionAdministered", DOSE, hours=10)
    site.consent(1)
    incremental = site.deviations()
    assert site.run("rebuild").exit_code == 0
    assert site.deviations() == incremental


def test_an_amendment_does_not_erase_a_deviation_under_the_old_protocol(site: Site, keys: Keys,
                                                                         tmp_path: Path) -> None:
    site.register()
    old = datetime(2010, 9, 20, 9, tzinfo=UTC)
    site.add("pharm1", "InfusionAdministered", DOSE, when=old)
    site.add("pharm1", "InfusionAdministered", {**DOSE, "dose_number": 2, "route": "intravenous"},
             when=old + timedelta(days=9))  # window day 6-8
    flagged = by_kind(site.deviations(), "dose_outside_window")
    assert len(flagged) == 1 and flagged[0]["status"] == "open"
    # a real amendment widens dose 2 to day 7 ±3, today
    text = bundled_protocol_path().read_text().replace('version = "1.0"\n', 'version = "2.0"\n', 1)
    text = text.replace("day = 7\nminus = 1\nplus = 1", "day = 7\nminus = 3\nplus = 3", 1)
    assert "minus = 3\nplus = 3" in text
    amended = tmp_path / "protocol-2.0.toml"
    amended.write_text(text)
    r = site.run("amend", "--protocol", str(amended), "--key", str(keys.path("admin")))
    assert r.exit_code == 0, r.output
    # the 2010 dose is judged under the protocol in force in 2010: still open, the same record
    assert by_kind(site.deviations(), "dose_outside_window") == flagged
    assert site.run("rebuild").exit_code == 0
    assert by_kind(site.deviations(), "dose_outside_window") == flagged


# -- 2. edits that matter raise their own flag ------------------------------------------------------


def test_correcting_fbg_after_eligibility_resolves_the_threshold_but_flags_the_edit(site: Site) -> None:
    site.register()
    site.consent(1)
    ids = site.screened(2, fbg=6.2)
    broken = by_kind(site.deviations(), "eligibility_threshold_broken")
    assert len(broken) == 1 and "FBG = 6.2" in broken[0]["message"]
    # a coordinator may not touch a lab value at all
    site.refused("coord1", "EntryCorrected", {"target_event_id": ids["FBG"], "changes": {"value": 7.2}},
                 reason="x", needle="only lab, investigator may correct a LabResultRecorded")
    # the lab (its author) may, but the edit is flagged and the old deviation stays, resolved
    edit = site.add("lab1", "EntryCorrected", {"target_event_id": ids["FBG"], "changes": {"value": 7.2}}, reason="x")
    rows = site.deviations()
    resolved = by_kind(rows, "eligibility_threshold_broken")
    assert len(resolved) == 1 and resolved[0]["status"] == "resolved"
    assert (resolved[0]["resolved_by"], resolved[0]["resolved_who"], resolved[0]["resolved_why"]) == (edit, "lab1", "x")
    edited = by_kind(rows, "eligibility_input_edited")
    assert len(edited) == 1 and edited[0]["important"] and edit in edited[0]["message"]


def test_any_edit_of_an_infusion_is_flagged_even_when_the_new_value_passes(site: Site) -> None:
    site.register()
    site.consent(1)
    site.screened(2)
    dose = site.add("pharm1", "InfusionAdministered", {**DOSE, "identity_checked": False}, hours=24)
    assert "identity_not_checked" in site.kinds("open")
    site.add("pharm1", "EntryCorrected", {"target_event_id": dose, "changes": {"identity_checked": True}},
             reason="check done at the bedside, recorded late")
    assert "identity_not_checked" in site.kinds("resolved")
    assert "dosing_record_edited" in site.kinds("open")


# -- 3. who may correct what ---------------------------------------------------------------------------


def test_a_coordinator_may_not_edit_the_investigators_or_the_pharmacys_entries(site: Site) -> None:
    site.register()
    site.consent(1)
    i5 = site.add("inv1", "ScreeningAssessed", {"criterion": "I5", "met": False}, hours=2)
    failed = site.add("inv1", "ScreenFailed", {"failed_criteria": ["I5"]}, hours=3)
    site.refused("coord1", "EntryCorrected", {"target_event_id": i5, "changes": {"met": True}}, reason="typo",
                 needle="may not correct an entry of inv1 (investigator)")
    site.refused("coord1", "EntryVoided", {"target_event_id": failed}, reason="typo",
                 needle="may not void an entry of inv1 (investigator)")
    dose = site.add("pharm1", "InfusionAdministered", {**DOSE, "identity_checked": False}, hours=24)
    site.refused("coord1", "EntryCorrected", {"target_event_id": dose, "changes": {
        "identity_checked": True, "route": "intravenous", "lot": "L9"}}, reason="tidy", needle="only pharmacy, investigator")
    # the investigator supervises the pharmacy, and may edit its infusion
    site.add("inv1", "EntryCorrected", {"target_event_id": dose, "changes": {"lot": "L2"}}, reason="label misread")


def test_meanings_come_from_the_protocol(site: Site) -> None:
    site.register()
    site.refused("coord1", "RecordReviewed", {"scope": "casebook"}, meaning="approval", needle="meaning")
    site.refused("lab1", "LabResultRecorded", {"analyte": "FBG", "value": 8.0, "unit": "mmol/L"}, hours=2,
                 meaning="approval", needle="role lab may not sign with meaning 'approval'")
    site.refused("inv1", "RecordReviewed", {"scope": "casebook"}, meaning="review", needle="meaning")
    site.add("mon1", "RecordReviewed", {"scope": "casebook"})
    site.add("inv1", "RecordReviewed", {"scope": "casebook"}, meaning="approval")
    # a coordinator's review note takes authorship by default (review is the monitor's)
    site.add("coord1", "RecordReviewed", {"scope": "casebook"})


# -- 4. a correction is checked like a new entry ----------------------------------------------------------


@pytest.mark.parametrize(("changes", "needle"), [
    ({"value": 999}, "plausible range"), ({"unit": "mg/dL"}, "data.changes.unit"),
    ({"value": "banana"}, "data.changes.value"), ({"analyte": "HBA1C"}, "data.changes.analyte"),
])
def test_a_correction_must_pass_the_checks_a_new_entry_passes(site: Site, changes: dict, needle: str) -> None:
    site.register()
    lab = site.lab("FBG", 8.0, "mmol/L", 2)
    site.refused("lab1", "EntryCorrected", {"target_event_id": lab, "changes": changes}, reason="fix", needle=needle)


def test_sex_and_birth_year_are_correctable_and_rerun_the_rules(site: Site) -> None:
    registered = site.register(sex="M")
    site.consent(1)
    site.screened(2)
    assert site.kinds() == []
    site.refused("coord1", "EntryCorrected", {"target_event_id": registered, "changes": {"birth_year": 1930}},
                 needle="requires a reason")
    site.add("coord1", "EntryCorrected", {"target_event_id": registered, "changes": {"sex": "F", "birth_year": 1930}},
             reason="registration form misread")
    kinds = site.kinds("open")
    assert "eligibility_threshold_broken" in kinds  # I3: age 80 or 81
    assert "eligibility_input_edited" in kinds
    assert "eligibility_lab_missing" in kinds  # I8 now applies: no pregnancy test
    shown = site.show()
    assert (shown["sex"], shown["birth_year"]) == ("F", 1930)
    site.refused("coord1", "EntryVoided", {"target_event_id": registered}, reason="x", needle="cannot be voided")


# -- 5. voids and terminal states ----------------------------------------------------------------------


def test_a_void_undoes_consent_and_screen_failure(site: Site) -> None:
    site.register()
    consent = site.consent(1)
    assert site.show()["consent"]["status"] == "signed"
    site.add("coord1", "EntryVoided", {"target_event_id": consent}, reason="wrong participant")
    shown = site.show()
    assert shown["consent"]["status"] == "none" and shown["status"] == "registered"
    site.consent(2)
    failed = site.add("inv1", "ScreenFailed", {"failed_criteria": ["I5"]}, hours=3)
    assert site.show()["status"] == "screen_failed"
    site.add("inv1", "EntryVoided", {"target_event_id": failed}, reason="HbA1c re-run 7.4 %")
    assert site.show()["status"] == "consented"


def test_withdrawal_is_terminal(site: Site) -> None:
    site.register()
    site.consent(1)
    site.screened(2)
    site.add("pharm1", "InfusionAdministered", DOSE, hours=24)
    site.add("inv1", "ParticipantWithdrawn", hours=30, reason="moved away")
    site.refused("lab1", "LabResultRecorded", {"analyte": "FBG", "value": 8.0, "unit": "mmol/L"}, hours=31,
                 needle="needs a --reason")
    site.refused("pharm1", "InfusionAdministered", {**DOSE, "dose_number": 2, "route": "intravenous"}, hours=32,
                 needle="needs a --reason")
    site.refused("inv1", "ParticipantCompleted", hours=33, needle="already withdrawn")
    site.refused("inv1", "ParticipantWithdrawn", hours=33, reason="again", needle="already withdrawn")
    # with a reason the ledger records reality, flags it, and the status stays terminal
    site.add("lab1", "LabResultRecorded", {"analyte": "FBG", "value": 8.0, "unit": "mmol/L"}, hours=31,
             reason="sample drawn at the withdrawal visit")
    site.add("inv1", "AdverseEventReported", {"ae_id": "AE1", "term": "fever", "grade": 1, "serious": False,
                                              "relatedness": "unlikely", "expected": True,
                                              "awareness_at": at(34)}, hours=34)  # safety follow-up is free
    after = by_kind(site.deviations(), "procedure_after_terminal")
    assert len(after) == 1 and after[0]["important"] and "LabResultRecorded" in after[0]["message"]
    assert site.show()["status"] == "withdrawn"


# -- 6. eligibility is complete or flagged ----------------------------------------------------------------


def test_eligibility_with_no_assessments_or_labs_is_flagged(site: Site) -> None:
    site.register()
    site.consent(1)
    site.add("inv1", "ScreeningAssessed", {"criterion": "I4", "met": True, "value": 35}, hours=2)
    site.add("inv1", "ScreeningAssessed", {"criterion": "I5", "met": True}, hours=2)
    site.add("inv1", "EligibilityConfirmed", hours=3)
    rows = site.deviations()
    incomplete = by_kind(rows, "eligibility_incomplete")
    assert len(incomplete) == 1 and "I1" in incomplete[0]["message"] and "I4" not in incomplete[0]["message"]
    missing = by_kind(rows, "eligibility_lab_missing")[0]["message"]
    assert "I4 (BMI)" in missing and "I5 (FBG)" in missing and "I5 (HBA1C)" in missing


def test_an_assessment_contradicting_its_lab_is_flagged(site: Site) -> None:
    site.register()
    site.consent(1)
    site.lab("BMI", 26.0, "kg/m2", 2)
    site.add("inv1", "ScreeningAssessed", {"criterion": "I4", "met": True, "value": 35}, hours=2)
    site.add("inv1", "EligibilityConfirmed", hours=3)
    assert "I4 recorded 35" in by_kind(site.deviations(), "eligibility_contradicts_lab")[0]["message"]


@pytest.mark.parametrize("born_years_ago", [17, 18])
def test_a_birth_year_that_may_make_the_participant_a_minor_is_flagged(site: Site, born_years_ago: int) -> None:
    site.register(birth_year=START.year - born_years_ago)
    site.consent(1)
    site.screened(2)
    found = by_kind(site.deviations(), "age_needs_confirmation") + by_kind(site.deviations(),
                                                                            "eligibility_threshold_broken")
    assert found and "I3" in found[0]["message"]


def test_a_full_birth_date_gives_the_exact_age(site: Site) -> None:
    site.refused("coord1", "ParticipantRegistered", {"site": "S01", "sex": "M", "birth_year": 1990,
                                                     "birth_date": "1991-02-30"}, needle="data.birth_date")
    site.register(birth_year=START.year - 19, birth_date=f"{START.year - 19}-01-01")
    site.consent(1)
    site.screened(2)
    assert site.kinds() == []


# -- 7. safety clocks --------------------------------------------------------------------------------


def test_awareness_must_lie_between_onset_and_recording(site: Site) -> None:
    site.register()
    site.consent(1)
    ae = {"ae_id": "AE1", "term": "pancreatitis", "grade": 3, "serious": True, "relatedness": "probable",
          "expected": False}
    future = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    site.refused("inv1", "AdverseEventReported", {**ae, "awareness_at": future}, hours=5, needle="after the time of recording")
    months_before = (START - timedelta(days=300)).isoformat()
    site.refused("inv1", "AdverseEventReported", {**ae, "awareness_at": months_before}, hours=5, needle="before the onset")


def test_a_susar_carries_a_reporting_clock_and_a_deviation_when_it_runs_out(site: Site) -> None:
    site.register()
    site.consent(1)
    onset = datetime(2010, 9, 1, 9, tzinfo=UTC)
    r = site.run(*site.args("inv1", "AdverseEventReported", {
        "ae_id": "AE1", "term": "pancreatitis", "grade": 4, "serious": True, "relatedness": "possible",
        "expected": False, "awareness_at": (onset + timedelta(hours=2)).isoformat()}),
        "--occurred-at", onset.isoformat())
    assert r.exit_code == 0, r.output
    clock = site.show()["adverse_events"]["AE1"]["susar"]
    assert clock["report_within_days"] == 7 and clock["due"].startswith("2010-09-08") and clock["reported_at"] is None
    # recorded today, years after awareness: the 7-day clock has run out without a report
    overdue = by_kind(site.deviations(), "susar_report_overdue")
    assert len(overdue) == 1 and overdue[0]["important"] and "7 days" in overdue[0]["message"]
    assert "SUSAR: expedited report within 7 days" in site.run("show", P).stdout


def test_a_susar_reported_in_time_raises_nothing(site: Site) -> None:
    site.register()
    site.consent(1)
    site.add("inv1", "AdverseEventReported", {
        "ae_id": "AE1", "term": "pancreatitis", "grade": 3, "serious": True, "relatedness": "probable",
        "expected": False, "awareness_at": at(6)}, hours=5)
    site.refused("coord1", "SafetyReportSubmitted", {"ae_id": "AE1", "recipient": "FDA"}, needle="role coordinator")
    site.add("inv1", "SafetyReportSubmitted", {"ae_id": "AE1", "recipient": "FDA", "reference": "MW-1"}, hours=20)
    assert "susar_report_overdue" not in site.kinds()
    assert site.show()["adverse_events"]["AE1"]["susar"]["reported_at"] == at(20)


def test_grade_5_makes_the_participant_terminal(site: Site) -> None:
    site.register()
    site.consent(1)
    site.screened(2)
    site.add("inv1", "AdverseEventReported", {
        "ae_id": "AE1", "term": "pancreatitis", "grade": 3, "serious": True, "relatedness": "unlikely",
        "expected": True, "awareness_at": at(6)}, hours=5)
    site.add("inv1", "AdverseEventUpdated", {"ae_id": "AE1", "grade": 5}, hours=7)
    shown = site.show()
    assert shown["status"] == "deceased" and shown["outcome"] == "death"
    site.refused("inv1", "ParticipantCompleted", hours=8, needle="already dead")
    site.refused("lab1", "LabResultRecorded", {"analyte": "FBG", "value": 8.0, "unit": "mmol/L"}, hours=8,
                 needle="needs a --reason")



def test_verify_refuses_a_meaning_the_role_may_not_sign(site: Site, keys: Keys) -> None:
    """An insider who signs an 'approval' with a coordinator key outside the CLI is caught by verify (§5.4)."""
    from domain.service import Command, Trial
    from ledger.store import Store

    site.register()
    trial = Trial(Store(site.run.db))
    env = trial.decide([Command("RecordReviewed", P, {"scope": "casebook"})], keys.signers["coord1"])[0]
    trial.store.append([env.model_copy(update={"meaning": "approval"})], keys.signers["coord1"])
    trial.store.close()
    r = site.run("verify")
    assert r.exit_code == 1 and "meaning 'approval'" in r.stderr
