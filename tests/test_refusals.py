"""SPEC §4 "Refused": each refusal end to end through the CLI — exit 3, one line, nothing written."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from domain.service import Command, Trial
from tests.conftest import Cli, Keys, event_count, register

LAB = '{"analyte": "FBG", "value": 8.2, "unit": "mmol/L"}'


def refused(run: Cli, *args: str, needle: str) -> None:
    before = event_count(run.db)
    r = run(*args)
    assert r.exit_code == 3, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.output
    assert event_count(run.db) == before


@pytest.fixture
def ready(trial: Trial, keys: Keys, run: Cli) -> tuple[Trial, Keys, Cli]:
    register(trial, keys, "S01-001", sex="F")
    return trial, keys, run


def key(keys: Keys, user: str) -> tuple[str, str]:
    return ("--key", str(keys.path(user)))


def test_unknown_signer(ready: tuple[Trial, Keys, Cli]) -> None:
    _, keys, run = ready
    refused(run, "append", "LabResultRecorded", "--participant", "S01-001", "--data", LAB, *key(keys, "outsider"),
            needle="not registered")


def test_revoked_signer(ready: tuple[Trial, Keys, Cli]) -> None:
    trial, keys, run = ready
    trial.append(Command("SignerRevoked", None, {"user_id": "lab1"}, reason="left"), keys.signers["admin"])
    refused(run, "append", "LabResultRecorded", "--participant", "S01-001", "--data", LAB, *key(keys, "lab1"),
            needle="revoked")


def test_key_outside_its_validity(ready: tuple[Trial, Keys, Cli]) -> None:
    trial, keys, run = ready
    trial.append(Command("SignerRevoked", None, {"user_id": "lab1"}, reason="new key"), keys.signers["admin"])
    trial.append(Command("SignerRegistered", None, {
        "user_id": "lab1", "name": "Lab One", "role": "lab", "public_key": keys.signers["outsider"].public_b64,
        "valid_from": "2099-01-01T00:00:00+00:00"}), keys.signers["admin"])
    refused(run, "append", "LabResultRecorded", "--participant", "S01-001", "--data", LAB, *key(keys, "outsider"),
            needle="not valid before")


def test_a_revoked_key_is_never_registered_again(ready: tuple[Trial, Keys, Cli]) -> None:
    trial, keys, run = ready
    trial.append(Command("SignerRevoked", None, {"user_id": "lab1"}, reason="left"), keys.signers["admin"])
    refused(run, "signer", "add", "--user-id", "lab2", "--name", "Lab Two", "--role", "lab",
            "--public-key", f"{keys.path('lab1')}.pub", *key(keys, "admin"), needle="already registered to lab1")


def test_role_not_allowed_for_type(ready: tuple[Trial, Keys, Cli]) -> None:
    _, keys, run = ready
    refused(run, "append", "InfusionAdministered", "--participant", "S01-001", "--data", json.dumps({
        "dose_number": 1, "route": "intra-arterial-pancreatic", "lot": "L1", "cell_source": "bone marrow",
        "cell_count": 1e6, "viability_pct": 95, "identity_checked": True}), *key(keys, "coord1"),
        needle="role coordinator")


@pytest.mark.parametrize(("data", "needle"), [
    ('{"analyte": "FBG", "value": 8.2}', "data.unit"),
    ('{"analyte": "FBG", "value": 8.2, "unit": "mmol/L", "comment": "x"}', "data.comment"),
    ('{"analyte": "GLUCOSE", "value": 8.2, "unit": "mmol/L"}', "data.analyte"),
    ('{"analyte": "PREGNANCY", "value": "maybe", "unit": ""}', "data.value"),
])
def test_payload_fails_schema(ready: tuple[Trial, Keys, Cli], data: str, needle: str) -> None:
    _, keys, run = ready
    refused(run, "append", "LabResultRecorded", "--participant", "S01-001", "--data", data, *key(keys, "lab1"),
            needle=needle)


def test_ae_grade_and_viability_ranges(ready: tuple[Trial, Keys, Cli]) -> None:
    _, keys, run = ready
    refused(run, "append", "AdverseEventReported", "--participant", "S01-001", "--data", json.dumps({
        "ae_id": "AE1", "term": "fever", "grade": 6, "serious": False, "relatedness": "possible",
        "expected": False, "awareness_at": "2010-09-03T08:00:00+08:00"}), *key(keys, "inv1"), needle="data.grade")
    refused(run, "append", "InfusionAdministered", "--participant", "S01-001", "--data", json.dumps({
        "dose_number": 1, "route": "intravenous", "lot": "L1", "identity_checked": True,
        "product": {"cell_source": "bm", "cell_count": 1e6, "viability_pct": 101}}), *key(keys, "inv1"),
     needle="data.product.viability_pct: must be at most 100")


def test_unknown_participant(ready: tuple[Trial, Keys, Cli]) -> None:
    _, keys, run = ready
    refused(run, "append", "LabResultRecorded", "--participant", "S01-999", "--data", LAB, *key(keys, "lab1"),
            needle="S01-999 is not registered")


def test_unknown_or_voided_target(ready: tuple[Trial, Keys, Cli]) -> None:
    trial, keys, run = ready
    refused(run, "append", "EntryVoided", "--participant", "S01-001", "--reason", "typo",
            "--data", json.dumps({"target_event_id": str(uuid.uuid4())}), *key(keys, "inv1"), needle="no event")
    lab = trial.append(Command("LabResultRecorded", "S01-001", json.loads(LAB)), keys.signers["lab1"])
    trial.append(Command("EntryVoided", "S01-001", {"target_event_id": lab.event_id}, reason="wrong patient"),
                 keys.signers["lab1"])
    refused(run, "append", "EntryCorrected", "--participant", "S01-001", "--reason", "typo",
            "--data", json.dumps({"target_event_id": lab.event_id, "changes": {"value": 8.3}}),
            *key(keys, "inv1"), needle="already voided")


def test_correction_field_must_exist_and_be_valid(ready: tuple[Trial, Keys, Cli]) -> None:
    trial, keys, run = ready
    lab = trial.append(Command("LabResultRecorded", "S01-001", json.loads(LAB)), keys.signers["lab1"])
    refused(run, "append", "EntryCorrected", "--participant", "S01-001", "--reason", "typo",
            "--data", json.dumps({"target_event_id": lab.event_id, "changes": {"colour": 1}}),
            *key(keys, "lab1"), needle="data.changes.colour")


def test_lab_may_correct_only_its_own_entries(ready: tuple[Trial, Keys, Cli]) -> None:
    trial, keys, run = ready
    lab = trial.append(Command("LabResultRecorded", "S01-001", json.loads(LAB)), keys.signers["inv1"])
    refused(run, "append", "EntryCorrected", "--participant", "S01-001", "--reason", "typo",
            "--data", json.dumps({"target_event_id": lab.event_id, "changes": {"value": 8.3}}),
            *key(keys, "lab1"), needle="its own entries")


@pytest.mark.parametrize(("type_name", "data"), [
    ("EntryCorrected", None), ("EntryVoided", None),
    ("ConsentWithdrawn", {"scope": "all"}), ("ParticipantWithdrawn", {}),
])
def test_reason_required(ready: tuple[Trial, Keys, Cli], type_name: str, data: dict | None) -> None:
    trial, keys, run = ready
    if data is None:
        lab = trial.append(Command("LabResultRecorded", "S01-001", json.loads(LAB)), keys.signers["inv1"])
        data = {"target_event_id": lab.event_id}
        if type_name == "EntryCorrected":
            data["changes"] = {"value": 9.0}
    refused(run, "append", type_name, "--participant", "S01-001", "--data", json.dumps(data), *key(keys, "inv1"),
            needle="requires a reason")


def test_signer_revoked_needs_reason(ready: tuple[Trial, Keys, Cli]) -> None:
    _, keys, run = ready
    refused(run, "append", "SignerRevoked", "--data", '{"user_id": "lab1"}', *key(keys, "admin"),
            needle="requires a reason")


def test_duplicate_event_id(ready: tuple[Trial, Keys, Cli]) -> None:
    _, keys, run = ready
    event_id = str(uuid.uuid4())
    first = run("append", "LabResultRecorded", "--participant", "S01-001", "--data", LAB, "--event-id", event_id,
                *key(keys, "lab1"))
    assert first.exit_code == 0, first.output
    refused(run, "append", "LabResultRecorded", "--participant", "S01-001", "--data", LAB, "--event-id", event_id,
            *key(keys, "lab1"), needle="already in the ledger")


def test_registering_a_participant_twice(ready: tuple[Trial, Keys, Cli]) -> None:
    _, keys, run = ready
    refused(run, "append", "ParticipantRegistered", "--participant", "S01-001",
            "--data", '{"site": "S01", "sex": "F", "birth_year": 1960}', *key(keys, "inv1"),
            needle="already registered")


def test_occurred_at_in_the_future(ready: tuple[Trial, Keys, Cli]) -> None:
    _, keys, run = ready
    soon = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()
    later = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    assert run("append", "LabResultRecorded", "--participant", "S01-001", "--data", LAB, "--occurred-at", soon,
               *key(keys, "lab1")).exit_code == 0
    refused(run, "append", "LabResultRecorded", "--participant", "S01-001", "--data", LAB, "--occurred-at", later,
            *key(keys, "lab1"), needle="in the future")


def test_time_without_offset(ready: tuple[Trial, Keys, Cli]) -> None:
    _, keys, run = ready
    refused(run, "append", "LabResultRecorded", "--participant", "S01-001", "--data", LAB,
            "--occurred-at", "2010-09-01T08:00:00", *key(keys, "lab1"), needle="no UTC offset")



def test_ae_downgrade_without_a_reason(ready: tuple[Trial, Keys, Cli]) -> None:
    """REGULATIONS: any downgrade of grade, seriousness or causality carries a reason and a name."""
    trial, keys, run = ready
    run("append", "AdverseEventReported", "--participant", "S01-001", "--data", json.dumps({
        "ae_id": "AE1", "term": "pancreatitis", "grade": 3, "serious": True, "relatedness": "probable",
        "expected": False, "awareness_at": "2010-09-03T08:00:00+08:00"}),
        "--occurred-at", "2010-09-03T07:00:00+08:00", *key(keys, "inv1"))

    def update(data: dict[str, object], *reason: str) -> list[str]:
        return ["append", "AdverseEventUpdated", "--participant", "S01-001", "--data",
                json.dumps({"ae_id": "AE1", **data}), *reason, *key(keys, "inv1")]

    refused(run, *update({"grade": 2}), needle="grade 3 -> 2")
    refused(run, *update({"serious": False}), needle="serious -> not serious")
    refused(run, *update({"relatedness": "unlikely"}), needle="relatedness probable -> unlikely")
    refused(run, *update({"grade": 2}, "--reason", "  "), needle="requires a reason")
    # an upgrade, or a field that is no downgrade, needs no reason
    assert run(*update({"grade": 4, "relatedness": "definite"})).exit_code == 0
    assert run(*update({"term": "acute pancreatitis"})).exit_code == 0
    # the current grade is now 4: 3 is a downgrade from there
    refused(run, *update({"grade": 3}), needle="grade 4 -> 3")
    assert run(*update({"grade": 3}, "--reason", "CT: oedematous, not necrotising")).exit_code == 0
    # a correction of the last update back to grade 4 (it carries its own reason) moves the baseline
    last = list(trial.store.records())[-1]
    assert run("append", "EntryCorrected", "--participant", "S01-001", "--reason", "transcription error",
               "--data", json.dumps({"target_event_id": last.event_id, "changes": {"grade": 4}}),
               *key(keys, "inv1")).exit_code == 0
    refused(run, *update({"grade": 3}), needle="grade 4 -> 3")


@pytest.mark.parametrize(("args", "needle"), [
    (("--reason", "late\udcff"), "reason: text is not valid Unicode"),  # a non-UTF-8 byte on the command line
    (("--data", '{"analyte": "FBG", "value": 8.2, "unit": "mmol/L", "reference_low": 1e400}'),
     "--data: not valid JSON (1e400 is beyond the range of a JSON number)"),
    (("--data", '{"analyte": "FBG", "value": 9007199254740993, "unit": "mmol/L"}'), "--data: not valid JSON"),
    (("--data", '{"analyte": "FBG", "analyte": "HbA1c", "value": 8.2, "unit": "mmol/L"}'),
     "--data: not valid JSON (key 'analyte' appears twice in one object)"),
])
def test_text_and_numbers_that_cannot_be_signed_as_given(ready: tuple[Trial, Keys, Cli], args: tuple[str, ...],
                                                          needle: str) -> None:
    _trial, keys, run = ready
    data = () if "--data" in args else ("--data", LAB)
    refused(run, "append", "LabResultRecorded", "--participant", "S01-001", *data, *args,
            "--key", str(keys.path("lab1")), needle=needle)
