"""Tamper detection (SPEC §5 threat model): an attacker with write access to the database, no keys.

Every single-byte flip of every column of every row, every single-row
deletion except the newest, payload swaps, a forged row under an
unregistered key and an edited role must make ``verify`` fail at the right
position.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from domain.service import Command, Trial
from domain.signers import STUDY_STREAM
from ledger.envelope import Envelope, Record
from ledger.store import Store
from ledger.verify import Report, verify_records
from domain.signers import SignerRegistry
from tests.conftest import Cli, Keys, as_owner, register

COLUMNS = ("state", "prev_hash", "hash", "signature", "key_id", "event_id", "originator_id",
           "originator_version", "topic")


def build(trial: Trial, keys: Keys, participants: int, labs: int) -> None:
    for p in range(participants):
        pid = f"S01-{p:03d}"
        register(trial, keys, pid)
        for i in range(labs):
            trial.append(Command("LabResultRecorded", pid, {"analyte": "FBG", "value": 7.0 + i / 10, "unit": "mmol/L"},
                                 occurred_at="2010-09-02T08:00:00+08:00"), keys.signers["lab1"])


def verify(store: Store) -> Report:
    return verify_records(store.records(), SignerRegistry(), jobs=1)


def pos_col(store: Store) -> str:
    return "notification_id" if store.db.startswith("postgres") else "rowid"


def flip(value: object, rng: random.Random) -> object:
    if isinstance(value, int):
        return value + 1000  # a different stream position, clear of the primary key
    if isinstance(value, str):
        i = rng.randrange(len(value))
        c = chr(ord(value[i]) ^ 0x40) if value[i] != "@" else "#"  # clear of real ids, and never NUL
        return value[:i] + c + value[i + 1:]
    raw = bytearray(bytes(value))  # type: ignore[arg-type]
    i = rng.randrange(len(raw))
    raw[i] ^= 1 << rng.randrange(8)
    return bytes(raw)


def mutate_and_check(store: Store, position: int, column: str, mutate: Callable[[object], object]) -> Report:
    table, pc, ph = store._qualified, pos_col(store), "?"
    original = store.fetch(f"SELECT {column} AS v FROM {table} WHERE {pc} = {ph}", (position,))[0]["v"]
    original = bytes(original) if isinstance(original, memoryview) else original
    store.execute_raw(f"UPDATE {table} SET {column} = {ph} WHERE {pc} = {ph}", (mutate(original), position))
    try:
        return verify(store)
    finally:
        store.execute_raw(f"UPDATE {table} SET {column} = {ph} WHERE {pc} = {ph}", (original, position))


def test_every_byte_flip_of_every_row_is_detected_at_its_position(trial: Trial, keys: Keys) -> None:
    build(trial, keys, participants=3, labs=3)
    store = as_owner(trial.store)
    positions = [r.position for r in store.records()]
    assert verify(store).ok
    rng = random.Random(1)
    tried = 0
    for position in positions:
        for column in COLUMNS:
            report = mutate_and_check(store, position, column, lambda v: flip(v, rng))
            tried += 1
            assert not report.ok, (position, column)
            assert report.sorted()[0].position == position, (position, column, report.sorted()[0])
    assert verify(store).ok
    assert tried == len(positions) * len(COLUMNS)


def test_deleting_any_row_but_the_newest_is_detected(trial: Trial, keys: Keys) -> None:
    build(trial, keys, participants=3, labs=2)
    store = as_owner(trial.store)
    records = list(store.records())
    table, pc, ph = store._qualified, pos_col(store), "?"
    for i, rec in enumerate(records[:-1]):
        row = store.fetch(f"SELECT * FROM {table} WHERE {pc} = {ph}", (rec.position,))[0]
        store.execute_raw(f"DELETE FROM {table} WHERE {pc} = {ph}", (rec.position,))
        report = verify(store)
        assert not report.ok, rec.position
        assert report.sorted()[0].position == records[i + 1].position
        _reinsert(store, rec, dict(row))
    assert verify(store).ok


def _reinsert(store: Store, rec: Record, row: dict[str, object]) -> None:
    cols = ["originator_id", "originator_version", "topic", "state", "event_id", "prev_hash", "hash",
            "signature", "key_id"]
    pc = pos_col(store)
    values = [row[c] for c in cols] + [rec.position]
    marks = ", ".join(["?"] * len(values))
    store.execute_raw(f"INSERT INTO {store._qualified} ({', '.join(cols)}, {pc}) VALUES ({marks})", tuple(values))


def test_deleting_the_last_event_of_a_participant_stream_is_detected(trial: Trial, keys: Keys) -> None:
    build(trial, keys, participants=2, labs=2)
    store = as_owner(trial.store)
    last_of_first = [r for r in store.records() if r.stream == "S01-000"][-1]
    store.execute_raw(f"DELETE FROM {store._qualified} WHERE event_id = ?", (last_of_first.event_id,))
    report = verify(store)
    assert not report.ok and report.sorted()[0].position > last_of_first.position


def test_swapping_two_payloads_is_detected(trial: Trial, keys: Keys) -> None:
    build(trial, keys, participants=2, labs=2)
    store = as_owner(trial.store)
    a, b = [r for r in store.records() if r.type == "LabResultRecorded"][:2]
    ph, pc = "?", pos_col(store)
    store.execute_raw(f"UPDATE {store._qualified} SET state = {ph} WHERE {pc} = {ph}", (b.state, a.position))
    store.execute_raw(f"UPDATE {store._qualified} SET state = {ph} WHERE {pc} = {ph}", (a.state, b.position))
    report = verify(store)
    assert not report.ok and report.sorted()[0].position == a.position


def test_row_signed_by_unregistered_key_is_detected(trial: Trial, keys: Keys) -> None:
    build(trial, keys, participants=1, labs=1)
    store = as_owner(trial.store)
    outsider = keys.signers["outsider"]
    env = Envelope(event_id=str(uuid.uuid4()), type="LabResultRecorded", stream="S01-000", position=3,
                   occurred_at="2010-09-02T08:00:00+08:00", recorded_at=datetime.now(UTC).isoformat(),
                   author="lab1", key_id=outsider.key_id, meaning="authorship",
                   data={"analyte": "FBG", "value": 3.0, "unit": "mmol/L"})
    [position] = store.append([env], outsider)  # the store itself enforces no roles: the attacker's view
    report = verify(store)
    assert not report.ok
    first = report.sorted()[0]
    assert first.position == position and "not registered" in first.reason


def test_changing_a_signers_role_is_detected(trial: Trial, keys: Keys) -> None:
    store = as_owner(trial.store)
    registration = next(r for r in store.records() if r.type == "SignerRegistered" and b'"mon1"' in r.state)
    forged = registration.state.replace(b'"role":"monitor"', b'"role":"investigator"')
    assert forged != registration.state
    store.execute_raw(f"UPDATE {store._qualified} SET state = ? WHERE event_id = ?",
                      (forged, registration.event_id))
    report = verify(store)
    assert not report.ok and report.sorted()[0].position == registration.position


def test_garbage_rows_are_findings_not_crashes(trial: Trial, keys: Keys) -> None:
    build(trial, keys, participants=1, labs=1)
    store = as_owner(trial.store)
    target = list(store.records())[-1]
    for garbage in (b"", b"\xff\xfe\x00", b"[]", b'{"type": 1}', b"{" * 5000, b"null"):
        store.execute_raw(f"UPDATE {store._qualified} SET state = ? WHERE event_id = ?",
                          (garbage, target.event_id))
        report = verify(store)
        assert not report.ok and report.sorted()[0].position == target.position


@pytest.mark.slow
def test_large_ledger_sampled_rows(sqlite_db: str, keys: Keys) -> None:
    from tests.conftest import initialise

    trial = initialise(sqlite_db, keys)
    build(trial, keys, participants=20, labs=10)  # 226 events
    store = as_owner(trial.store)
    positions = [r.position for r in store.records()]
    assert len(positions) >= 200
    rng = random.Random(7)
    for position in rng.sample(positions, 25):
        column = rng.choice(COLUMNS)
        report = mutate_and_check(store, position, column, lambda v: flip(v, rng))
        assert report.sorted()[0].position == position, (position, column)
    run = Cli(sqlite_db)
    assert run("verify").exit_code == 0
    victim = rng.choice(positions[:-1])
    store.execute_raw(f"UPDATE {store._qualified} SET signature = zeroblob(64) WHERE rowid = ?", (victim,))
    r = run("verify")
    assert r.exit_code == 1 and f"position {victim}" in r.stderr
    trial.store.close()


def test_study_stream_is_verified_like_any_other(trial: Trial) -> None:
    assert trial.store.stream_length(STUDY_STREAM) == 6
