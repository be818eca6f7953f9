"""Projections (SPEC §7): audit trail columns, corrections and time travel, summary, rebuild = incremental."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.events import CATALOGUE
from domain.service import Command, Trial
from ledger.cosignature import vkey_for
from ledger.errors import InputRefused
from ledger.keys import generate
from ledger.store import Store
from projections import audit as audit_module
from projections.projector import Projections
from domain.datamanagement import casebook_hash
from tests.conftest import Cli, Keys, as_owner, initialise, register

T0 = "2010-09-01T09:00:00+08:00"


def full_history(trial: Trial, keys: Keys, participant: str = "S01-001") -> dict[str, str]:
    """Every participant event type once or more; returns some event ids."""
    s = keys.signers
    register(trial, keys, participant, sex="F")

    def add(type_name: str, data: dict, user: str = "inv1", reason: str | None = None, when: str = T0) -> str:
        return trial.append(Command(type_name, participant, data, occurred_at=when, reason=reason), s[user]).event_id

    ids = {}
    add("ConsentSigned", {"icf_version": "1.0", "obtained_by": "inv1", "witness": "coord1"}, "coord1")
    ids["lab"] = add("LabResultRecorded", {"analyte": "FBG", "value": 6.1, "unit": "mmol/L"}, "lab1")
    add("LabResultRecorded", {"analyte": "HBA1C", "value": 8.0, "unit": "%"}, "lab1")
    ids["spurious"] = add("LabResultRecorded", {"analyte": "BMI", "value": 40.0, "unit": "kg/m2"}, "lab1")
    add("ScreeningAssessed", {"criterion": "I3", "met": True, "value": 50, "evidence": "ID card"})
    add("EligibilityConfirmed", {})
    add("Enrolled", {}, "coord1")
    add("InfusionAdministered", {"dose_number": 1, "route": "intra-arterial-pancreatic", "lot": "L-001",
                                 "cell_source": "autologous bone marrow", "cell_count": 1e6, "viability_pct": 93.5,
                                 "identity_checked": True, "ended_at": "2010-09-01T10:00:00+08:00"}, "pharm1")
    add("VisitCompleted", {"visit": "D30"})
    add("AdverseEventReported", {"ae_id": "AE-1", "term": "fever", "grade": 2, "serious": False,
                                 "relatedness": "possible", "expected": False, "awareness_at": T0})
    add("AdverseEventUpdated", {"ae_id": "AE-1", "grade": 1}, reason="resolved, regraded")
    add("ProtocolDeviationRecorded", {"category": "procedure", "description": "late sample", "important": False},
        "mon1")
    ids["correction"] = add("EntryCorrected", {"target_event_id": ids["lab"], "changes": {"value": 8.4}}, "lab1",
                            reason="transcription error")
    add("EntryVoided", {"target_event_id": ids["spurious"]}, "lab1", reason="wrong participant")
    add("RecordReviewed", {"scope": "screening"}, "mon1")
    # data management (issue 20)
    add("QueryRaised", {"query_id": "Q1", "target_event_id": ids["lab"], "text": "check the value"}, "mon1")
    add("QueryAnswered", {"query_id": "Q1", "text": "corrected", "correction_event_id": ids["correction"]}, "lab1")
    add("QueryClosed", {"query_id": "Q1"}, "mon1")
    add("QueryReopened", {"query_id": "Q1", "text": "unit?"}, "mon1")
    record = trial.store.record_by_event_id(ids["lab"])
    assert record is not None
    add("SourceVerified", {"target_event_id": ids["lab"], "target_hash": record.hash.hex()}, "mon1")
    length = trial.store.stream_length(participant)
    add("CasebookSigned", {"up_to_position": length,
                           "casebook_hash": casebook_hash(r.hash for r in trial.store.stream_records(participant))})
    add("ScreenFailed", {"failed_criteria": ["I5"]})
    add("ConsentWithdrawn", {"scope": "treatment"}, reason="personal")
    add("ParticipantWithdrawn", {}, reason="consent withdrawn")
    add("SafetyReportSubmitted", {"ae_id": "AE-1", "recipient": "NMPA", "reference": "CN-2010-001"})
    # withdrawal is terminal: a later procedure needs a reason (and is flagged)
    add("VisitCompleted", {"visit": "D90"}, reason="safety visit the participant asked for")
    return ids


def test_every_audit_column_in_csv_and_json_for_every_type(trial: Trial, keys: Keys, run: Cli) -> None:
    full_history(trial, keys)
    register(trial, keys, "S01-002")
    trial.append(Command("ParticipantCompleted", "S01-002", {}, occurred_at=T0), keys.signers["inv1"])
    trial.append(Command("DocumentRegistered", None, {"kind": "protocol", "version": "1.1", "sha256": "a" * 64,
                                                      "file_name": "protocol-1.1.pdf"}), keys.signers["admin"])
    trial.append(Command("ProtocolAmended", None, {"protocol_version": "1.1", "protocol_sha256": "a" * 64,
                                                   "icf_version": "1.1"}), keys.signers["admin"])
    trial.append(Command("SignerRevoked", None, {"user_id": "coord1"}, reason="left"), keys.signers["admin"])
    trial.append(Command("DatabaseLocked", None, {"participant": "S01-001"}), keys.signers["admin"])
    trial.append(Command("DatabaseUnlocked", None, {"participant": "S01-001"}, reason="reopened"),
                 keys.signers["admin"])
    vkey = str(vkey_for("w.test/a", generate()))
    for type_name, data, reason in (("WitnessAdded", {"name": "w.test/a", "url": "http://127.0.0.1:1", "vkey": vkey},
                                     None), ("WitnessPolicySet", {"quorum": 1}, None),
                                    ("WitnessRemoved", {"name": "w.test/a"}, "contract ended")):
        trial.append(Command(type_name, None, data, reason=reason), keys.signers["admin"])
    r = run("audit", "--format", "csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert tuple(rows[0].keys()) == audit_module.COLUMNS
    assert {row["event_type"] for row in rows} == set(CATALOGUE)
    rows_json = json.loads(run("audit", "--format", "json").stdout)
    assert {row["event_type"] for row in rows_json} == set(CATALOGUE)
    for row in rows_json:
        assert set(row) == {*audit_module.COLUMNS, "witnessed_after", "witnessed_before"}
        assert row["user_name"] and row["role"] and row["hash"] and row["meaning"]
        assert row["signature_verified"] is True
        assert row["recorded_at"].endswith("+00:00") and "." in row["recorded_at"]  # UTC, microseconds
    review = next(r for r in rows_json if r["event_type"] == "RecordReviewed")
    assert review["meaning"] == "review" and review["role"] == "monitor"


def test_correction_old_and_new_value_and_time_travel(trial: Trial, keys: Keys, run: Cli) -> None:
    register(trial, keys, "S01-001")
    lab = trial.append(Command("LabResultRecorded", "S01-001", {"analyte": "FBG", "value": 6.1, "unit": "mmol/L"},
                               occurred_at=T0), keys.signers["lab1"])
    before_correction = datetime.now(UTC)
    trial.append(Command("EntryCorrected", "S01-001", {"target_event_id": lab.event_id, "changes": {"value": 8.4}},
                         reason="transcription error: 8.4 on the analyser printout"), keys.signers["lab1"])
    rows = json.loads(run("audit", "--participant", "S01-001", "--type", "EntryCorrected", "--format", "json").stdout)
    assert len(rows) == 1
    row = rows[0]
    assert (row["field"], row["old_value"], row["new_value"]) == ("value", "6.1", "8.4")
    assert row["reason"] == "transcription error: 8.4 on the analyser printout"
    assert (row["user_id"], row["user_name"], row["role"]) == ("lab1", "Name of lab1", "lab")
    assert row["target_event_id"] == lab.event_id and row["recorded_at"] > before_correction.isoformat()[:19]
    # the original entry still appears with its original value
    original = json.loads(run("audit", "--type", "LabResultRecorded", "--format", "json").stdout)
    assert json.loads(original[0]["new_value"])["value"] == 6.1

    then = run.json("show", "S01-001", "--as-of", before_correction.isoformat())
    assert [lab["value"] for lab in then["labs"]] == [6.1]
    now = run.json("show", "S01-001")
    assert [lab["value"] for lab in now["labs"]] == [8.4] and now["labs"][0]["corrected"]
    at_position = run.json("show", "S01-001", "--position", str(trial.store.head_position() - 1))
    assert [lab["value"] for lab in at_position["labs"]] == [6.1]


def test_void_never_hides_the_original(trial: Trial, keys: Keys, run: Cli) -> None:
    register(trial, keys, "S01-001")
    lab = trial.append(Command("LabResultRecorded", "S01-001", {"analyte": "FBG", "value": 6.1, "unit": "mmol/L"},
                               occurred_at=T0), keys.signers["lab1"])
    trial.append(Command("EntryVoided", "S01-001", {"target_event_id": lab.event_id}, reason="wrong tube"),
                 keys.signers["lab1"])
    now = run.json("show", "S01-001")
    assert now["labs"][0]["voided"] and now["labs"][0]["value"] == 6.1
    rows = json.loads(run("audit", "--format", "json").stdout)
    void = next(r for r in rows if r["event_type"] == "EntryVoided")
    assert json.loads(void["old_value"])["value"] == 6.1 and void["reason"] == "wrong tube"


def test_summary_matches_counts_from_raw_events(trial: Trial, keys: Keys, run: Cli) -> None:
    s = keys.signers
    for n in range(5):
        p = f"S01-{n:03d}"
        register(trial, keys, p)
        trial.append(Command("ScreeningAssessed", p, {"criterion": "I1", "met": True}, occurred_at=T0), s["inv1"])
        if n == 4:
            trial.append(Command("ScreenFailed", p, {"failed_criteria": ["I5"]}, occurred_at=T0), s["inv1"])
            continue
        trial.append(Command("Enrolled", p, {}, occurred_at=T0), s["inv1"])
        for dose in range(1, 1 + n % 3 + 1):
            trial.append(Command("InfusionAdministered", p, {
                "dose_number": dose, "route": "intravenous", "lot": "L", "cell_source": "bm", "cell_count": 1e6,
                "viability_pct": 90, "identity_checked": True}, occurred_at=T0), s["pharm1"])
        trial.append(Command("AdverseEventReported", p, {
            "ae_id": f"AE{n}", "term": "headache", "grade": 1 + n % 3, "serious": n == 2, "relatedness": "unlikely",
            "expected": True, "awareness_at": T0}, occurred_at=T0), s["inv1"])
    summary = run.json("summary")
    raw = [r.envelope() for r in trial.store.records()]
    assert summary["participants"] == sum(e.type == "ParticipantRegistered" for e in raw)
    assert summary["screened"] == len({e.stream for e in raw if e.type == "ScreeningAssessed"})
    assert summary["enrolled"] == sum(e.type == "Enrolled" for e in raw) == 4
    assert summary["target_enrolment"] == 24
    assert summary["doses_given"] == sum(e.type == "InfusionAdministered" for e in raw)
    assert summary["adverse_events_by_grade"] == dict(sorted(Counter(
        str(e.data["grade"]) for e in raw if e.type == "AdverseEventReported").items()))
    assert summary["serious_adverse_events"] == 1
    devs = json.loads(run("--json", "deviations").stdout)
    assert summary["deviations"] == len(devs) > 0
    assert summary["important_deviations"] == sum(d["important"] for d in devs)
    assert summary["deviations_by_kind"] == dict(sorted(Counter(d["kind"] for d in devs).items()))
    # a crash after a page was projected but before the summary was rewritten leaves it empty, not stale
    proj = Projections(trial.store)
    trial.store.execute_raw(f"DELETE FROM {proj.names['summary']}")
    assert run.json("summary") == summary
    # and a new event reaches the summary on the next read
    register(trial, keys, "S01-099")
    assert run.json("summary")["participants"] == summary["participants"] + 1


@pytest.mark.parametrize(("args", "code", "needle"), [
    (("show", "S01-404"), 3, "S01-404"),
    (("show", "S01-001", "--as-of", "yesterday"), 2, "ISO 8601"),
    (("show", "S01-001", "--as-of", "2010-09-01T09:00:00"), 2, "offset"),
    (("audit", "--type", "Nonsense"), 2, "Nonsense"),
    (("audit", "--since", "2010-13-01T00:00:00Z"), 2, "ISO 8601"),
    (("participants", "--status", "happy"), 2, "happy"),
    (("audit", "--format", "xml"), 2, "xml"),
    (("deviations", "--participant", "S01-404"), 3, "S01-404"),
])
def test_bad_arguments(trial: Trial, keys: Keys, run: Cli, args: tuple[str, ...], code: int, needle: str) -> None:
    register(trial, keys, "S01-001")
    r = run(*args)
    assert r.exit_code == code, r.output
    assert needle in r.stderr and "Traceback" not in r.output


def test_audit_filters(trial: Trial, keys: Keys, run: Cli) -> None:
    full_history(trial, keys, "S01-001")
    register(trial, keys, "S01-002")
    by_participant = json.loads(run("audit", "--participant", "S01-002", "--format", "json").stdout)
    assert {r["participant"] for r in by_participant} == {"S01-002"}
    by_user = json.loads(run("audit", "--user", "mon1", "--format", "json").stdout)
    assert {r["user_id"] for r in by_user} == {"mon1"} and len(by_user) == 6  # 2 + 4 data-management events
    future = (datetime.now(UTC) + timedelta(hours=1)).astimezone().isoformat()
    assert json.loads(run("audit", "--since", future, "--format", "json").stdout) == []
    # the same instant written in another offset selects the same rows
    cut = json.loads(run("audit", "--format", "json").stdout)[10]["recorded_at"]
    as_tokyo = datetime.fromisoformat(cut).astimezone(__import__("datetime").timezone(timedelta(hours=9))).isoformat()
    a = json.loads(run("audit", "--since", cut, "--format", "json").stdout)
    b = json.loads(run("audit", "--since", as_tokyo, "--format", "json").stdout)
    assert a == b and len(a) > 0


def dump_after_incremental_and_rebuild(db: str) -> tuple[dict, dict]:
    store = Store(db)
    proj = Projections(store)
    proj.catch_up()
    incremental = proj.table_dump()
    proj.rebuild()
    rebuilt = proj.table_dump()
    store.close()
    return incremental, rebuilt


ACTIONS = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(
    ["lab", "consent", "enrol", "dose", "ae", "correct", "void", "withdraw", "review", "catch_up"])),
    min_size=1, max_size=25)


def play(trial: Trial, keys: Keys, actions: list[tuple[int, str]]) -> None:
    s = keys.signers
    proj = Projections(trial.store)
    labs: dict[str, list[str]] = {}
    for idx, action in actions:
        p = f"S01-{idx:03d}"
        if trial.store.stream_length(p) == 0:
            register(trial, keys, p)
        try:
            if action == "lab":
                e = trial.append(Command("LabResultRecorded", p, {"analyte": "FBG", "value": 5 + idx, "unit": "mmol/L"},
                                         occurred_at=T0), s["lab1"])
                labs.setdefault(p, []).append(e.event_id)
            elif action == "consent":
                trial.append(Command("ConsentSigned", p, {"icf_version": "1.0", "obtained_by": "inv1"}, occurred_at=T0),
                             s["inv1"])
            elif action == "enrol":
                trial.append(Command("Enrolled", p, {}, occurred_at=T0), s["inv1"])
            elif action == "dose":
                trial.append(Command("InfusionAdministered", p, {
                    "dose_number": 1 + idx % 3, "route": "intravenous", "lot": "L", "cell_source": "bm",
                    "cell_count": 1e6, "viability_pct": 90, "identity_checked": True}, occurred_at=T0), s["pharm1"])
            elif action == "ae":
                trial.append(Command("AdverseEventReported", p, {
                    "ae_id": f"AE{len(labs)}{idx}", "term": "rash", "grade": 1 + idx, "serious": idx == 3,
                    "relatedness": "possible", "expected": False, "awareness_at": T0}, occurred_at=T0), s["inv1"])
            elif action in ("correct", "void") and labs.get(p):
                target = labs[p].pop()
                if action == "correct":
                    trial.append(Command("EntryCorrected", p, {"target_event_id": target, "changes": {"value": 9.9}},
                                         reason="fix"), s["lab1"])
                else:
                    trial.append(Command("EntryVoided", p, {"target_event_id": target}, reason="wrong"), s["lab1"])
            elif action == "withdraw":
                trial.append(Command("ConsentWithdrawn", p, {"scope": "all"}, reason="moved"), s["inv1"])
            elif action == "review":
                trial.append(Command("RecordReviewed", p, {"scope": "all"}), s["mon1"])
            elif action == "catch_up":
                proj.catch_up()
        except InputRefused:  # refusals are fine in a random walk, nothing else is
            pass


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_rebuild_equals_incremental_sqlite(tmp_path_factory: pytest.TempPathFactory, keys: Keys,
                                           actions: list[tuple[int, str]]) -> None:
    db = str(tmp_path_factory.mktemp("rebuild") / "ledger.db")
    trial = initialise(db, keys)
    play(trial, keys, actions)
    trial.store.close()
    incremental, rebuilt = dump_after_incremental_and_rebuild(db)
    assert incremental == rebuilt
    assert len(incremental["audit"]) > 0


@pytest.mark.postgres
def test_rebuild_equals_incremental_postgres(pg_url: str, keys: Keys) -> None:
    trial = initialise(pg_url, keys)
    play(trial, keys, [(0, "consent"), (0, "lab"), (1, "lab"), (0, "catch_up"), (0, "correct"), (1, "enrol"),
                       (1, "dose"), (2, "ae"), (0, "catch_up"), (1, "void"), (3, "ae"), (2, "withdraw"),
                       (2, "lab"), (3, "review")])
    full_history(trial, keys, "S01-009")
    trial.store.close()
    incremental, rebuilt = dump_after_incremental_and_rebuild(pg_url)
    assert incremental == rebuilt
    assert len(incremental["deviations"]) > 0 and len(incremental["participants"]) == 5


def _rebuilt_with_pool(db: str, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict]:
    """The tables rebuilt inline, then rebuilt with two worker processes for signatures and deviations."""
    import ledger.signatures
    import projections.projector as projector

    store = Store(db)
    proj = Projections(store)
    proj.rebuild(jobs=1)
    inline = proj.table_dump()
    with monkeypatch.context() as m:
        m.setattr(projector, "PARALLEL_FROM", 0)
        m.setattr(projector, "DEVIATION_TASK", 2)
        m.setattr(ledger.signatures, "INLINE_BELOW", 0)
        proj.rebuild(jobs=2)
    pooled = proj.table_dump()
    store.close()
    return inline, pooled


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_rebuild_in_worker_processes_equals_inline(backend: str, request: pytest.FixtureRequest,
                                                   tmp_path_factory: pytest.TempPathFactory, keys: Keys,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Signature checks and deviations done by a pool give the same tables, a bad signature included."""
    db = str(tmp_path_factory.mktemp("pool") / "ledger.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    trial = initialise(db, keys)
    play(trial, keys, [(0, "consent"), (0, "lab"), (1, "lab"), (0, "correct"), (1, "enrol"), (1, "dose"),
                       (2, "ae"), (1, "void"), (3, "ae"), (2, "withdraw"), (2, "lab"), (3, "review")])
    full_history(trial, keys, "S01-009")
    store = trial.store
    bad = store.head_position() - 3
    as_owner(store)
    store.execute_raw(f"UPDATE {store.events_table} SET signature = ? WHERE {store.position_column} = ?",
                      (bytes(64), bad))
    store.close()
    inline, pooled = _rebuilt_with_pool(db, monkeypatch)
    assert inline == pooled
    assert len(inline["deviations"]) > 0 and len(inline["participants"]) == 5
    verified = {row[0]: row[-1] for row in inline["audit"]}
    assert verified[bad] == 0 and sum(verified.values()) == len(verified) - 1
