"""A log identity no other ledger shares, and checkpoints and proof bundles that fail cleanly (issue 16)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from domain.service import Command, Trial
from ledger.checkpoint import log_origin
from ledger.proofs import encode
from ledger.store import Store
from tests.conftest import PG_DSN, Cli, Keys, initialise, register

LAB = {"analyte": "FBG", "value": 8.0, "unit": "mmol/L"}


def add_labs(trial: Trial, keys: Keys, n: int) -> None:
    for i in range(n):
        trial.append(Command("LabResultRecorded", "S01-001", {**LAB, "value": 7 + i / 10},
                             occurred_at="2010-09-02T08:00:00+08:00"), keys.signers["lab1"])


def checkpoint(run: Cli, keys: Keys, out: Path) -> str:
    r = run("checkpoint", "--key", str(keys.path("admin")), "--out", str(out))
    assert r.exit_code == 0, r.output
    return out.read_text()


def fails_in_one_line(result) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "internal error" not in result.stderr
    assert result.stderr.startswith("FAIL: ") and len(result.stderr.strip().splitlines()) <= 2, result.stderr


@pytest.fixture
def two_ledgers(db: str, keys: Keys) -> tuple[Trial, Trial]:
    """Two ledgers of one study under one sponsor key: until now they shared a checkpoint origin."""
    other = db.replace("ledger.db", "other.db") if "postgres" not in db else db + "_other"
    a, b = initialise(db, keys), initialise(other, keys)
    for t in (a, b):
        register(t, keys, "S01-001")
        add_labs(t, keys, 3)
    yield a, b
    a.store.close()
    b.store.close()
    if "postgres" in db:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{other.rsplit("schema=", 1)[1]}" CASCADE')


def test_origin_is_derived_from_the_genesis_event(two_ledgers: tuple[Trial, Trial], keys: Keys,
                                                  tmp_path: Path) -> None:
    a, b = two_ledgers
    note_a = checkpoint(Cli(a.store.db), keys, tmp_path / "a.txt")
    note_b = checkpoint(Cli(b.store.db), keys, tmp_path / "b.txt")
    origin_a, origin_b = note_a.split("\n")[0], note_b.split("\n")[0]
    genesis_a = next(a.store.records())
    assert origin_a == log_origin("MSC-T2DM", genesis_a.hash) == f"trial-ledger/MSC-T2DM/{genesis_a.hash[:8].hex()}"
    assert origin_a != origin_b
    assert Cli(a.store.db).json("verify")["origin"] == origin_a  # type: ignore[index]


def test_verify_refuses_another_logs_checkpoint(two_ledgers: tuple[Trial, Trial], keys: Keys,
                                                tmp_path: Path) -> None:
    a, b = two_ledgers
    checkpoint(Cli(b.store.db), keys, tmp_path / "b.txt")
    checkpoint(Cli(a.store.db), keys, tmp_path / "a.txt")
    run = Cli(a.store.db)
    assert run("verify", "--checkpoint", str(tmp_path / "a.txt")).exit_code == 0
    for extra in ((), ("--since-checkpoint",)):
        r = run.runner.invoke(run_cli(), ["--db", a.store.db, "--json", "verify", "--checkpoint",
                                          str(tmp_path / "b.txt"), *extra],
                              env={"TRIAL_LEDGER_PASSPHRASE": "x"}, obj={}, catch_exceptions=False)
        assert r.exit_code == 1
        reasons = [f["reason"] for f in json.loads(r.stdout)["findings"]]
        assert any("not of this one" in reason for reason in reasons), reasons


def test_verify_proof_refuses_another_logs_bundle(two_ledgers: tuple[Trial, Trial], keys: Keys,
                                                  tmp_path: Path) -> None:
    a, b = two_ledgers
    origin_a = checkpoint(Cli(a.store.db), keys, tmp_path / "a.txt").split("\n")[0]
    origin_b = checkpoint(Cli(b.store.db), keys, tmp_path / "b.txt").split("\n")[0]
    target = list(b.store.records())[-1]
    assert Cli(b.store.db)("prove", "inclusion", target.event_id, "--out", str(tmp_path / "i.json")).exit_code == 0
    offline = Cli(str(tmp_path / "no-db.db"))
    pub = f"{keys.path('admin')}.pub"
    assert offline("verify-proof", str(tmp_path / "i.json"), "--public-key", pub, "--origin", origin_b).exit_code == 0
    r = offline("verify-proof", str(tmp_path / "i.json"), "--public-key", pub, "--origin", origin_a)
    fails_in_one_line(r)
    assert origin_b in r.stderr


def run_cli():  # type: ignore[no-untyped-def]
    from cli.main import cli
    return cli


# -- malformed numbers, sizes and hashes: exit 1 with a reason, never 4 ------------------------

BAD_SIZES = ["\u00b2", "\uff15", "\u0663", "-1", "+5", " 5", "05", "9" * 5000, "1e3", "NaN", "99999999999999999999"]


def _proved(trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> dict[str, object]:
    register(trial, keys, "S01-001")
    add_labs(trial, keys, 3)
    note = checkpoint(run, keys, tmp_path / "cp.txt")
    target = list(trial.store.records())[-2]
    assert run("prove", "inclusion", target.event_id, "--out", str(tmp_path / "i.json")).exit_code == 0
    return {"note": note, "bundle": json.loads((tmp_path / "i.json").read_bytes())}


@pytest.fixture
def proved(trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> dict[str, object]:
    """A checkpoint and an inclusion bundle, on each back end."""
    return _proved(trial, keys, run, tmp_path)


@pytest.fixture
def bundle_only(sqlite_db: str, keys: Keys, tmp_path: Path) -> Iterator[dict[str, object]]:
    """The same, for the offline bundle checks (no database is involved, so one back end is enough)."""
    trial = initialise(sqlite_db, keys)
    yield _proved(trial, keys, Cli(sqlite_db), tmp_path)
    trial.store.close()


@pytest.mark.parametrize("size", BAD_SIZES)
def test_a_malformed_checkpoint_size_is_a_verification_failure(proved: dict[str, object], run: Cli,
                                                               tmp_path: Path, keys: Keys, size: str) -> None:
    note = str(proved["note"])
    lines = note.split("\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join([lines[0], size, *lines[2:]]))
    fails_in_one_line(run("verify", "--checkpoint", str(bad)))
    fails_in_one_line(run("verify", "--checkpoint", str(bad), "--since-checkpoint"))
    bundle = dict(proved["bundle"])  # type: ignore[call-overload]
    bundle["checkpoint"] = bad.read_text()
    (tmp_path / "b.json").write_bytes(encode(bundle))
    fails_in_one_line(Cli(str(tmp_path / "none.db"))("verify-proof", str(tmp_path / "b.json"), "--public-key",
                                                     f"{keys.path('admin')}.pub"))


RAW_VALUES = ["NaN", "Infinity", "-Infinity", "1" * 5000, "-" + "1" * 5000, "1e400", str(2**63)]
VALUES = [True, False, -1, 1.5, "3", None, [], {}]


@pytest.mark.parametrize("field", ["leaf_index", "tree_size"])
@pytest.mark.parametrize("value", RAW_VALUES + VALUES)
def test_a_malformed_number_in_a_bundle_is_a_verification_failure(bundle_only: dict[str, object], keys: Keys,
                                                                  tmp_path: Path, field: str, value: object) -> None:
    bundle = dict(bundle_only["bundle"])  # type: ignore[call-overload]
    if value in RAW_VALUES:  # not JSON an encoder would write: splice the text in
        bundle[field] = "@@"
        blob = encode(bundle).replace(b'"@@"', str(value).encode())
    else:
        bundle[field] = value
        blob = encode(bundle)
    (tmp_path / "b.json").write_bytes(blob)
    fails_in_one_line(Cli(str(tmp_path / "none.db"))("verify-proof", str(tmp_path / "b.json"), "--public-key",
                                                     f"{keys.path('admin')}.pub"))


@pytest.mark.parametrize("where", ["proof", "prev_hash"])
@pytest.mark.parametrize("hexed", ["", "00" * 31, "00" * 33, "00" * 5000])
def test_a_malformed_hash_in_a_bundle_is_a_verification_failure(bundle_only: dict[str, object], keys: Keys,
                                                                tmp_path: Path, where: str, hexed: str) -> None:
    bundle = json.loads(json.dumps(bundle_only["bundle"]))
    if where == "proof":
        bundle["proof"] = [hexed, *bundle["proof"][1:]]
    else:
        bundle["event"]["prev_hash"] = hexed
    (tmp_path / "b.json").write_bytes(encode(bundle))
    fails_in_one_line(Cli(str(tmp_path / "none.db"))("verify-proof", str(tmp_path / "b.json"), "--public-key",
                                                     f"{keys.path('admin')}.pub"))


def test_store_is_untouched_by_a_bad_checkpoint(proved: dict[str, object], run: Cli, tmp_path: Path,
                                                trial: Trial) -> None:
    before = trial.store.count()
    bad = tmp_path / "bad.txt"
    bad.write_text("trial-ledger/x\n\u00b2\nAAAA\n\n")
    fails_in_one_line(run("verify", "--checkpoint", str(bad)))
    assert Store(trial.store.db).count() == before
