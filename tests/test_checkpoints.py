"""Checkpoints, proofs and checkpoint-based verification (SPEC §5.2–5.4), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ledger.errors import PositionTaken

from domain.protocol import bundled_protocol_path, load_protocol
from domain.service import Command, Trial
from ledger.keys import fingerprint, generate
from ledger.proofs import ProofError, verify_bundle
from ledger.store import Store
from tests.conftest import Cli, Keys, as_owner, register

LAB = {"analyte": "FBG", "value": 8.0, "unit": "mmol/L"}


def add_labs(trial: Trial, keys: Keys, n: int, participant: str = "S01-001") -> None:
    for i in range(n):
        trial.append(Command("LabResultRecorded", participant, {**LAB, "value": 7 + i / 10},
                             occurred_at="2010-09-02T08:00:00+08:00"), keys.signers["lab1"])


def make_checkpoint(run: Cli, keys: Keys, out: Path) -> None:
    r = run("checkpoint", "--key", str(keys.path("admin")), "--out", str(out))
    assert r.exit_code == 0, r.output


def test_checkpoint_note_format(trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> None:
    register(trial, keys, "S01-001")
    make_checkpoint(run, keys, tmp_path / "cp.txt")
    lines = (tmp_path / "cp.txt").read_text().split("\n")
    assert lines[0].startswith("trial-ledger/MSC-T2DM/")
    assert lines[1] == str(trial.store.count())
    assert lines[3] == "" and lines[4].startswith("\u2014 " + lines[0] + " ")
    refused = run("checkpoint", "--key", str(keys.path("inv1")))
    assert refused.exit_code == 3 and "root key" in refused.stderr


def test_extend_truncate_and_since(trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> None:
    register(trial, keys, "S01-001")
    add_labs(trial, keys, 5)
    cp = tmp_path / "cp.txt"
    make_checkpoint(run, keys, cp)
    add_labs(trial, keys, 10)
    assert run("verify", "--checkpoint", str(cp)).exit_code == 0
    since = run.json("verify", "--checkpoint", str(cp), "--since-checkpoint")
    assert since["ok"] and since["events"] == 10  # only the new events were verified
    full = run.json("verify", "--checkpoint", str(cp))
    assert since["tree_root"] == full["tree_root"] and full["events"] == trial.store.count()
    # delete the newest stored row: the chain alone cannot see it, the checkpoint can
    store = as_owner(trial.store)
    newest = list(store.records())[-1]
    assert run("verify").exit_code == 0
    cp2 = tmp_path / "cp2.txt"
    make_checkpoint(run, keys, cp2)
    store.execute_raw(f"DELETE FROM {store._qualified} WHERE event_id = ?", (newest.event_id,))
    assert run("verify").exit_code == 0  # documented limit without a checkpoint
    r = run("verify", "--checkpoint", str(cp2))
    assert r.exit_code == 1 and "truncated" in r.stderr
    r = run("verify", "--checkpoint", str(cp2), "--since-checkpoint")
    assert r.exit_code == 1 and "truncated" in r.stderr, r.stderr


def test_rewrite_under_a_new_root_is_caught(keys: Keys, tmp_path: Path, db: str) -> None:
    """The attacker rebuilds the whole database from scratch with the same events under a new root key."""
    from tests.conftest import initialise

    trial = initialise(db, keys)
    register(trial, keys, "S01-001")
    add_labs(trial, keys, 3)
    run = Cli(db)
    cp = tmp_path / "cp.txt"
    make_checkpoint(run, keys, cp)
    events = [r.envelope() for r in trial.store.records() if not r.stream.startswith("@")]
    trial.store.close()

    other_db = db.replace("ledger.db", "forged.db") if "postgres" not in db else db + "_forged"
    forged = Trial(Store(other_db))
    new_root = generate()
    forged.initialise(load_protocol(bundled_protocol_path()), study_id="MSC-T2DM", admin_id="admin",
                      admin_name="Ada Admin", signer=new_root)
    for user in ("inv1", "lab1"):
        forged.append(Command("SignerRegistered", None, {
            "user_id": user, "name": f"Name of {user}", "role": "investigator" if user == "inv1" else "lab",
            "public_key": keys.signers[user].public_b64, "valid_from": "2010-01-01T00:00:00+00:00"}), new_root)
    for env in events:
        forged.append(Command(env.type, env.stream, env.data, occurred_at=env.occurred_at),
                      keys.signers[env.author])
    assert Cli(other_db)("verify").exit_code == 0
    r = Cli(other_db)("verify", "--checkpoint", str(cp))
    assert r.exit_code == 1 and ("rewritten" in r.stderr or "checkpoint" in r.stderr)
    r = Cli(other_db)("verify", "--checkpoint", str(cp), "--since-checkpoint")
    assert r.exit_code == 1
    forged.store.close()


def test_inclusion_bundle_verifies_offline_and_any_changed_byte_fails(trial: Trial, keys: Keys, run: Cli,
                                                                      tmp_path: Path) -> None:
    register(trial, keys, "S01-001")
    add_labs(trial, keys, 6)
    target = list(trial.store.records())[7]
    make_checkpoint(run, keys, tmp_path / "cp.txt")
    bundle = tmp_path / "inc.json"
    assert run("prove", "inclusion", target.event_id, "--out", str(bundle)).exit_code == 0
    pub = f"{keys.path('admin')}.pub"
    ok = Cli(str(tmp_path / "no-database-here.db"))("verify-proof", str(bundle), "--public-key", pub)
    assert ok.exit_code == 0 and target.event_id in ok.stdout
    blob = bundle.read_bytes()
    public = keys.signers["admin"].public_raw
    verify_bundle(blob, public)
    for i in range(len(blob)):
        for bit in (0x01, 0x20):
            changed = bytearray(blob)
            changed[i] ^= bit
            with pytest.raises(ProofError):
                verify_bundle(bytes(changed), public)
    broken = bytearray(blob)
    broken[len(blob) // 2] ^= 0x01
    bundle.write_bytes(bytes(broken))
    bad = Cli(str(tmp_path / "x.db"))("verify-proof", str(bundle), "--public-key", pub)
    assert bad.exit_code == 1 and "FAIL" in bad.stderr
    assert verify_bundle(blob, keys.signers["admin"].public_raw)
    with pytest.raises(ProofError):
        verify_bundle(blob, keys.signers["inv1"].public_raw)


def test_consistency_bundle_needs_only_the_two_checkpoints(trial: Trial, keys: Keys, run: Cli,
                                                          tmp_path: Path) -> None:
    register(trial, keys, "S01-001")
    make_checkpoint(run, keys, tmp_path / "old.txt")
    add_labs(trial, keys, 9)
    make_checkpoint(run, keys, tmp_path / "new.txt")
    assert run("prove", "consistency", "--old", str(tmp_path / "old.txt"), "--out",
               str(tmp_path / "c.json")).exit_code == 0
    bundle = json.loads((tmp_path / "c.json").read_text())
    assert bundle["new_checkpoint"] == (tmp_path / "new.txt").read_text()
    r = Cli(str(tmp_path / "none.db"))("verify-proof", str(tmp_path / "c.json"), "--public-key",
                                       f"{keys.path('admin')}.pub")
    assert r.exit_code == 0 and "extends" in r.stdout


def test_since_mode_never_reads_the_stored_tree(trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> None:
    register(trial, keys, "S01-001")
    add_labs(trial, keys, 4)
    cp = tmp_path / "cp.txt"
    make_checkpoint(run, keys, cp)
    store = as_owner(trial.store)
    store.execute_raw(f"UPDATE {store.table('merkle_nodes')} SET hash = ?", (b"\x00" * 32,))
    store.execute_raw(f"DELETE FROM {store.table('merkle_leaves')}")
    # The prefix's leaves are recomputed from the rows, so the corrupted cache changes nothing.
    assert run("verify", "--checkpoint", str(cp), "--since-checkpoint").exit_code == 0
    assert run("verify", "--checkpoint", str(cp)).exit_code == 0  # the full check never trusts the cache
    assert run("rebuild").exit_code == 0
    assert run("verify", "--checkpoint", str(cp), "--since-checkpoint").exit_code == 0


@pytest.mark.postgres
def test_postgres_id_gaps_do_not_break_the_log(pg_url: str, keys: Keys, tmp_path: Path) -> None:
    from tests.conftest import initialise

    trial = initialise(pg_url, keys)
    register(trial, keys, "S01-001")
    stale = trial.decide([Command("LabResultRecorded", "S01-001", LAB)], keys.signers["lab1"])
    add_labs(trial, keys, 1)
    for _ in range(3):  # rolled-back inserts consume notification ids
        with pytest.raises(PositionTaken):
            trial.store.append(stale, keys.signers["lab1"])
    add_labs(trial, keys, 2)
    positions = [r.position for r in trial.store.records()]
    assert positions != list(range(1, len(positions) + 1)), "expected gaps in notification ids"
    run = Cli(pg_url)
    cp = tmp_path / "cp.txt"
    make_checkpoint(run, keys, cp)
    add_labs(trial, keys, 2)
    assert run("verify", "--checkpoint", str(cp)).exit_code == 0
    assert run("verify", "--checkpoint", str(cp), "--since-checkpoint").exit_code == 0
    target = list(trial.store.records())[-3]
    make_checkpoint(run, keys, tmp_path / "cp2.txt")
    assert run("prove", "inclusion", target.event_id, "--out", str(tmp_path / "i.json")).exit_code == 0
    assert Cli(str(tmp_path / "x.db"))("verify-proof", str(tmp_path / "i.json"), "--public-key",
                                       f"{keys.path('admin')}.pub").exit_code == 0
    assert fingerprint(keys.signers["admin"].public_raw) in run("verify").stdout
