"""An import keeps only a bounded number of participants' facts in memory (issue 21: RSS at 1M).

The rest are spilled to a private temporary file and read back when their
participant turns up again. These tests shrink the in-memory set to about two
participants, so every refusal below depends on facts that went through the
spill file, including facts decided in the same batch and not yet written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domain import participant_states
from domain.service import Trial
from tests.conftest import Cli, Keys, event_count

T = "2010-09-01T09:00:00+08:00"


@pytest.fixture(autouse=True)
def keep_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(participant_states, "BUDGET", 2 * (participant_states.PARTICIPANT_WEIGHT + 1))


def registered(pid: str) -> dict[str, object]:
    return {"type": "ParticipantRegistered", "participant": pid,
            "data": {"site": "S01", "sex": "M", "birth_year": 1960}, "occurred_at": T}


def lab(pid: str, value: float, event_id: str | None = None) -> dict[str, object]:
    row: dict[str, object] = {"type": "LabResultRecorded", "participant": pid,
                              "data": {"analyte": "FBG", "value": value, "unit": "mmol/L"}, "occurred_at": T}
    if event_id:
        row["event_id"] = event_id
    return row


def write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_participant_evicted_before_its_rows_are_written_is_still_known(
        trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> None:
    # Five participants in one batch: P1's registration is spilled long before the batch is written,
    # so re-reading P1 from the ledger would find it unregistered and refuse its lab result.
    rows = [registered(f"P{n}") for n in range(1, 6)] + [lab("P1", 7.1), lab("P3", 7.2)]
    before = event_count(run.db)
    r = run("import", str(write(tmp_path / "in.jsonl", rows)), "--key", str(keys.path("inv1")))
    assert r.exit_code == 0, r.output
    assert event_count(run.db) == before + len(rows)
    assert run("verify").exit_code == 0
    assert [e.type for e in trial.store.stream("P1")] == ["ParticipantRegistered", "LabResultRecorded"]


def test_a_second_registration_of_a_spilled_participant_is_refused_and_nothing_is_written(
        trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> None:
    rows = [registered(f"P{n}") for n in range(1, 6)] + [registered("P2")]
    before = event_count(run.db)
    r = run("import", str(write(tmp_path / "in.jsonl", rows)), "--key", str(keys.path("inv1")))
    assert r.exit_code == 3, r.output
    assert "line 6" in r.output and "already registered" in r.output
    assert event_count(run.db) == before


def test_a_correction_of_a_spilled_entry_is_checked_against_that_entry(
        trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> None:
    target = "00000000-0000-4000-8000-000000000001"
    rows = [registered("P1"), lab("P1", 7.1, target)] + [registered(f"P{n}") for n in range(2, 6)]
    # A correction may not change what the entry is about (its analyte): P1's facts must come back intact.
    rows.append({"type": "EntryCorrected", "participant": "P1", "reason": "typo",
                 "data": {"target_event_id": target, "changes": {"analyte": "HbA1c"}}, "occurred_at": T})
    before = event_count(run.db)
    r = run("import", str(write(tmp_path / "in.jsonl", rows)), "--key", str(keys.path("inv1")))
    assert r.exit_code == 3, r.output
    assert "line 7" in r.output and "analyte" in r.output
    assert event_count(run.db) == before
    rows[-1]["data"] = {"target_event_id": target, "changes": {"value": 7.3}}
    r = run("import", str(write(tmp_path / "in.jsonl", rows)), "--key", str(keys.path("inv1")))
    assert r.exit_code == 0, r.output
    assert run("verify").exit_code == 0


def test_a_long_history_stays_in_memory_until_its_weight_in_other_entries_has_passed() -> None:
    """Eviction weighs entries: a long participant is not pickled each time a few hundred small ones pass,
    yet memory stays bounded once more than the budget has been touched since its last line."""
    from domain.participant import Participant
    from ledger.envelope import Envelope

    weight = participant_states.PARTICIPANT_WEIGHT
    assert 50 * (1 + weight) < 1000 - (300 + weight) < 130 * (1 + weight)  # the arithmetic below holds

    def grown(pid: str) -> Participant:
        state = Participant(pid)
        for n in range(300 if pid == "BIG" else 1):
            state.apply(Envelope.model_construct(event_id=f"{pid}-{n}", type="LabResultRecorded", stream=pid,
                                                 position=n + 1, occurred_at=T, author="lab1", data={}))
        return state

    states = participant_states.ParticipantStates(grown, budget=1000)
    big = states.of("BIG")
    for round_ in range(10):  # BIG, then 50 participants never seen before, lighter together than BIG's slack
        assert states.of("BIG") is big  # the same object: never pickled and read back
        for n in range(50):
            states.of(f"S{round_}-{n}")
    assert states.spilled >= 400  # the small ones went to the spill file instead
    for n in range(80):  # 130 small ones in all since BIG's last line: more than the budget
        states.of(f"T{n}")
    again = states.of("BIG")
    assert again is not big and len(again.entries) == 300  # spilled, and read back whole
    states.close()
