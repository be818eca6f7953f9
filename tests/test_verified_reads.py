"""Nothing is shown, trusted or exported that verify did not bind (SPEC §5.4; issue 15), SQLite and PostgreSQL.

One regression test per finding of the issue; each failed on the code
before it (ff7103e):

1. rows outside the chain (ids <= 0) were read by readers and the writer;
2. derived tables (projections, stored checkpoints) were shown as stored;
3. ``--since-checkpoint`` trusted the stored leaf table for its boundary;
4. the signer registry was replayed from rows that may be missing or reordered.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domain.service import Command, Trial
from domain.signers import STUDY_STREAM
from projections.projector import Projections
from tests.attack import (
    AS_OF,
    all_rows,
    delete_row,
    forged_state,
    insert_row,
    inspector_outputs,
    scenario,
    set_stream_position,
)
from tests.conftest import PASSPHRASE, Cli, Keys, as_owner, event_count
from tests.test_checkpoints import make_checkpoint

LAB = {"analyte": "FBG", "value": 7.7, "unit": "mmol/L"}


def lab(trial: Trial, keys: Keys, pid: str = "S01-001", user: str = "lab1") -> str:
    return trial.append(Command("LabResultRecorded", pid, LAB, occurred_at="2010-09-02T08:00:00+08:00"),
                        keys.signers[user]).event_id


def outsider_append(run: Cli, keys: Keys, user: str = "outsider") -> object:
    return run("append", "LabResultRecorded", "--participant", "S01-001", "--data", json.dumps(LAB),
               "--occurred-at", "2010-09-02T08:00:00+08:00", "--key", str(keys.path(user)))


# -- finding 1: rows outside the chain -----------------------------------------------------------


def test_forged_participant_row_at_a_non_positive_id_is_never_shown(trial: Trial, keys: Keys, run: Cli,
                                                                   tmp_path: Path) -> None:
    ids = scenario(trial, keys)
    store = as_owner(trial.store)
    real = next(r for r in all_rows(store) if r.event_id == ids["lab S01-002"])
    forged = forged_state(real, data={"value": 666.0}, position=99)
    insert_row(store, 0, real, state=forged, stream_position=99, event_id="forged-0")
    insert_row(store, -7, real, state=forged_state(real, data={"value": 666.0}, position=98), stream_position=98,
               event_id="forged-7")
    r = run("verify")
    assert r.exit_code == 1 and "outside the chain" in r.stderr and "position -7" in r.stderr
    for name, (code, text) in inspector_outputs(run, tmp_path).items():
        assert code != 0 and "666" not in text, name
    shown = run("show", "S01-002", "--as-of", AS_OF)
    assert shown.exit_code == 1 and "nothing is shown" in shown.stderr and "666" not in shown.stdout


def test_forged_registration_outside_the_chain_admits_no_key(trial: Trial, keys: Keys, run: Cli) -> None:
    scenario(trial, keys)
    store = as_owner(trial.store)
    reg = next(r for r in all_rows(store) if r.type == "SignerRegistered")
    study_length = sum(1 for r in all_rows(store) if r.stream == STUDY_STREAM)
    forged = forged_state(reg, position=study_length + 1, event_id="forged-reg",
                          data={"user_id": "outsider", "name": "Mallory", "role": "investigator",
                                "public_key": keys.signers["outsider"].public_b64})
    insert_row(store, -1, reg, state=forged, stream_position=study_length + 1, event_id="forged-reg")
    before = event_count(run.db)
    refused = outsider_append(run, keys)
    assert refused.exit_code == 3 and "registry" in refused.stderr
    assert event_count(run.db) == before
    listed = run("signer", "list")
    assert listed.exit_code == 1 and "Mallory" not in listed.stdout
    assert run("verify").exit_code == 1


def test_forged_amendment_outside_the_chain_cannot_hide_deviations(trial: Trial, keys: Keys, run: Cli) -> None:
    scenario(trial, keys)
    pristine = run("deviations")
    assert pristine.exit_code == 0 and "S01-002" in pristine.stdout
    store = as_owner(trial.store)
    genesis = all_rows(store)[0]
    study_length = sum(1 for r in all_rows(store) if r.stream == STUDY_STREAM)
    protocol = json.loads(genesis.state)["data"]["protocol"]
    for spec in protocol.get("doses", []):
        spec["minus"], spec["plus"] = 9999, 9999
    amended = forged_state(genesis, type="ProtocolAmended", position=study_length + 1, event_id="forged-amend",
                           data=None)
    env = json.loads(amended)
    env["data"] = {"protocol_version": "9", "protocol_sha256": "0" * 64, "icf_version": "1.0", "protocol": protocol}
    insert_row(store, 0, genesis, state=json.dumps(env, sort_keys=True).encode(), stream_position=study_length + 1,
               event_id="forged-amend")
    r = run("deviations")
    assert r.exit_code == 1 and r.stdout == ""


# -- finding 2: derived tables are a cache, never shown as verified --------------------------------


def test_edited_projections_and_checkpoints_never_reach_the_inspector(trial: Trial, keys: Keys, run: Cli,
                                                                     tmp_path: Path) -> None:
    ids = scenario(trial, keys)
    make_checkpoint(run, keys, tmp_path / "cp.txt")
    pristine = inspector_outputs(run, tmp_path, ids["sae"])
    assert all(code == 0 for code, _ in pristine.values()), pristine
    assert "grade 4" in pristine["show"][1] and "8.4" in pristine["show-1"][1]
    store = trial.store
    assert run("rebuild").exit_code == 0
    Projections(store).catch_up()
    p, a = store.table("proj_participants"), store.table("proj_audit")
    st = json.loads(store.fetch(f"SELECT state FROM {p} WHERE participant = ?", ("S01-001",))[0]["state"])
    st["labs"][0]["value"] = 5.0
    store.execute_raw(f"UPDATE {p} SET state = ? WHERE participant = ?", (json.dumps(st), "S01-001"))
    store.execute_raw(f"UPDATE {a} SET user_name = ?, user_id = ?", ("Mallory", "mallory"))
    store.execute_raw(f"DELETE FROM {store.table('proj_deviations')}")
    store.execute_raw(f"UPDATE {store.table('proj_summary')} SET value = ?", ("0",))
    # hide the grade-4 serious AE: forget it and move the tracked position past it
    store.execute_raw(f"DELETE FROM {a} WHERE event_id = ?", (ids["sae"],))
    store.execute_raw(f"UPDATE {store.table(store.backend.tracking_table)} SET notification_id = notification_id + 1000")
    after = inspector_outputs(run, tmp_path, ids["sae"])
    assert after == pristine
    assert "Mallory" not in after["audit"][1]
    # A fake stored checkpoint is a tampered cache: detected and named, never shown, never a crash.
    store.execute_raw(f"INSERT INTO {store.table('merkle_checkpoints')} (tree_size, root, note) VALUES (?, ?, ?)",
                      (3, b"\x00" * 32, "fake checkpoint\n"))
    for args in (("report", "--out", str(tmp_path / "r.html")), ("prove", "inclusion", ids["sae"])):
        r = run(*args)
        assert r.exit_code == 1 and "merkle_checkpoints" in r.stderr and "fake" not in r.stdout, args
    page = (tmp_path / "r.html").read_text()  # the report says FAILED and shows nothing from the ledger
    assert "FAILED" in page and "merkle_checkpoints" in page and "VERIFIED" not in page and "S01-" not in page
    cached = run("show", "S01-001", "--cached")
    assert "NOT VERIFIED" in cached.stderr and "5.0" in cached.stdout  # the fast path shows the cache, and says so


# -- finding 3: --since-checkpoint takes no boundary from a writable table ---------------------------


def test_since_checkpoint_sees_a_deleted_boundary_and_a_fork(trial: Trial, keys: Keys, run: Cli,
                                                             tmp_path: Path) -> None:
    scenario(trial, keys)
    cp = tmp_path / "cp.txt"
    make_checkpoint(run, keys, cp)
    store = as_owner(trial.store)
    rows = all_rows(store)
    delete_row(store, rows[-1].position)  # the checkpoint's last event
    lab(Trial(store), keys)               # a fork appended in its place
    # Remap the stored leaf table so leaf size-1 names an earlier, genuine row (the old code's boundary).
    leaves = store.table("merkle_leaves")
    copy = store.table("merkle_leaves_copy")
    store.execute_raw(f"CREATE TABLE {copy} AS SELECT * FROM {leaves}")
    store.execute_raw(f"DROP TABLE {leaves}")
    store.execute_raw(f"ALTER TABLE {copy} RENAME TO merkle_leaves")
    size = int(cp.read_text().split("\n")[1])
    store.execute_raw(f"UPDATE {leaves} SET position = ? WHERE leaf_index = ?", (rows[-2].position, size - 1))
    r = run("verify", "--checkpoint", str(cp), "--since-checkpoint")
    assert r.exit_code == 1 and "checkpoint's root" in r.stderr
    assert run("verify", "--checkpoint", str(cp)).exit_code == 1


# -- finding 4: the registry is bound by the chain -----------------------------------------------------


def test_deleted_revocation_admits_no_append_and_fails_since_mode(trial: Trial, keys: Keys, run: Cli,
                                                                  tmp_path: Path) -> None:
    scenario(trial, keys)
    trial.append(Command("SignerRevoked", None, {"user_id": "lab1"}, reason="left the site"), keys.signers["admin"])
    lab(trial, keys, user="inv1")
    lab(trial, keys, user="inv1")
    cp = tmp_path / "cp.txt"
    make_checkpoint(run, keys, cp)
    store = as_owner(trial.store)
    revocation = next(r for r in all_rows(store) if r.type == "SignerRevoked")
    delete_row(store, revocation.position)
    before = event_count(run.db)
    refused = outsider_append(run, keys, "lab1")
    assert refused.exit_code == 3 and "registry" in refused.stderr and event_count(run.db) == before
    assert run("verify", "--checkpoint", str(cp), "--since-checkpoint").exit_code == 1
    assert run("verify").exit_code == 1


def test_swapped_registry_positions_admit_no_append(trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> None:
    scenario(trial, keys)
    trial.append(Command("SignerRevoked", None, {"user_id": "lab1"}, reason="left the site"), keys.signers["admin"])
    lab(trial, keys, user="inv1")
    cp = tmp_path / "cp.txt"
    make_checkpoint(run, keys, cp)
    store = as_owner(trial.store)
    rows = all_rows(store)
    registration = next(r for r in rows if r.type == "SignerRegistered" and b'"user_id":"lab1"' in r.state)
    revocation = next(r for r in rows if r.type == "SignerRevoked")
    set_stream_position(store, registration.position, -100)
    set_stream_position(store, revocation.position, registration.stream_position)
    set_stream_position(store, registration.position, revocation.stream_position)
    before = event_count(run.db)
    refused = outsider_append(run, keys, "lab1")
    assert refused.exit_code == 3 and "registry" in refused.stderr and event_count(run.db) == before
    assert run("verify", "--checkpoint", str(cp), "--since-checkpoint").exit_code == 1
    assert run("verify").exit_code == 1
    assert run("signer", "list").exit_code == 1


def test_the_writer_still_appends_on_an_intact_ledger(trial: Trial, keys: Keys, run: Cli) -> None:
    scenario(trial, keys)
    trial.append(Command("SignerRevoked", None, {"user_id": "lab1"}, reason="left the site"), keys.signers["admin"])
    assert outsider_append(run, keys, "lab1").exit_code == 3  # revoked, refused as before
    ok = run("append", "LabResultRecorded", "--participant", "S01-001", "--data", json.dumps(LAB),
             "--occurred-at", "2010-09-02T08:00:00+08:00", "--key", str(keys.path("inv1")))
    assert ok.exit_code == 0, ok.output
    assert run("verify").exit_code == 0


# -- NUL is refused at the door -------------------------------------------------------------------------


def test_nul_in_any_text_field_is_refused(trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> None:
    scenario(trial, keys)
    before = event_count(run.db)
    key = ("--key", str(keys.path("inv1")))
    cases = [
        ("append", "LabResultRecorded", "--participant", "S01-001", "--data",
         json.dumps({**LAB, "unit": "mmol\u0000/L"}), *key),
        ("append", "LabResultRecorded", "--participant", "S01-001", "--data",
         json.dumps({**LAB, "value": "neg\u0000ative"}), *key),
        ("append", "ParticipantRegistered", "--participant", "S01-\u0000009", "--data",
         json.dumps({"site": "S01", "sex": "F", "birth_year": 1970}), *key),
        ("append", "ParticipantWithdrawn", "--participant", "S01-001", "--reason", "moved\u0000away", *key),
    ]
    for args in cases:
        r = run(*args)
        assert r.exit_code == 3 and "NUL" in r.stderr, (args, r.output)
    jsonl = tmp_path / "nul.jsonl"
    visit = {"type": "VisitCompleted", "participant": "S01-001", "occurred_at": "2010-09-02T08:00:00+08:00"}
    # The importer skips the per-field scan for a line without a \u0000 escape: each spelling must still be seen.
    for line in (json.dumps({**visit, "data": {"visit": "D\u000030"}}),
                 json.dumps({**visit, "data": {"visit\u0000": "D30"}}),
                 json.dumps({**visit, "data": {"visit": "D30"}, "reason": "late\u0000"}),
                 json.dumps({**visit, "data": {"visit": "D30", "extra": [["x\u0000"]]}})):
        jsonl.write_text(line + "\n")
        r = run("import", str(jsonl), *key)
        assert r.exit_code == 3 and "NUL" in r.stderr and "line 1" in r.stderr, (line, r.output)
    assert event_count(run.db) == before
    assert run("verify").exit_code == 0 and run("audit").exit_code == 0


def test_nul_in_init_is_refused_and_creates_nothing(db: str, keys: Keys, tmp_path: Path) -> None:
    from domain.protocol import bundled_protocol_path

    run = Cli(db)
    r = run("init", "--protocol", str(bundled_protocol_path()), "--study-id", "MSC\u0000T2DM", "--admin-id", "admin",
            "--admin-name", "Ada", "--key", str(keys.path("admin")), env={"TRIAL_LEDGER_PASSPHRASE": PASSPHRASE})
    assert r.exit_code == 3 and "NUL" in r.stderr
    if not db.startswith("postgres"):
        assert not Path(db).exists()  # nothing written, not even the file


def test_reads_never_break_on_a_nul_already_stored(trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> None:
    """A ledger written before the door refused NUL still reads: NUL sits escaped inside the signed bytes."""
    ids = scenario(trial, keys)
    env = trial.decide([Command("LabResultRecorded", "S01-001", LAB, occurred_at="2010-09-02T08:00:00+08:00",
                                reason=None)], keys.signers["lab1"])[0]
    nul = env.model_copy(update={"data": {**env.data, "unit": "mmol\u0000/L"}, "reason": "old\u0000entry"})
    trial.store.append([nul], keys.signers["lab1"])
    make_checkpoint(run, keys, tmp_path / "cp.txt")
    assert run("verify").exit_code == 0
    for name, (code, _text) in inspector_outputs(run, tmp_path, ids["sae"]).items():
        assert code == 0, name


def test_a_row_changed_after_the_verify_pass_stops_every_streamed_output(trial: Trial, keys: Keys,
                                                                          tmp_path: Path) -> None:
    """Report, ODM and CSV read the log back after verifying it: a row rewritten in between (its hash made
    consistent, so only the verified pass's binding can tell) stops the output with IntegrityFailure."""
    import io

    import pytest

    from ledger.chain import link_hash
    from ledger.errors import IntegrityFailure
    from projections.log_source import load
    from projections.odm import write_odm
    from projections.package import write_audit_csv
    from projections.report import write as write_report
    from tests.attack import events, pos_col

    ids = scenario(trial, keys)
    log = load(trial.store)
    store = as_owner(trial.store)
    real = next(r for r in all_rows(store) if r.event_id == ids["lab S01-002"])
    forged = forged_state(real, data={"value": 666.0})
    store.execute_raw(f"UPDATE {events(store)} SET state = ?, hash = ? WHERE {pos_col(store)} = ?",
                      (forged, link_hash(forged, real.prev_hash), real.position))
    for write in (write_report, write_odm, write_audit_csv):
        out = io.StringIO()
        with pytest.raises(IntegrityFailure):
            write(log, out)  # type: ignore[operator]
        assert "666" not in out.getvalue(), write


def test_a_failed_report_or_export_leaves_no_partial_file(trial: Trial, keys: Keys, run: Cli,
                                                           tmp_path: Path) -> None:
    """Outputs are written to a temporary file renamed only on success: a failure leaves the FAILED page
    (report) or nothing (exports), and no temporary file."""
    from tests.attack import events, pos_col

    ids = scenario(trial, keys)
    out = tmp_path / "r.html"
    assert run("report", "--out", str(out)).exit_code == 0
    store = as_owner(trial.store)
    real = next(r for r in all_rows(store) if r.event_id == ids["lab S01-002"])
    store.execute_raw(f"UPDATE {events(store)} SET state = ? WHERE {pos_col(store)} = ?",
                      (forged_state(real, data={"value": 666.0}), real.position))
    assert run("export", "--format", "odm", "--out", str(tmp_path / "o.xml")).exit_code == 1
    assert not (tmp_path / "o.xml").exists()
    r = run("report", "--out", str(out))
    assert r.exit_code == 1 and "FAILED" in out.read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


@pytest.mark.parametrize("column", ["signature", "originator_version", "event_id", "key_id"])
def test_a_header_column_changed_after_the_verify_pass_fails_the_read_back(trial: Trial, keys: Keys,
                                                                            column: str) -> None:
    """Only ``state`` is signed; the header columns are copies verify checked. A copy changed between the
    verify pass and the read-back (stream position, event id, key id, or the signature a package exports)
    must fail both the stream read and the global replay, never be shown."""
    from domain.signers import SignerRegistry
    from ledger.errors import IntegrityFailure
    from ledger.verified_store import VerifiedStore
    from tests.attack import events, pos_col

    ids = scenario(trial, keys)
    vstore = VerifiedStore.open(trial.store, SignerRegistry(), jobs=1)
    store = as_owner(trial.store)
    real = next(r for r in all_rows(store) if r.event_id == ids["lab S01-002"])
    value = {"signature": bytes(64), "originator_version": real.stream_position + 1000,
             "event_id": "00000000-0000-4000-8000-000000000000", "key_id": "k" * 16}[column]
    store.execute_raw(f"UPDATE {events(store)} SET {column} = ? WHERE {pos_col(store)} = ?", (value, real.position))
    with pytest.raises(IntegrityFailure):
        vstore.stream_records(real.stream)
    with pytest.raises(IntegrityFailure):
        list(vstore.records())
