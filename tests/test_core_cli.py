"""End to end through the CLI, on SQLite and PostgreSQL: keys, init, signers, append, verify, refusals."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.conftest import Cli, Keys, event_count


def _bootstrap(run: Cli, keys: Keys, tmp_path: Path) -> None:
    from domain.protocol import bundled_protocol_path

    r = run("init", "--protocol", str(bundled_protocol_path()), "--study-id", "MSC-T2DM",
            "--admin-id", "admin", "--admin-name", "Ada Admin", "--key", str(keys.path("admin")))
    assert r.exit_code == 0, r.output
    r = run("signer", "add", "--user-id", "inv1", "--name", "Dr Ivy", "--role", "investigator",
            "--public-key", f"{keys.path('inv1')}.pub", "--key", str(keys.path("admin")))
    assert r.exit_code == 0, r.output


def _inv(keys: Keys) -> tuple[str, str]:
    return ("--key", str(keys.path("inv1")))


def test_keygen_writes_0600_key_and_pub(tmp_path: Path) -> None:
    run = Cli(str(tmp_path / "unused.db"))
    out = tmp_path / "alice.key"
    r = run("keygen", "--user-id", "alice", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert (tmp_path / "alice.key.pub").read_text().split()[1] == "alice"
    assert "correct horse" not in r.output
    again = run("keygen", "--user-id", "alice", "--out", str(out))
    assert again.exit_code == 3 and "exists" in again.stderr


def test_append_read_back_and_verify(run: Cli, keys: Keys, tmp_path: Path) -> None:
    _bootstrap(run, keys, tmp_path)
    r = run("append", "ParticipantRegistered", "--participant", "S01-001",
            "--data", '{"site": "S01", "sex": "F", "birth_year": 1961}', *_inv(keys))
    assert r.exit_code == 0, r.output
    data_file = tmp_path / "lab.json"
    data_file.write_text('{"analyte": "FBG", "value": 8.4, "unit": "mmol/L"}')
    r = run("append", "LabResultRecorded", "--participant", "S01-001", "--data", f"@{data_file}",
            "--occurred-at", "2010-09-02T08:00:00+08:00", *_inv(keys))
    assert r.exit_code == 0, r.output

    from ledger.store import Store

    store = Store(run.db)
    envs = store.stream("S01-001")
    assert [e.type for e in envs] == ["ParticipantRegistered", "LabResultRecorded"]
    assert envs[1].data == {"analyte": "FBG", "value": 8.4, "unit": "mmol/L"}
    assert envs[1].occurred_at == "2010-09-02T08:00:00+08:00"
    assert envs[1].author == "inv1" and envs[1].meaning == "authorship"
    store.close()

    v = run("verify")
    assert v.exit_code == 0, v.output
    report = run.json("verify")
    assert report["ok"] and report["events"] == 4
    from ledger.keys import fingerprint

    assert report["root_fingerprint"] == fingerprint(keys.signers["admin"].public_raw)
    assert run("verify", "--expect-root", report["root_fingerprint"]).exit_code == 0
    wrong = run("verify", "--expect-root", "0" * 64)
    assert wrong.exit_code == 1 and "not the expected" in wrong.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("append", "LabResultRecorded", "--participant", "S01-001", "--data", "{not json"), "--data"),
        (("append", "LabResultRecorded", "--participant", "S01-001", "--data", "[1]"), "--data"),
        (("append", "LabResultRecorded", "--participant", "S01-001", "--data",
          '{"analyte": "FBG", "value": 8, "unit": "mmol/L", "extra": 1}'), "data.extra"),
        (("append", "NoSuchType", "--participant", "S01-001", "--data", "{}"), "unknown event type"),
        (("append", "LabResultRecorded", "--participant", "S01-404", "--data",
          '{"analyte": "FBG", "value": 8, "unit": "mmol/L"}'), "not registered"),
    ],
)
def test_malformed_input_is_refused_with_one_line(run: Cli, keys: Keys, tmp_path: Path,
                                                  args: tuple[str, ...], needle: str) -> None:
    _bootstrap(run, keys, tmp_path)
    run("append", "ParticipantRegistered", "--participant", "S01-001",
        "--data", '{"site": "S01", "sex": "F", "birth_year": 1961}', *_inv(keys))
    before = event_count(run.db)
    r = run(*args, *_inv(keys))
    assert r.exit_code == 3
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr
    assert "Traceback" not in r.output
    assert event_count(run.db) == before


def test_wrong_passphrase_is_refused(run: Cli, keys: Keys, tmp_path: Path) -> None:
    _bootstrap(run, keys, tmp_path)
    before = event_count(run.db)
    r = run("append", "ParticipantRegistered", "--participant", "S01-001",
            "--data", '{"site": "S01", "sex": "F", "birth_year": 1961}', *_inv(keys),
            env={"TRIAL_LEDGER_PASSPHRASE": "wrong"})
    assert r.exit_code == 3 and r.stderr.count("\n") == 1 and "passphrase" in r.stderr
    assert event_count(run.db) == before


def test_role_not_permitted_is_refused(run: Cli, keys: Keys, tmp_path: Path) -> None:
    _bootstrap(run, keys, tmp_path)
    r = run("signer", "add", "--user-id", "mon1", "--name", "Mo Monitor", "--role", "monitor",
            "--public-key", f"{keys.path('mon1')}.pub", "--key", str(keys.path("admin")))
    assert r.exit_code == 0
    run("append", "ParticipantRegistered", "--participant", "S01-001",
        "--data", '{"site": "S01", "sex": "F", "birth_year": 1961}', *_inv(keys))
    before = event_count(run.db)
    r = run("append", "LabResultRecorded", "--participant", "S01-001",
            "--data", '{"analyte": "FBG", "value": 8, "unit": "mmol/L"}', "--key", str(keys.path("mon1")))
    assert r.exit_code == 3 and "role monitor" in r.stderr and r.stderr.count("\n") == 1
    assert event_count(run.db) == before


def test_revoked_signer_cannot_append_but_old_events_verify(run: Cli, keys: Keys, tmp_path: Path) -> None:
    _bootstrap(run, keys, tmp_path)
    run("append", "ParticipantRegistered", "--participant", "S01-001",
        "--data", '{"site": "S01", "sex": "F", "birth_year": 1961}', *_inv(keys))
    r = run("signer", "revoke", "--user-id", "inv1", "--reason", "left the site", "--key", str(keys.path("admin")))
    assert r.exit_code == 0, r.output
    before = event_count(run.db)
    r = run("append", "ConsentSigned", "--participant", "S01-001",
            "--data", '{"icf_version": "1.0", "obtained_by": "inv1"}', *_inv(keys))
    assert r.exit_code == 3 and "revoked" in r.stderr and r.stderr.count("\n") == 1
    assert event_count(run.db) == before
    assert run("verify").exit_code == 0
    listing = run.json("signer", "list")
    assert any(s["user_id"] == "inv1" and s["revoked_at"] for s in listing)


def test_unregistered_key_and_missing_ledger(run: Cli, keys: Keys, tmp_path: Path) -> None:
    missing = Cli(str(tmp_path / "nope.db"))("verify")
    if not run.db.startswith("postgresql"):
        assert missing.exit_code == 2 and "no ledger" in missing.stderr
    _bootstrap(run, keys, tmp_path)
    before = event_count(run.db)
    r = run("append", "ParticipantRegistered", "--participant", "S01-001",
            "--data", '{"site": "S01", "sex": "F", "birth_year": 1961}', "--key", str(keys.path("outsider")))
    assert r.exit_code == 3 and "not registered" in r.stderr
    assert event_count(run.db) == before


def test_second_init_is_refused(run: Cli, keys: Keys, tmp_path: Path) -> None:
    _bootstrap(run, keys, tmp_path)
    from domain.protocol import bundled_protocol_path

    r = run("init", "--protocol", str(bundled_protocol_path()), "--study-id", "X", "--admin-id", "admin",
            "--admin-name", "A", "--key", str(keys.path("admin")))
    assert r.exit_code == 3 and "already initialised" in r.stderr


def test_json_output_of_signer_list_is_parseable(run: Cli, keys: Keys, tmp_path: Path) -> None:
    _bootstrap(run, keys, tmp_path)
    rows = run.json("signer", "list")
    assert {r["user_id"] for r in rows} == {"admin", "inv1"}
    assert json.dumps(rows)


def test_schema_prints_the_payload_models(tmp_path: Path) -> None:
    """`schema` is generated from the same pydantic models that check `append --data`."""
    from domain.events import CATALOGUE

    run = Cli(str(tmp_path / "never-created.db"))
    every = json.loads(run("schema").stdout)
    assert set(every) == set(CATALOGUE)
    lab = json.loads(run("schema", "LabResultRecorded").stdout)
    assert lab == every["LabResultRecorded"]
    assert lab["additionalProperties"] is False
    assert {"analyte", "value", "unit"} <= set(lab["required"])
    assert every["AdverseEventReported"]["properties"]["grade"]["maximum"] == 5
    r = run("schema", "NoSuchType")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "NoSuchType" in r.stderr
    assert not (tmp_path / "never-created.db").exists()
