"""Input that must never reach storage or crash (issue 16): ids matched whole, one spelling per event id,
and every input error a one-line exit 3 or 2, never 4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domain.service import Trial
from tests.conftest import Cli, Keys, register

VISIT = '{"visit": "D30"}'
EVENT_ID = "6f1c3f1e-8d0b-4f3c-9a39-2b1f0f6a1c11"


def one_line_refusal(result, code: int = 3) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "internal error" not in lines[0], result.stderr


def test_a_participant_id_with_a_trailing_newline_is_refused(trial: Trial, keys: Keys, run: Cli) -> None:
    before = trial.store.count()
    r = run("append", "ParticipantRegistered", "--participant", "S01-009\n",
            "--data", '{"site": "S01", "sex": "F", "birth_year": 1960}', "--key", str(keys.path("inv1")))
    one_line_refusal(r)
    assert "participant" in r.stderr and trial.store.count() == before


def test_a_user_id_with_a_trailing_newline_is_refused(trial: Trial, keys: Keys, run: Cli) -> None:
    before = trial.store.count()
    r = run("signer", "add", "--user-id", "inv2\n", "--name", "X", "--role", "investigator",
            "--public-key", str(keys.path("outsider")) + ".pub", "--key", str(keys.path("admin")))
    one_line_refusal(r)
    assert "user_id" in r.stderr and trial.store.count() == before


@pytest.mark.parametrize("spelling", [
    f"urn:uuid:{EVENT_ID}", EVENT_ID.replace("-", ""), EVENT_ID.upper(), "{" + EVENT_ID + "}",
    f"URN:UUID:{EVENT_ID.upper().replace('-', '')}",
])
def test_one_event_id_in_any_spelling_is_one_event(trial: Trial, keys: Keys, run: Cli, spelling: str) -> None:
    register(trial, keys, "S01-001")
    first = run("append", "VisitCompleted", "--participant", "S01-001", "--data", VISIT,
                "--event-id", spelling, "--key", str(keys.path("inv1")))
    assert first.exit_code == 0, first.output
    assert trial.store.record_by_event_id(EVENT_ID) is not None  # stored in its one spelling
    before = trial.store.count()
    for again in (EVENT_ID, f"urn:uuid:{EVENT_ID}", EVENT_ID.replace("-", ""), EVENT_ID.upper()):
        r = run("append", "VisitCompleted", "--participant", "S01-001", "--data", VISIT,
                "--event-id", again, "--key", str(keys.path("inv1")))
        one_line_refusal(r)
        assert "already in the ledger" in r.stderr
    assert trial.store.count() == before


@pytest.mark.parametrize("bad", [f"{EVENT_ID}\n", f" {EVENT_ID}", EVENT_ID[:-1], f"{EVENT_ID}0", "x" * 36,
                                 "1234_678-1234-1234-1234-123456789012"])
def test_malformed_event_ids_are_refused(trial: Trial, keys: Keys, run: Cli, bad: str) -> None:
    register(trial, keys, "S01-001")
    r = run("append", "VisitCompleted", "--participant", "S01-001", "--data", VISIT, "--event-id", bad,
            "--key", str(keys.path("inv1")))
    one_line_refusal(r)
    assert "event_id" in r.stderr


def test_an_import_with_one_event_id_in_two_spellings_is_refused(trial: Trial, keys: Keys, run: Cli,
                                                                 tmp_path: Path) -> None:
    register(trial, keys, "S01-001")
    before = trial.store.count()
    lines = [{"type": "VisitCompleted", "participant": "S01-001", "data": {"visit": "D30"}, "event_id": spelling}
             for spelling in (EVENT_ID, f"urn:uuid:{EVENT_ID.upper()}")]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    r = run("import", str(path), "--key", str(keys.path("inv1")))
    one_line_refusal(r)
    assert "line 2" in r.stderr and "twice" in r.stderr and trial.store.count() == before


@pytest.mark.parametrize("data", [
    "{\"a\":" * 5000 + "1" + "}" * 5000,                                     # json's RecursionError
    '{"site": "S01", "sex": "F", "birth_year": ' + "9" * 5000 + "}",       # beyond Python's digit limit
    '{"site": "S01", "sex": "F", "birth_year": NaN}',
    '{"site": "S01", "sex": "F", "birth_year": -Infinity}',
])
def test_bad_data_files_exit_3_not_4(trial: Trial, keys: Keys, run: Cli, tmp_path: Path, data: str) -> None:
    path = tmp_path / "data.json"
    path.write_text(data)
    before = trial.store.count()
    r = run("append", "ParticipantRegistered", "--participant", "S01-001", "--data", f"@{path}",
            "--key", str(keys.path("inv1")))
    one_line_refusal(r)
    assert "--data" in r.stderr and trial.store.count() == before


def test_deep_nesting_that_json_accepts_is_refused_before_validation(trial: Trial, keys: Keys, run: Cli,
                                                                    tmp_path: Path) -> None:
    """900 levels parse, but pydantic's serializer and the RFC 8785 encoder would crash on them."""
    protocol = "{\"a\":" * 900 + "1" + "}" * 900
    path = tmp_path / "data.json"
    path.write_text('{"protocol_version": "2", "protocol_sha256": "' + "0" * 64
                    + '", "icf_version": "2", "protocol": ' + protocol + "}")
    r = run("append", "ProtocolAmended", "--data", f"@{path}", "--reason", "x", "--key", str(keys.path("admin")))
    one_line_refusal(r)
    assert "nested" in r.stderr


@pytest.mark.parametrize("line", [
    ('{"type": "LabResultRecorded", "participant": "S01-001", "data": {"analyte": "FBG", "value": NaN, '
     '"unit": "mmol/L"}}'),
    '{"type": "LabResultRecorded", "participant": "S01-001", "data": {"analyte": "FBG", "value": '
    + "1" * 5000 + ', "unit": "mmol/L"}}',
    '{"type": "ProtocolAmended", "data": ' + "{\"a\":" * 900 + "1" + "}" * 900 + "}",
])
def test_bad_import_lines_exit_3_not_4(trial: Trial, keys: Keys, run: Cli, tmp_path: Path, line: str) -> None:
    register(trial, keys, "S01-001")
    path = tmp_path / "in.jsonl"
    path.write_text(line + "\n")
    before = trial.store.count()
    r = run("import", str(path), "--key", str(keys.path("lab1")))
    one_line_refusal(r)
    assert "line 1" in r.stderr and trial.store.count() == before
