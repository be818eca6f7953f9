"""Legible signed records (21 CFR 11.50, EMA 6.2.1): the audit table and `show` say who signed, when, meaning what."""

from __future__ import annotations

from domain.service import Command, Trial
from tests.conftest import Cli, Keys, register

WHEN = "2010-09-01T09:00:00+08:00"


def test_audit_table_and_show_name_the_signer_time_meaning_and_the_item_corrected(trial: Trial, keys: Keys,
                                                                                  run: Cli) -> None:
    s = keys.signers
    register(trial, keys, "S01-001")
    lab = trial.append(Command("LabResultRecorded", "S01-001", {"analyte": "FBG", "value": 6.2, "unit": "mmol/L"},
                               occurred_at=WHEN), s["lab1"])
    fix = trial.append(Command("EntryCorrected", "S01-001", {"target_event_id": lab.event_id,
                                                             "changes": {"value": 7.2}},
                               occurred_at=WHEN, reason="transposed on entry"), s["lab1"])
    table = run("audit", "--participant", "S01-001")
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if "EntryCorrected" in line)
    assert "FBG value: 6.2 -> 7.2" in row and f"occurred {WHEN}" in row and "transposed on entry" in row
    shown = run("show", "S01-001")
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("lab FBG: 7.2"))
    utc = lab.recorded_at.replace("Z", "+00:00")
    assert lines[at + 1].strip().startswith("signed by Name of lab1 (lab), ")
    assert " UTC / " in lines[at + 1] and "+08:00 local, meaning authorship" in lines[at + 1]
    assert lines[at + 2].strip().startswith("corrected by Name of lab1 (lab)") and "transposed on entry" in lines[at + 2]
    data = run.json("show", "S01-001")
    sig = data["signatures"][lab.event_id]
    assert (sig["name"], sig["role"], sig["meaning"], sig["user_id"]) == ("Name of lab1", "lab", "authorship", "lab1")
    assert sig["recorded_at_utc"].endswith("+00:00") and sig["recorded_at_local"].endswith("+08:00")
    assert sig["recorded_at_utc"][:19] == utc[:19]  # the signing instant, in UTC
    assert [(c["event_id"], c["reason"]) for c in sig["changes"]] == [(fix.event_id, "transposed on entry")]
    before_fix = trial.store.record_by_event_id(fix.event_id).position - 1
    then = run.json("show", "S01-001", "--position", str(before_fix))  # time travel carries signatures too
    assert then["signatures"][lab.event_id]["changes"] == [] and fix.event_id not in then["signatures"]
