"""Data management (SPEC §11, issue 20): queries, SDV, sign-off, lock, and the log of refused attempts.

Every rule through the CLI; every refusal exits 3 with one line, writes nothing to the clinical
ledger and is present in ``security-log`` (21 CFR 11.300(d)).
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.datamanagement import casebook_hash
from domain.service import Command, Trial
from ledger.errors import InputRefused
from ledger.store import Store
from projections.datamanagement import DataManagement
from projections.projector import Projections
from tests.conftest import Cli, Keys, event_count, initialise, register

T0 = "2010-09-02T09:00:00+08:00"
NOW = datetime(2030, 1, 1, tzinfo=UTC)
LAB = '{"analyte": "FBG", "value": 8.2, "unit": "mmol/L"}'


def key(keys: Keys, user: str) -> tuple[str, str]:
    return ("--key", str(keys.path(user)))


def security_log(run: Cli) -> list[dict[str, Any]]:
    return run.json("security-log")  # type: ignore[return-value]


def refused(run: Cli, *args: str, needle: str) -> dict[str, Any]:
    """Exit 3, one line naming the problem, no clinical row, and one new security-log row."""
    before, logged = event_count(run.db), len(security_log(run))
    r = run(*args)
    assert r.exit_code == 3, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert event_count(run.db) == before
    log = security_log(run)
    assert len(log) == logged + 1
    assert log[-1]["reason"] == lines[0].removeprefix("error: ")
    return log[-1]


def ok(run: Cli, *args: str) -> dict[str, Any]:
    r = run("--json", *args) if args[0] != "--json" else run(*args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def append(run: Cli, keys: Keys, user: str, type_name: str, participant: str | None, data: dict[str, Any],
           *extra: str) -> str:
    args = ["append", type_name, "--data", json.dumps(data), *key(keys, user), *extra]
    if participant:
        args += ["--participant", participant]
    return str(ok(run, *args)["event_id"])


@pytest.fixture
def ready(trial: Trial, keys: Keys, run: Cli) -> dict[str, str]:
    """Two participants with one lab each (written by lab1)."""
    ids = {}
    for p in ("S01-001", "S01-002"):
        register(trial, keys, p)
        ids[p] = trial.append(Command("LabResultRecorded", p, {"analyte": "FBG", "value": 8.0, "unit": "mmol/L"},
                                      occurred_at=T0), keys.signers["lab1"]).event_id
    return ids


def correct(run: Cli, keys: Keys, participant: str, target: str, value: float = 9.1) -> str:
    return append(run, keys, "lab1", "EntryCorrected", participant,
                  {"target_event_id": target, "changes": {"value": value}}, "--reason", "transcription")


# -- queries ------------------------------------------------------------------------------------


def test_query_raised_answered_with_a_correction_closed_and_reopened(ready: dict[str, str], keys: Keys,
                                                                     run: Cli) -> None:
    lab = ready["S01-001"]
    append(run, keys, "mon1", "QueryRaised", "S01-001", {"query_id": "Q1", "target_event_id": lab, "text": "check"})
    assert [q["status"] for q in ok(run, "queries", "--status", "open")] == ["open"]
    fix = correct(run, keys, "S01-001", lab)
    append(run, keys, "lab1", "QueryAnswered", "S01-001", {"query_id": "Q1", "text": "fixed",
                                                            "correction_event_id": fix})
    append(run, keys, "mon1", "QueryClosed", "S01-001", {"query_id": "Q1", "reason": "checked"})
    [q] = ok(run, "queries", "--participant", "S01-001")
    assert q["status"] == "closed" and q["age_days"] == 0 and q["target_event_id"] == lab
    assert [t["type"] for t in q["thread"]] == ["QueryRaised", "QueryAnswered", "QueryClosed"]
    assert q["thread"][1]["correction_event_id"] == fix
    assert ok(run, "queries", "--status", "open") == []
    append(run, keys, "mon1", "QueryReopened", "S01-001", {"query_id": "Q1", "text": "source still differs"})
    assert ok(run, "summary")["data_management"]["open_queries"] == 1
    assert "Q1" in run("queries").stdout and "QueryReopened by mon1" in run("queries").stdout


def test_query_refusals(ready: dict[str, str], keys: Keys, run: Cli) -> None:
    lab, other = ready["S01-001"], ready["S01-002"]
    refused(run, "append", "QueryAnswered", "--participant", "S01-001", "--data",
            '{"query_id": "Q9", "text": "x"}', *key(keys, "coord1"), needle="no query Q9")
    refused(run, "append", "QueryRaised", "--participant", "S01-001", "--data",
            json.dumps({"query_id": "Q1", "target_event_id": other, "text": "x"}), *key(keys, "mon1"),
            needle="belongs to another participant")
    row = refused(run, "append", "QueryRaised", "--participant", "S01-001", "--data",
                  json.dumps({"query_id": "Q1", "target_event_id": lab, "text": "x"}), *key(keys, "coord1"),
                  needle="may not sign QueryRaised")
    assert row["user_id"] == "coord1" and row["event_type"] == "QueryRaised" and row["participant"] == "S01-001"
    assert "text" not in json.dumps(row) or '"x"' not in json.dumps(row)  # never the payload
    append(run, keys, "mon1", "QueryRaised", "S01-001", {"query_id": "Q1", "target_event_id": lab, "text": "x"})
    refused(run, "append", "QueryRaised", "--participant", "S01-001", "--data",
            json.dumps({"query_id": "Q1", "target_event_id": lab, "text": "again"}), *key(keys, "mon1"),
            needle="already exists")
    refused(run, "append", "QueryClosed", "--participant", "S01-001", "--data", '{"query_id": "Q1"}',
            *key(keys, "inv1"), needle="only the monitor role may close it")
    fix_other = correct(run, keys, "S01-002", other)
    refused(run, "append", "QueryAnswered", "--participant", "S01-001", "--data",
            json.dumps({"query_id": "Q1", "text": "x", "correction_event_id": fix_other}), *key(keys, "coord1"),
            needle="not a correction or void of the queried entry")
    refused(run, "append", "QueryReopened", "--participant", "S01-001", "--data", '{"query_id": "Q1"}',
            *key(keys, "mon1"), needle="is open, not closed")
    append(run, keys, "mon1", "QueryClosed", "S01-001", {"query_id": "Q1"})
    refused(run, "append", "QueryAnswered", "--participant", "S01-001", "--data",
            '{"query_id": "Q1", "text": "late"}', *key(keys, "coord1"), needle="query Q1 is closed")
    refused(run, "append", "QueryClosed", "--participant", "S01-001", "--data", '{"query_id": "Q1"}',
            *key(keys, "mon1"), needle="query Q1 is closed")


# -- source data verification -----------------------------------------------------------------


def test_sdv_goes_stale_after_a_correction_of_its_entry_only(ready: dict[str, str], keys: Keys, run: Cli) -> None:
    lab = ready["S01-001"]
    ok(run, "verify-source", lab, *key(keys, "mon1"))
    [s] = ok(run, "sdv", "--participant", "S01-001")
    assert (s["verified"], s["stale"], s["not_verified"]) == (1, 0, 1)  # the registration is not verified yet
    correct(run, keys, "S01-002", ready["S01-002"])  # another participant's entry
    append(run, keys, "lab1", "LabResultRecorded", "S01-002", json.loads(LAB))
    assert ok(run, "sdv", "--participant", "S01-001")[0]["stale"] == 0
    fix = correct(run, keys, "S01-001", lab)
    [s] = ok(run, "sdv", "--participant", "S01-001")
    assert (s["verified"], s["stale"]) == (0, 1)
    assert s["stale_entries"][0]["target_event_id"] == lab and s["stale_entries"][0]["changed_by"] == fix
    assert "STALE LabResultRecorded" in run("sdv").stdout
    ok(run, "verify-source", lab, *key(keys, "mon1"))  # re-verified after the correction
    assert ok(run, "sdv", "--participant", "S01-001")[0]["verified"] == 1


def test_sdv_refusals(ready: dict[str, str], keys: Keys, run: Cli) -> None:
    lab = ready["S01-001"]
    check = ok(run, "verify-source", lab, *key(keys, "mon1"))["event_id"]
    refused(run, "append", "EntryVoided", "--participant", "S01-001", "--reason", "oops", "--data",
            json.dumps({"target_event_id": check}), *key(keys, "inv1"), needle="cannot be corrected or voided")
    refused(run, "append", "SourceVerified", "--participant", "S01-001", "--data",
            json.dumps({"target_event_id": lab, "target_hash": "0" * 64}), *key(keys, "mon1"),
            needle="does not match the chain hash")
    refused(run, "verify-source", lab, *key(keys, "inv1"), needle="may not sign SourceVerified")
    refused(run, "append", "SourceVerified", "--participant", "S01-001", "--data",
            json.dumps({"target_event_id": ready["S01-002"], "target_hash": "0" * 64}), *key(keys, "mon1"),
            needle="belongs to another participant")


# -- investigator sign-off ----------------------------------------------------------------------


def test_signoff_goes_stale_after_a_change_of_that_participant_only(ready: dict[str, str], keys: Keys,
                                                                    run: Cli, tmp_path: Path) -> None:
    signed = ok(run, "signoff", "S01-001", *key(keys, "inv1"))
    store = Store(run.db)
    assert signed["casebook_hash"] == casebook_hash(r.hash for r in store.stream_records("S01-001")[:2])
    store.close()
    assert "sign-off: current" in run("show", "S01-001").stdout
    correct(run, keys, "S01-002", ready["S01-002"])  # unrelated: another participant
    append(run, keys, "mon1", "QueryRaised", "S01-001", {"query_id": "Q1", "target_event_id": ready["S01-001"],
                                                         "text": "a query is not a change"})
    assert {r["participant"]: r["signoff"] for r in ok(run, "participants")} == \
        {"S01-001": "current", "S01-002": "not signed"}
    correct(run, keys, "S01-001", ready["S01-001"])
    assert ok(run, "participants")[0]["signoff"] == "stale"
    shown = ok(run, "show", "S01-001")["data_management"]["signoff"]
    assert shown["status"] == "stale" and shown["up_to_position"] == 2
    assert "sign-off: STALE" in run("show", "S01-001").stdout
    assert "sign-off: current" in run("show", "S01-001", "--position", "13").stdout  # before the correction
    out = tmp_path / "r.html"
    assert run("report", "--out", str(out)).exit_code == 0
    html = out.read_text()
    assert 'class="signoff-stale important">STALE' in html and "Investigator sign-off" in html
    assert "Data queries" in html and "Q1" in html


def test_signoff_refusals(ready: dict[str, str], keys: Keys, run: Cli) -> None:
    refused(run, "signoff", "S01-001", *key(keys, "coord1"), needle="may not sign CasebookSigned")
    refused(run, "append", "CasebookSigned", "--participant", "S01-001", "--data",
            json.dumps({"up_to_position": 2, "casebook_hash": "0" * 64}), *key(keys, "inv1"),
            needle="does not match S01-001's casebook")
    refused(run, "signoff", "S01-001", "--up-to", "9", *key(keys, "inv1"), needle="record ends at position 2")
    store = Store(run.db)
    good = casebook_hash(r.hash for r in store.stream_records("S01-001"))
    store.close()
    refused(run, "append", "CasebookSigned", "--participant", "S01-001", "--meaning", "authorship", "--data",
            json.dumps({"up_to_position": 2, "casebook_hash": good}), *key(keys, "inv1"), needle="is an approval")


# -- lock ------------------------------------------------------------------------------------------


AE = {"ae_id": "AE1", "term": "rash", "grade": 1, "serious": False, "relatedness": "possible", "expected": True,
      "awareness_at": T0}


def test_lock_refuses_all_but_safety_follow_up_until_unlocked_with_a_reason(ready: dict[str, str], keys: Keys,
                                                                           run: Cli) -> None:
    append(run, keys, "inv1", "AdverseEventReported", "S01-001", AE, "--occurred-at", T0)
    refused(run, "append", "DatabaseLocked", "--data", "{}", *key(keys, "inv1"), needle="may not sign DatabaseLocked")
    lock = append(run, keys, "admin", "DatabaseLocked", None, {})
    row = refused(run, "append", "LabResultRecorded", "--participant", "S01-001", "--data", LAB,
                  *key(keys, "lab1"), needle=f"is locked by DatabaseLocked {lock}")
    assert row["command"] == "append" and row["key_id"] == keys.signers["lab1"].key_id
    refused(run, "signoff", "S01-002", *key(keys, "inv1"), needle="is locked")
    append(run, keys, "inv1", "AdverseEventUpdated", "S01-001", {"ae_id": "AE1", "grade": 2})
    append(run, keys, "inv1", "AdverseEventReported", "S01-002", {**AE, "ae_id": "AE2"}, "--occurred-at", T0)
    refused(run, "append", "DatabaseLocked", "--data", "{}", *key(keys, "admin"), needle="already locked")
    refused(run, "append", "DatabaseUnlocked", "--data", "{}", *key(keys, "admin"), needle="requires a reason")
    assert ok(run, "summary")["data_management"]["study_locked"] is True
    append(run, keys, "admin", "DatabaseUnlocked", None, {}, "--reason", "query resolution after lock")
    append(run, keys, "lab1", "LabResultRecorded", "S01-001", json.loads(LAB))
    # one participant's lock leaves the others open
    append(run, keys, "admin", "DatabaseLocked", None, {"participant": "S01-001"})
    append(run, keys, "lab1", "LabResultRecorded", "S01-002", json.loads(LAB))
    refused(run, "append", "LabResultRecorded", "--participant", "S01-001", "--data", LAB, *key(keys, "lab1"),
            needle="(participant S01-001)")
    assert "LOCKED" in run("show", "S01-001").stdout and "LOCKED" not in run("show", "S01-002").stdout
    refused(run, "append", "DatabaseUnlocked", "--data", '{"participant": "S01-002"}', "--reason", "x",
            *key(keys, "admin"), needle="is not locked")
    assert run("verify").exit_code == 0


# -- the security log ---------------------------------------------------------------------------


def test_security_log_records_key_failures_and_flags_bursts(ready: dict[str, str], keys: Keys, run: Cli,
                                                            tmp_path: Path) -> None:
    args = ("append", "LabResultRecorded", "--participant", "S01-001", "--data", LAB, *key(keys, "lab1"))
    for _ in range(3):
        before = event_count(run.db)
        r = run(*args, env={"TRIAL_LEDGER_PASSPHRASE": "wrong"})
        assert r.exit_code == 3 and "wrong passphrase" in r.stderr and event_count(run.db) == before
    refused(run, "append", "LabResultRecorded", "--participant", "S01-001", "--data", LAB, *key(keys, "outsider"),
            needle="not registered")
    log = security_log(run)
    assert [(e["user_id"], e["key_id"]) for e in log[:3]] == [("lab1", keys.signers["lab1"].key_id)] * 3
    assert all(e["flagged"] for e in log[:3]) and not log[3]["flagged"]
    assert log[3]["user_id"] == "outsider" and log[3]["key_id"] == keys.signers["outsider"].key_id
    assert "FLAGGED lab1" in run("security-log").stdout
    assert ok(run, "security-log", "--since", "2999-01-01T00:00:00Z") == []
    assert run("verify").exit_code == 0  # never part of the clinical chain
    # a refusal against a database that does not exist creates nothing, and logs nothing
    missing = tmp_path / "nowhere.db"
    r = Cli(str(missing))(*args)
    assert r.exit_code == 2 and not missing.exists()


def test_security_log_is_append_only(ready: dict[str, str], keys: Keys, run: Cli) -> None:
    refused(run, "append", "LabResultRecorded", "--participant", "S01-001", "--data", LAB, *key(keys, "outsider"),
            needle="not registered")
    store = Store(run.db)
    try:
        table = store.table("security_log")
        for statement in (f"UPDATE {table} SET reason = 'nothing'", f"DELETE FROM {table}"):
            with pytest.raises(Exception, match="append-only"):
                store.execute_raw(statement)
    finally:
        store.close()
    assert len(security_log(run)) == 1


def test_a_refused_import_line_is_logged_and_writes_nothing(ready: dict[str, str], keys: Keys, run: Cli,
                                                            tmp_path: Path) -> None:
    append(run, keys, "admin", "DatabaseLocked", None, {})
    lines = tmp_path / "in.jsonl"
    lines.write_text(json.dumps({"type": "LabResultRecorded", "participant": "S01-001",
                                 "data": json.loads(LAB), "occurred_at": T0}) + "\n")
    row = refused(run, "import", str(lines), *key(keys, "lab1"), needle="is locked")
    assert row["command"] == "import"


# -- rebuild equals incremental ----------------------------------------------------------------

OPS = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(
    ["lab", "raise", "answer", "close", "reopen", "sdv", "correct", "void", "sign", "lock", "unlock", "ae"])),
    min_size=1, max_size=20)


def play(trial: Trial, keys: Keys, ops: list[tuple[int, str]]) -> None:
    s = keys.signers
    labs: dict[str, list[str]] = {}
    for n, (idx, op) in enumerate(ops):
        p = f"S01-{idx:03d}"
        if trial.store.stream_length(p) == 0:
            try:
                register(trial, keys, p)
            except InputRefused:  # registration is refused under a lock too
                continue
        mine = labs.get(p, [])
        qid = f"Q{idx}"
        commands = {
            "lab": (Command("LabResultRecorded", p, {"analyte": "FBG", "value": 5 + n, "unit": "mmol/L"},
                            occurred_at=T0), "lab1"),
            "raise": (Command("QueryRaised", p, {"query_id": qid, "target_event_id": mine[-1] if mine else "x" * 36,
                                                 "text": "?"}), "mon1"),
            "answer": (Command("QueryAnswered", p, {"query_id": qid, "text": "ok"}), "coord1"),
            "close": (Command("QueryClosed", p, {"query_id": qid}), "mon1"),
            "reopen": (Command("QueryReopened", p, {"query_id": qid}), "mon1"),
            "correct": (Command("EntryCorrected", p, {"target_event_id": mine[0] if mine else "x" * 36,
                                                      "changes": {"value": 9.9}}, reason="fix"), "lab1"),
            "void": (Command("EntryVoided", p, {"target_event_id": mine[-1] if mine else "x" * 36},
                             reason="wrong"), "lab1"),
            "lock": (Command("DatabaseLocked", None, {"participant": p} if idx else {}), "admin"),
            "unlock": (Command("DatabaseUnlocked", None, {"participant": p} if idx else {}, reason="r"), "admin"),
            "ae": (Command("AdverseEventReported", p, {**AE, "ae_id": f"AE{n}"}, occurred_at=T0), "inv1"),
        }
        if op == "sdv" and mine:
            record = trial.store.record_by_event_id(mine[-1])
            assert record is not None
            commands["sdv"] = (Command("SourceVerified", p, {"target_event_id": mine[-1],
                                                             "target_hash": record.hash.hex()}), "mon1")
        if op == "sign":
            length = trial.store.stream_length(p)
            commands["sign"] = (Command("CasebookSigned", p, {"up_to_position": length, "casebook_hash": casebook_hash(
                r.hash for r in trial.store.stream_records(p))}), "inv1")
        if op not in commands:
            continue
        command, user = commands[op]
        try:
            env = trial.append(command, s[user])
        except InputRefused:
            continue  # refusals are fine in a random walk, nothing else is
        if op == "lab":
            labs.setdefault(p, []).append(env.event_id)
        elif op == "void" and mine:
            mine.pop()


def folded(dm: DataManagement) -> dict[str, Any]:
    ids = dm.participant_ids()
    return {"queries": dm.queries(now=NOW), "sdv": [dm.sdv(p) for p in ids],
            "signoff": [dm.signoff(p) for p in ids], "lock": [dm.lock(p) for p in ids], "state": dm.to_json()}


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(ops=OPS, cut=st.integers(1, 7))
def test_rebuild_equals_incremental(keys: Keys, ops: list[tuple[int, str]], cut: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "ledger.db")
        trial = initialise(db, keys)
        play(trial, keys, ops)
        records = list(trial.store.records())
        whole = DataManagement.fold(records)
        # incrementally: pages of ``cut`` records, the state serialised and reloaded between pages
        state = DataManagement().to_json()
        for start in range(0, len(records), cut):
            step = DataManagement.from_json(json.loads(json.dumps(state)))
            for record in records[start:start + cut]:
                step.apply(record)
            state = step.to_json()
        assert folded(DataManagement.from_json(state)) == folded(whole)
        proj = Projections(trial.store)  # the materialised projections still rebuild to the same tables
        proj.catch_up()
        incremental = proj.table_dump()
        proj.rebuild()
        assert proj.table_dump() == incremental
        trial.store.close()


def test_cli_rebuild_leaves_every_data_management_answer_unchanged(ready: dict[str, str], keys: Keys,
                                                                   run: Cli) -> None:
    append(run, keys, "mon1", "QueryRaised", "S01-001", {"query_id": "Q1", "target_event_id": ready["S01-001"],
                                                         "text": "?"})
    ok(run, "verify-source", ready["S01-002"], *key(keys, "mon1"))
    ok(run, "signoff", "S01-002", *key(keys, "inv1"))
    reads = (("queries",), ("sdv",), ("participants",), ("show", "S01-002"))
    before = [ok(run, *r) for r in reads]
    assert run("rebuild").exit_code == 0
    assert [ok(run, *r) for r in reads] == before


def test_security_log_table_is_beside_the_ledger_not_in_it(ready: dict[str, str], keys: Keys, run: Cli) -> None:
    refused(run, "append", "LabResultRecorded", "--participant", "S01-001", "--data", LAB, *key(keys, "outsider"),
            needle="not registered")
    store = Store(run.db)
    try:
        row = store.fetch(f"SELECT * FROM {store.table('security_log')} LIMIT 1")[0]
    finally:
        store.close()
    columns = list(row.keys())
    assert "data" not in columns and "reason" in columns  # the payload is never stored


def test_an_insider_bypassing_the_checks_gets_no_verification_and_an_invalid_signoff(
        ready: dict[str, str], keys: Keys, run: Cli) -> None:
    """A registered monitor/investigator who signs events outside the CLI (valid signatures, wrong hashes)."""
    import uuid

    from ledger.envelope import Envelope

    store = Store(run.db)
    now = datetime.now(UTC).isoformat()

    def forge(type_name: str, user: str, data: dict[str, Any], meaning: str) -> None:
        env = Envelope(event_id=str(uuid.uuid4()), type=type_name, stream="S01-001",
                       position=store.stream_length("S01-001") + 1, occurred_at=now, recorded_at=now, author=user,
                       key_id=keys.signers[user].key_id, meaning=meaning, reason=None, data=data)
        store.append([env], keys.signers[user])

    forge("SourceVerified", "mon1", {"target_event_id": ready["S01-001"], "target_hash": "1" * 64}, "review")
    forge("CasebookSigned", "inv1", {"up_to_position": 2, "casebook_hash": "2" * 64}, "approval")
    store.close()
    assert run("verify").exit_code == 0  # signed by authorised roles: the chain is intact
    [s] = ok(run, "sdv", "--participant", "S01-001")
    assert s["verified"] == 0 and s["not_verified"] == 2
    assert ok(run, "participants")[0]["signoff"] == "invalid"


def test_a_newline_in_a_refused_command_cannot_forge_a_security_log_entry(ready: dict[str, str], keys: Keys,
                                                                         run: Cli) -> None:
    """What a refused caller typed is kept as typed (JSON) but shown escaped: one entry, one line."""
    forged = "LabResultRecorded\n2026-01-01T00:00:00Z  admin key 0000 init: FAKE ENTRY"
    refused(run, "append", forged, "--participant", "S01-001", "--data", LAB, *key(keys, "lab1"),
            needle="unknown event type")
    assert security_log(run)[-1]["event_type"] == forged
    table = run("security-log").stdout.strip().splitlines()
    assert len(table) == 1 and "\\n2026-01-01" in table[0] and not any(line.startswith("2026-01-01T00:00:00Z")
                                                                        for line in table)
