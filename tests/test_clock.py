"""Recorded time never runs backwards along the chain (SPEC §5.4, issue 16).

The CLI runs under a fake clock the test controls (``Trial``'s injectable
clock, set back seven weeks): the append is refused inside the write lock,
naming both times. Then a backwards step is planted through the project's
own writing code with the refusal switched off (as an older writer, or an
owner holding a key, would write it) and ``verify`` reports it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import ledger.sealing
from domain.service import Command, Trial
from domain.timeutil import utc_now
from tests.conftest import Cli, Keys, register

VISIT = '{"visit": "D30"}'


def set_clock(monkeypatch: pytest.MonkeyPatch, offset: timedelta) -> Callable[[], datetime]:
    """Every Trial the CLI builds from now on reads this clock."""
    def clock() -> datetime:
        return utc_now() + offset

    monkeypatch.setattr(Trial.__init__, "__defaults__", (clock,))
    return clock


def test_an_append_under_a_clock_set_back_is_refused(trial: Trial, keys: Keys, run: Cli,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    register(trial, keys, "S01-001")
    head = json.loads(list(trial.store.records())[-1].state)["recorded_at"]
    before = trial.store.count()
    set_clock(monkeypatch, -timedelta(weeks=7))
    r = run("append", "VisitCompleted", "--participant", "S01-001", "--data", VISIT,
            "--occurred-at", "2010-10-20T09:00:00+08:00", "--key", str(keys.path("inv1")))
    assert r.exit_code == 3, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "ran backwards" in lines[0] and head in lines[0]
    set_back = (datetime.fromisoformat(head) - timedelta(weeks=7)).date().isoformat()
    assert f"recorded_at {set_back}" in lines[0]  # the writer's time is named too
    assert trial.store.count() == before


def test_an_import_under_a_clock_set_back_is_refused(trial: Trial, keys: Keys, run: Cli, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    register(trial, keys, "S01-001")
    before = trial.store.count()
    path = tmp_path / "in.jsonl"
    path.write_text('{"type": "VisitCompleted", "participant": "S01-001", "data": {"visit": "D30"}}\n')
    set_clock(monkeypatch, -timedelta(weeks=7))
    r = run("import", str(path), "--key", str(keys.path("inv1")))
    assert r.exit_code == 3 and "ran backwards" in r.stderr, r.output
    assert trial.store.count() == before


def test_skew_within_the_tolerance_is_accepted(trial: Trial, keys: Keys, run: Cli,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    register(trial, keys, "S01-001")
    set_clock(monkeypatch, -timedelta(minutes=3))
    r = run("append", "VisitCompleted", "--participant", "S01-001", "--data", VISIT,
            "--occurred-at", "2010-10-20T09:00:00+08:00", "--key", str(keys.path("inv1")))
    assert r.exit_code == 0, r.output
    assert run("verify").exit_code == 0


def test_the_user_cannot_pass_recorded_at(trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> None:
    register(trial, keys, "S01-001")
    path = tmp_path / "in.jsonl"
    path.write_text('{"type": "VisitCompleted", "participant": "S01-001", "data": {"visit": "D30"}, '
                    '"recorded_at": "2010-01-01T00:00:00+00:00"}\n')
    r = run("import", str(path), "--key", str(keys.path("inv1")))
    assert r.exit_code == 3 and "recorded_at: unknown field" in r.stderr
    r = run("append", "VisitCompleted", "--participant", "S01-001", "--data", VISIT,
            "--recorded-at", "2010-01-01T00:00:00+00:00", "--key", str(keys.path("inv1")))
    assert r.exit_code == 2
    r = run("append", "VisitCompleted", "--participant", "S01-001",
            "--data", '{"visit": "D30", "recorded_at": "2010-01-01T00:00:00+00:00"}', "--key", str(keys.path("inv1")))
    assert r.exit_code == 3 and "recorded_at" in r.stderr


def test_verify_flags_a_backwards_step_planted_through_the_writer(trial: Trial, keys: Keys, run: Cli,
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    register(trial, keys, "S01-001")
    cp = tmp_path / "cp.txt"
    assert run("checkpoint", "--key", str(keys.path("admin")), "--out", str(cp)).exit_code == 0
    assert run("verify").exit_code == 0
    # The refusal switched off, as a writer without it would write: hashed and signed by a real key.
    monkeypatch.setattr(ledger.sealing, "refuse_backwards", lambda head_state, envelopes: None)
    backdated = Trial(trial.store, clock=lambda: utc_now() - timedelta(weeks=7))
    env = backdated.append(Command("VisitCompleted", "S01-001", {"visit": "D30"},
                                   occurred_at="2010-10-20T09:00:00+08:00"), keys.signers["inv1"])
    monkeypatch.undo()
    position = list(trial.store.records())[-1].position
    for extra in ((), ("--checkpoint", str(cp), "--since-checkpoint")):
        r = run("verify", *extra)
        assert r.exit_code == 1, r.output
        assert f"position {position} (event {env.event_id})" in r.stderr and "ran backwards" in r.stderr
    # Once the clock is right again, later entries are accepted and only the planted step stays flagged.
    register(trial, keys, "S01-002")
    r = run("--json", "verify")
    assert r.exit_code == 1
    reasons = [f["reason"] for f in json.loads(r.stdout)["findings"]]
    assert len(reasons) == 1 and "ran backwards" in reasons[0]
