"""A ledger with two witnesses (SPEC §9): checkpoints are cosigned, inspectors count cosignatures,
and a sponsor who rewrites the log under the same keys is refused by both witnesses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

import cli.proofs as cli_proofs
from cli.proofs import checkpoint_origin
from domain.service import Trial
from ledger.cosignature import vkey_for
from ledger.keys import generate
from ledger.witness.app import running
from ledger.witness.core import Witness
from ledger.witness.state import WitnessState
from tests.conftest import Cli, Keys, initialise, register


class Witnesses:
    def __init__(self, stack: ExitStack, tmp: Path, trusted: bytes):
        self.states = [tmp / "w1.db", tmp / "w2.db"]
        self.names = ["ethics.test/w1", "cro.test/w2"]
        self.objects: list[Witness] = []
        self.urls: list[str] = []
        self.trusted = trusted
        self.stack = stack

    def start(self, origin: str) -> None:
        for name, state_path in zip(self.names, self.states, strict=True):
            state = WitnessState(state_path)
            self.stack.callback(state.close)
            w = Witness(name, generate(), state, {origin: [self.trusted]})
            self.objects.append(w)
            self.urls.append(self.stack.enter_context(running(w)))

    @property
    def vkeys(self) -> list[str]:
        return [str(vkey_for(w.name, w.signer)) for w in self.objects]


def origin_of(trial: Trial) -> str:
    origin = checkpoint_origin(trial.store)  # the one place origins are made
    assert origin is not None
    return origin


def present_as(monkeypatch: pytest.MonkeyPatch, origin: str) -> None:
    """A forger's own software signs the rebuilt log's checkpoints under the original log's origin.

    The project's `checkpoint` derives the origin from the genesis event, so a rebuilt
    log gets a new one; claiming the old identity takes a forger's code, which the
    witnesses must still catch.
    """
    monkeypatch.setattr(cli_proofs, "checkpoint_origin", lambda store: origin)


@pytest.fixture
def sqlite_trial(sqlite_db: str, keys: Keys) -> Iterator[Trial]:
    t = initialise(sqlite_db, keys)
    yield t
    t.store.close()


@pytest.fixture
def witnesses(tmp_path: Path, keys: Keys, sqlite_trial: Trial) -> Iterator[Witnesses]:
    with ExitStack() as stack:
        ws = Witnesses(stack, tmp_path, keys.signers["admin"].public_raw)
        ws.start(origin_of(sqlite_trial))
        yield ws


def register_witnesses(run: Cli, keys: Keys, ws: Witnesses, quorum: int = 2) -> None:
    for name, url, vkey in zip(ws.names, ws.urls, ws.vkeys, strict=True):
        r = run("witness", "add", "--name", name, "--url", url, "--vkey", vkey, "--key", str(keys.path("admin")))
        assert r.exit_code == 0, r.output
    r = run("witness", "policy", "--quorum", str(quorum), "--key", str(keys.path("admin")))
    assert r.exit_code == 0, r.output


def witness_args(ws: Witnesses) -> list[str]:
    return [a for v in ws.vkeys for a in ("--witness", v)]


def test_checkpoint_is_cosigned_and_inspector_counts_cosignatures(
        sqlite_db: str, sqlite_trial: Trial, keys: Keys, witnesses: Witnesses, tmp_path: Path) -> None:
    run = Cli(sqlite_db)
    register(sqlite_trial, keys, "S01-001")
    register_witnesses(run, keys, witnesses)
    cp = tmp_path / "cp.txt"
    r = run("checkpoint", "--key", str(keys.path("admin")), "--out", str(cp))
    assert r.exit_code == 0, r.output
    assert "cosigned by ethics.test/w1" in r.stderr and "cosigned by cro.test/w2" in r.stderr
    lines = cp.read_text().split("\n")
    assert lines[3] == "" and [line.split(" ")[1] for line in lines[4:7]] == [
        lines[0], "cro.test/w2", "ethics.test/w1"]

    ok = run("verify", "--checkpoint", str(cp), *witness_args(witnesses), "--quorum", "2")
    assert ok.exit_code == 0, ok.output
    assert "cosigned by ethics.test/w1 at " in ok.stdout and "newest witnessed time: " in ok.stdout
    assert "newest witnessed state of this ledger: " in ok.stdout
    r = run("verify", *witness_args(witnesses))
    assert r.exit_code == 2 and "--witness and --quorum need --checkpoint FILE" in r.stderr
    # The vkey may be given in a file, too.
    vfile = tmp_path / "w1.vkey"
    vfile.write_text(witnesses.vkeys[0] + "\n")
    assert run("verify", "--checkpoint", str(cp), "--witness", str(vfile), "--quorum", "1").exit_code == 0

    removed = tmp_path / "removed.txt"
    removed.write_text("\n".join(lines[:6]) + "\n")
    r = run("verify", "--checkpoint", str(removed), *witness_args(witnesses), "--quorum", "2")
    assert r.exit_code == 1 and "1 valid cosignatures from the given witnesses over this checkpoint, quorum 2" \
        in r.stderr

    altered = tmp_path / "altered.txt"
    sig = lines[6].split(" ")
    blob = sig[2]
    sig[2] = blob[:20] + ("A" if blob[20] != "A" else "B") + blob[21:]
    altered.write_text("\n".join([*lines[:6], " ".join(sig)]) + "\n")
    r = run("verify", "--checkpoint", str(altered), *witness_args(witnesses), "--quorum", "2")
    assert r.exit_code == 1 and "quorum 2" in r.stderr

    # An unknown witness key does not count, however the lines look.
    stranger = str(vkey_for("ethics.test/w1", generate()))
    r = run("verify", "--checkpoint", str(cp), "--witness", stranger, "--witness", witnesses.vkeys[1],
            "--quorum", "2")
    assert r.exit_code == 1

    # verify-proof counts the cosignatures of the bundle's checkpoint the same way.
    bundle = tmp_path / "proof.json"
    event_id = run.json("audit", "--participant", "S01-001")[0]["event_id"]
    assert run("prove", "inclusion", event_id, "--out", str(bundle)).exit_code == 0
    pub = str(keys.path("admin")) + ".pub"
    assert run("verify-proof", str(bundle), "--public-key", pub, *witness_args(witnesses),
               "--quorum", "2").exit_code == 0
    r = run("verify-proof", str(bundle), "--public-key", pub, "--witness", stranger, "--quorum", "1")
    assert r.exit_code == 1 and "quorum 1" in r.stderr

    # The next checkpoint starts from what each witness cosigned, with a consistency proof.
    register(sqlite_trial, keys, "S01-002")
    r = run("checkpoint", "--key", str(keys.path("admin")), "--out", str(tmp_path / "cp2.txt"))
    assert r.exit_code == 0, r.output
    assert all(w.state.latest(origin_of(sqlite_trial)).size == sqlite_trial.store.count()
               for w in witnesses.objects)


def test_a_rewritten_log_is_refused_by_both_witnesses(
        sqlite_db: str, sqlite_trial: Trial, keys: Keys, witnesses: Witnesses, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    run = Cli(sqlite_db)
    for p in ("S01-001", "S01-002"):
        register(sqlite_trial, keys, p)
    register_witnesses(run, keys, witnesses)
    assert run("checkpoint", "--key", str(keys.path("admin")), "--out", str(tmp_path / "cp.txt")).exit_code == 0

    # The sponsor rebuilds the ledger from scratch under the same keys, with other history, and
    # presents it under the original log's origin (its own genesis would give it another).
    forged_db = str(tmp_path / "forged.db")
    forged = initialise(forged_db, keys)
    assert origin_of(forged) != origin_of(sqlite_trial)
    present_as(monkeypatch, origin_of(sqlite_trial))
    for p in ("S01-009", "S01-008", "S01-007"):
        register(forged, keys, p)
    forged.store.close()
    forged_run = Cli(forged_db)
    register_witnesses(forged_run, keys, witnesses)
    r = forged_run("checkpoint", "--key", str(keys.path("admin")), "--out", str(tmp_path / "forged.txt"))
    assert r.exit_code == 1
    assert r.stderr.count("SPLIT-VIEW ALARM") >= 2
    assert "refused by ethics.test/w1" in r.stderr and "refused by cro.test/w2" in r.stderr

    for state in witnesses.states:
        ev = run("--json", "witness", "evidence", "--state", str(state))
        assert ev.exit_code == 0, ev.output
        shown = run("witness", "evidence", "--state", str(state))
        assert "consistency proof fails" in shown.stdout and origin_of(sqlite_trial) in shown.stdout


def test_a_truncated_log_is_a_split_view_alarm(
        sqlite_db: str, sqlite_trial: Trial, keys: Keys, witnesses: Witnesses, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    run = Cli(sqlite_db)
    for p in ("S01-001", "S01-002", "S01-003"):
        register(sqlite_trial, keys, p)
    register_witnesses(run, keys, witnesses)
    assert run("checkpoint", "--key", str(keys.path("admin"))).exit_code == 0
    truncated_db = str(tmp_path / "truncated.db")
    truncated = initialise(truncated_db, keys)
    present_as(monkeypatch, origin_of(sqlite_trial))
    truncated.store.close()
    t_run = Cli(truncated_db)
    register_witnesses(t_run, keys, witnesses, quorum=1)
    r = t_run("checkpoint", "--key", str(keys.path("admin")))
    assert r.exit_code == 1 and "SPLIT-VIEW ALARM" in r.stderr and "the log was truncated" in r.stderr


def test_a_log_key_signs_checkpoints_so_the_root_key_stays_offline(
        sqlite_db: str, sqlite_trial: Trial, keys: Keys, tmp_path: Path) -> None:
    run = Cli(sqlite_db)
    # outsider's key becomes the dedicated checkpoint key, registered by the admin with role log.
    r = run("signer", "add", "--user-id", "log1", "--name", "Checkpoint key", "--role", "log",
            "--public-key", str(keys.path("outsider")) + ".pub", "--key", str(keys.path("admin")))
    assert r.exit_code == 0, r.output
    with ExitStack() as stack:
        ws = Witnesses(stack, tmp_path, keys.signers["outsider"].public_raw)
        ws.start(origin_of(sqlite_trial))
        register_witnesses(run, keys, ws)
        cp = tmp_path / "cp.txt"
        r = run("checkpoint", "--key", str(keys.path("outsider")), "--out", str(cp))
        assert r.exit_code == 0, r.output
        assert run("verify", "--checkpoint", str(cp), *witness_args(ws), "--quorum", "2").exit_code == 0
    # A log key may not sign events, and other signers may not sign checkpoints.
    assert run("checkpoint", "--key", str(keys.path("inv1"))).exit_code == 3
    # Once revoked, the log key signs no new checkpoint, but the one it signed still verifies.
    assert run("signer", "revoke", "--user-id", "log1", "--reason", "rotated",
               "--key", str(keys.path("admin"))).exit_code == 0
    assert run("checkpoint", "--key", str(keys.path("outsider"))).exit_code == 3
    assert run("verify", "--checkpoint", str(cp)).exit_code == 0


def test_witness_events_are_checked(sqlite_db: str, sqlite_trial: Trial, keys: Keys) -> None:
    run = Cli(sqlite_db)
    admin = str(keys.path("admin"))
    vkey = str(vkey_for("w.test/a", generate()))
    r = run("witness", "add", "--name", "w.test/b", "--url", "http://127.0.0.1:1", "--vkey", vkey, "--key", admin)
    assert r.exit_code == 3 and "data.name" in r.stderr
    r = run("witness", "add", "--name", "w.test/a", "--url", "http://127.0.0.1:1", "--vkey", vkey,
            "--key", str(keys.path("inv1")))
    assert r.exit_code == 3 and "may not sign WitnessAdded" in r.stderr
    assert run("witness", "add", "--name", "w.test/a", "--url", "http://127.0.0.1:1", "--vkey", vkey,
               "--key", admin).exit_code == 0
    r = run("witness", "remove", "--name", "w.test/zzz", "--reason", "gone", "--key", admin)
    assert r.exit_code == 3 and "not a registered witness" in r.stderr
    assert run("witness", "remove", "--name", "w.test/a", "--reason", "contract ended", "--key", admin).exit_code == 0
    r = run("witness", "add", "--name", "w.test/a", "--url", "http://127.0.0.1:1", "--vkey", "w.test/a+00+AA==",
            "--key", admin)
    assert r.exit_code == 2 and "--vkey" in r.stderr and "8 lower-case hex digits" in r.stderr


def test_witnessed_intervals_in_audit_and_verify_flags_a_post_dated_entry(
        sqlite_db: str, sqlite_trial: Trial, keys: Keys, witnesses: Witnesses, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from domain.service import Command

    run = Cli(sqlite_db)
    register(sqlite_trial, keys, "S01-001")
    register_witnesses(run, keys, witnesses)
    assert run("checkpoint", "--key", str(keys.path("admin"))).exit_code == 0
    register(sqlite_trial, keys, "S01-002")
    assert run("checkpoint", "--key", str(keys.path("admin"))).exit_code == 0
    rows = {r["participant"]: r for r in run.json("audit") if r["participant"]}
    first, second = rows["S01-001"], rows["S01-002"]
    assert first["witnessed_after"] is None and first["witnessed_before"] is not None
    assert second["witnessed_after"] == first["witnessed_before"] and second["witnessed_before"] is not None
    assert run("verify").exit_code == 0

    # A writer whose clock runs a day ahead: its entry claims a time after the witnesses had already seen it.
    ahead = Trial(sqlite_trial.store, clock=lambda: datetime.now(UTC) + timedelta(days=1))
    ahead.append(Command("ParticipantRegistered", "S01-003", {"site": "S01", "sex": "F", "birth_year": 1970},
                         occurred_at="2010-09-01T09:00:00+08:00"), keys.signers["inv1"])
    assert run("checkpoint", "--key", str(keys.path("admin"))).exit_code == 0
    r = run("verify")
    assert r.exit_code == 1 and "outside its witnessed interval" in r.stderr and "already seen it" in r.stderr
    # An inspector who trusts none of these witnesses sees no interval, so no such finding.
    stranger = str(vkey_for("x.test/w", generate()))
    cp = tmp_path / "cp.txt"
    table = sqlite_trial.store.table("merkle_checkpoints")
    latest = sqlite_trial.store.fetch(f"SELECT note FROM {table} ORDER BY tree_size DESC LIMIT 1")
    cp.write_text(latest[0]["note"])
    r = run("verify", "--checkpoint", str(cp), "--witness", stranger, "--quorum", "0")
    assert r.exit_code == 0, r.output


def test_report_shows_witnesses_and_latest_cosignatures(
        sqlite_db: str, sqlite_trial: Trial, keys: Keys, witnesses: Witnesses, tmp_path: Path) -> None:
    run = Cli(sqlite_db)
    register(sqlite_trial, keys, "S01-001")
    register_witnesses(run, keys, witnesses)
    assert run("checkpoint", "--key", str(keys.path("admin"))).exit_code == 0
    out = tmp_path / "report.html"
    assert run("report", "--out", str(out)).exit_code == 0
    html = out.read_text()
    for name in witnesses.names:
        assert f"{name} at " in html
    assert html.count("latest cosignature ") == 2 and "witnessed (after … before)" in html


def test_intervals_bound_each_key_by_the_checkpoints_around_it() -> None:
    from ledger.witnessed import Intervals

    # checkpoints of size 2 (witnessed at 100), 5 (at 300) and 5 again later (at 400): last keys 1, 4, 4.
    iv = Intervals([(1, 100), (4, 300), (4, 400)])
    assert iv.interval(0) == (None, 100) and iv.interval(1) == (None, 100)
    assert iv.interval(2) == (100, 300) and iv.interval(4) == (100, 300)
    assert iv.interval(5) == (400, None)


def test_cosigned_checkpoint_on_each_back_end(trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> None:
    with ExitStack() as stack:
        ws = Witnesses(stack, tmp_path, keys.signers["admin"].public_raw)
        ws.start(origin_of(trial))
        register(trial, keys, "S01-001")
        register_witnesses(run, keys, ws)
        cp = tmp_path / "cp.txt"
        assert run("checkpoint", "--key", str(keys.path("admin")), "--out", str(cp)).exit_code == 0
        register(trial, keys, "S01-002")
        assert run("checkpoint", "--key", str(keys.path("admin")), "--out", str(cp)).exit_code == 0
        r = run("verify", "--checkpoint", str(cp), *witness_args(ws), "--quorum", "2")
        assert r.exit_code == 0, r.output
        assert all(w.state.latest(origin_of(trial)).size == trial.store.count() for w in ws.objects)
