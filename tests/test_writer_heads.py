"""Writer heads (domain/registry_check.py): the writer's registry check starts at a signed writer head,
and a tampered registry is still refused (SQLite and PostgreSQL); the key prefetch and lazy commands of the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domain import registry_check
from domain.service import Command, Trial
from domain.signers import STUDY_STREAM
from ledger.errors import KeyFileError
from ledger.store import Store
from tests.attack import all_rows, delete_row, events, pos_col, scenario
from tests.conftest import PASSPHRASE, Cli, Keys, as_owner, event_count

LAB = {"analyte": "FBG", "value": 7.7, "unit": "mmol/L"}


def lab(run: Cli, keys: Keys, user: str = "inv1") -> object:
    return run("append", "LabResultRecorded", "--participant", "S01-001", "--data", json.dumps(LAB),
               "--occurred-at", "2010-09-02T08:00:00+08:00", "--key", str(keys.path(user)))


def newest_head(store: Store) -> registry_check.WriterHead | None:
    heads = registry_check._newest_writer_heads(store)
    return heads[0] if heads else None


def revoke_lab1_then_write(trial: Trial, keys: Keys, run: Cli) -> None:
    scenario(trial, keys)
    trial.append(Command("SignerRevoked", None, {"user_id": "lab1"}, reason="left the site"), keys.signers["admin"])
    assert lab(run, keys).exit_code == 0
    assert lab(run, keys).exit_code == 0


def test_every_append_and_import_leaves_a_writer_head_at_the_head(trial: Trial, keys: Keys, run: Cli,
                                                                   tmp_path: Path) -> None:
    scenario(trial, keys)
    assert lab(run, keys).exit_code == 0
    head = newest_head(trial.store)
    assert head is not None and head.position == trial.store.head_position()
    rows = sorted(trial.store.stream_records(STUDY_STREAM), key=lambda r: r.position)
    assert registry_check._trusted_writer_head(trial.store, rows) == head
    assert head.study_length == len(rows) and head.study_position == rows[-1].position
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"type": "LabResultRecorded", "participant": "S01-001", "data": LAB,
                                         "occurred_at": "2010-09-02T08:00:00+08:00"}) + "\n" for _ in range(3)))
    assert run("import", str(jsonl), "--key", str(keys.path("inv1"))).exit_code == 0
    head = newest_head(trial.store)
    assert head is not None and head.position == trial.store.head_position()
    assert lab(run, keys).exit_code == 0 and run("verify").exit_code == 0


def test_deleted_revocation_is_refused_even_with_the_writer_heads_deleted(trial: Trial, keys: Keys,
                                                                          run: Cli) -> None:
    revoke_lab1_then_write(trial, keys, run)
    store = as_owner(trial.store)
    revocation = next(r for r in all_rows(store) if r.type == "SignerRevoked")
    delete_row(store, revocation.position)
    before = event_count(run.db)
    refused = lab(run, keys, "lab1")  # the heads after it count one study row more than there are
    assert refused.exit_code == 3 and "registry" in refused.stderr
    store.execute_raw(f"DELETE FROM {store.table(registry_check.HEADS_TABLE)}")
    refused = lab(run, keys, "lab1")  # no head: the walk from the newest study row meets the broken link
    assert refused.exit_code == 3 and "registry" in refused.stderr and event_count(run.db) == before


def test_relabelled_revocation_is_refused(trial: Trial, keys: Keys, run: Cli) -> None:
    revoke_lab1_then_write(trial, keys, run)
    store = as_owner(trial.store)
    revocation = next(r for r in all_rows(store) if r.type == "SignerRevoked")
    store.execute_raw(f"UPDATE {events(store)} SET originator_id = ?, originator_version = ? "
                      f"WHERE {pos_col(store)} = ?", ("S01-001", 999, revocation.position))
    refused = lab(run, keys, "lab1")
    assert refused.exit_code == 3 and "registry" in refused.stderr


def test_a_forged_writer_head_is_ignored(trial: Trial, keys: Keys, run: Cli) -> None:
    revoke_lab1_then_write(trial, keys, run)
    store = as_owner(trial.store)
    real = newest_head(store)
    assert real is not None
    revocation = next(r for r in all_rows(store) if r.type == "SignerRevoked")
    delete_row(store, revocation.position)
    store.execute_raw(f"DELETE FROM {store.table(registry_check.HEADS_TABLE)}")
    study = sorted(store.stream_records(STUDY_STREAM), key=lambda r: r.position)
    # A head stating one study row fewer, at the real head, "signed" by inv1 without inv1's key.
    store.execute_raw(f"INSERT INTO {store.table(registry_check.HEADS_TABLE)} (position, hash, study_length, "
                      "study_position, key_id, signature) VALUES (?, ?, ?, ?, ?, ?)",
                      (real.position, real.hash, real.study_length - 1, study[-1].position,
                       keys.signers["inv1"].key_id, b"\x00" * 64))
    refused = lab(run, keys, "lab1")
    assert refused.exit_code == 3 and "registry" in refused.stderr
    assert registry_check._trusted_writer_head(store, study) is None  # the signature is what it lacks


def test_a_ledger_without_the_table_still_appends_and_gets_it(trial: Trial, keys: Keys, run: Cli) -> None:
    scenario(trial, keys)
    trial.store.execute_raw(f"DROP TABLE {trial.store.table(registry_check.HEADS_TABLE)}")
    assert lab(run, keys).exit_code == 0
    head = newest_head(trial.store)
    assert head is not None and head.position == trial.store.head_position()


# -- the CLI's start-up ---------------------------------------------------------------------------------


def test_prefetched_key_is_used_only_for_the_same_inputs(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli import prefetch

    path = keys.path("inv1")
    blob = path.read_bytes()
    monkeypatch.setenv(prefetch.PASSPHRASE_ENV, PASSPHRASE)
    prefetch.start(["append", "X", "--key", str(path)])
    signer = prefetch.take(path, PASSPHRASE, blob)
    assert signer is not None and signer.key_id == keys.signers["inv1"].key_id
    assert prefetch.take(path, PASSPHRASE, blob) is None  # taken once
    prefetch.start(["append", "X", f"--key={path}"])
    assert prefetch.take(path, "another passphrase", blob) is None  # not what load_signer would use
    monkeypatch.setenv(prefetch.PASSPHRASE_ENV, "wrong")
    prefetch.start(["append", "X", "--key", str(path)])
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        prefetch.take(path, "wrong", blob)
    prefetch.start(["append", "--key", str(path), "--key", str(path)])  # ambiguous: nothing started
    assert prefetch._pending is None


def test_every_lazy_command_resolves_to_itself() -> None:
    import click

    from cli.main import cli

    ctx = click.Context(cli)
    for name in cli.lazy:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
    assert set(cli.lazy) <= set(cli.list_commands(ctx))
