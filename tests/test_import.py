"""`import FILE.jsonl`: every line checked first, then all or nothing; errors name the line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domain.service import Trial
from tests.conftest import Cli, Keys, event_count

T = "2010-09-01T09:00:00+08:00"


def write_lines(path: Path, participants: int, labs: int, bad_at: int | None = None) -> int:
    n = 0
    with path.open("w") as f:
        for p in range(participants):
            pid = f"B{p:05d}"
            rows = [{"type": "ParticipantRegistered", "participant": pid,
                     "data": {"site": "S01", "sex": "M", "birth_year": 1960}, "occurred_at": T}]
            rows += [{"type": "LabResultRecorded", "participant": pid,
                      "data": {"analyte": "FBG", "value": 7 + i / 10, "unit": "mmol/L"}, "occurred_at": T}
                     for i in range(labs)]
            for row in rows:
                n += 1
                if n == bad_at:
                    row["data"]["value"] = "seven"
                f.write(json.dumps(row) + "\n")
    return n


def test_import_appends_and_verifies(trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    n = write_lines(path, participants=20, labs=4)
    before = event_count(run.db)
    r = run("import", str(path), "--key", str(keys.path("inv1")))
    assert r.exit_code == 0, r.output
    assert event_count(run.db) == before + n
    assert run("verify").exit_code == 0
    assert len(run.json("participants")) == 20


@pytest.mark.parametrize(("line", "needle"), [
    ('{"type": "LabResultRecorded", "participant": "B00000", "data": {"analyte": "FBG", "value": 1, "unit": "mg"}}',
     "line 3: data.unit"),
    ('{"type": "LabResultRecorded", "participant": "B00000", "data": {}, "colour": "red"}', "line 3: colour"),
    ("{not json", "line 3: not valid JSON"),
    ('["a list"]', "line 3: must be a JSON object"),
    ('{"type": "LabResultRecorded", "participant": "B00000", "data": {"analyte": "FBG", "value": 8, '
     '"unit": "mmol/L"}, "occurred_at": "2010-09-01T09:00:00"}', "line 3: occurred_at"),
    ('{"type": "Nope", "participant": "B00000", "data": {}}', "line 3: type"),
    ('{"type": "LabResultRecorded", "participant": "ZZZ", "data": {"analyte": "FBG", "value": 8, "unit": "mmol/L"}}',
     "line 3: participant"),
    # Text and numbers that cannot be signed as given: each once crashed the import (exit 4) or
    # stored something else (1e400 became null; a repeated key kept its last value).
    ('{"type": "VisitCompleted", "participant": "B00000", "data": {"visit": "D30"}, "reason": "late\\udc00"}',
     "line 3: reason: text is not valid Unicode"),
    ('{"type": "VisitCompleted", "participant": "B00000", "data": {"visit\\ud800": "D30"}}',
     "line 3: data (a key): text is not valid Unicode"),
    ('{"type": "LabResultRecorded", "participant": "B00000", "data": {"analyte": "FBG", "value": 8, '
     '"unit": "mmol/L", "reference_low": -1e400}}', "line 3: not valid JSON (-1e400 is beyond the range"),
    ('{"type": "EntryCorrected", "participant": "B00000", "reason": "r", "data": {"target_event_id": '
     '"00000000-0000-4000-8000-000000000001", "changes": {"reference_low": -9007199254740993}}}',
     "line 3: not valid JSON (-9007199254740993 is beyond"),
    ('{"type": "VisitCompleted", "participant": "B00000", "data": {"visit": "D\\u0000", "visit": "D30"}}',
     "line 3: not valid JSON (key 'visit' appears twice"),
])
def test_a_bad_line_writes_nothing(trial: Trial, keys: Keys, run: Cli, tmp_path: Path, line: str,
                                   needle: str) -> None:
    path = tmp_path / "in.jsonl"
    good = write_lines(tmp_path / "good.jsonl", participants=1, labs=1)
    path.write_text((tmp_path / "good.jsonl").read_text() + line + "\n")
    assert good == 2
    before = event_count(run.db)
    r = run("import", str(path), "--key", str(keys.path("inv1")))
    assert r.exit_code == 3, r.output
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and needle in r.stderr, r.stderr
    assert event_count(run.db) == before


def test_import_into_a_missing_ledger_creates_nothing(keys: Keys, tmp_path: Path) -> None:
    """A refused import leaves no new database behind, whether the key or the ledger is missing."""
    path = tmp_path / "in.jsonl"
    write_lines(path, participants=1, labs=1)
    run = Cli(str(tmp_path / "absent.db"))
    r = run("import", str(path))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "--key" in r.stderr, r.stderr
    r = run("import", str(path), "--key", str(keys.path("inv1")))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "no ledger there" in r.stderr, r.stderr
    assert not (tmp_path / "absent.db").exists()


def test_non_utf8_and_overlong_lines(trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"type": "\xff"}\n')
    assert "line 1: not UTF-8" in run("import", str(path), "--key", str(keys.path("inv1"))).stderr
    path.write_bytes(b'{"type": "' + b"x" * (1 << 20) + b'"}\n')
    r = run("import", str(path), "--key", str(keys.path("inv1")))
    assert r.exit_code == 3 and "line 1: longer than" in r.stderr


def test_duplicate_event_id_inside_the_file(trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> None:
    row = {"type": "ParticipantRegistered", "participant": "X1", "data": {"site": "S", "sex": "F", "birth_year": 1970},
           "event_id": "8c9d6b8e-1f0e-4a4c-9d1e-2f3a4b5c6d7e"}
    row2 = {**row, "participant": "X2"}
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(row2) + "\n")
    before = event_count(run.db)
    r = run("import", str(path), "--key", str(keys.path("inv1")))
    assert r.exit_code == 3 and "line 2: event_id" in r.stderr
    assert event_count(run.db) == before


@pytest.mark.slow
def test_100k_lines_import_and_a_bad_line_at_99999(sqlite_db: str, keys: Keys, tmp_path: Path) -> None:
    from tests.conftest import initialise

    initialise(sqlite_db, keys).store.close()
    run = Cli(sqlite_db)
    bad = tmp_path / "bad.jsonl"
    assert write_lines(bad, participants=10_000, labs=9, bad_at=99_999) == 100_000
    before = event_count(sqlite_db)
    r = run("import", str(bad), "--key", str(keys.path("inv1")))
    assert r.exit_code == 3 and "line 99999: data.value" in r.stderr, r.stderr
    assert event_count(sqlite_db) == before
    good = tmp_path / "good.jsonl"
    assert write_lines(good, participants=10_000, labs=9) == 100_000
    r = run("import", str(good), "--key", str(keys.path("inv1")))
    assert r.exit_code == 0, r.output
    assert event_count(sqlite_db) == before + 100_000
    assert run("verify").exit_code == 0
