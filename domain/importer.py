"""JSON Lines import (SPEC §6): every line is checked, and the file is appended all or nothing.

The whole import runs in one write transaction. Lines are decided one by
one against the ledger (schema, roles, refusal rules), keeping only compact
per-participant facts, and inserted batch by batch; the first bad line
raises, the transaction rolls back, and nothing is written. Memory stays
bounded however long the file; the write lock is held for the import's
duration, so no other writer can slip in between check and write.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from ledger.envelope import Envelope
from ledger.errors import InputRefused
from ledger.keys import Signer
from ledger.snapshot import Source, opened

from domain.input_limits import decode_json
from domain.service import Command, Decider, Trial
from domain.signers import STUDY_STREAM
from domain.text_guard import NEEDS_TEXT_SCAN

LINE_FIELDS = {"type", "participant", "data", "occurred_at", "meaning", "reason", "event_id"}
MAX_LINE_BYTES = 1 << 20
BATCH = 1000


def read_commands(source: Source) -> Iterator[tuple[int, Command]]:
    """(line number, command) for each non-blank line; a bad line is refused naming its number and field."""
    with opened(source) as handle:
        for number, raw in enumerate(handle, 1):
            if len(raw) > MAX_LINE_BYTES:
                raise InputRefused(f"line {number}: longer than {MAX_LINE_BYTES} bytes")
            if not raw.strip():
                continue
            yield number, _command(number, raw)


def _command(number: int, raw: bytes) -> Command:
    try:
        row: Any = decode_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputRefused(f"line {number}: not UTF-8") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise InputRefused(f"line {number}: not valid JSON ({getattr(e, 'msg', 'too deeply nested')})") from None
    except ValueError as e:  # a number or repeated key decode_json refuses, or an integer beyond Python's digit limit
        raise InputRefused(f"line {number}: not valid JSON ({str(e).splitlines()[0][:80]})") from None
    if not isinstance(row, dict):
        raise InputRefused(f"line {number}: must be a JSON object")
    unknown = sorted(set(row) - LINE_FIELDS)
    if unknown:
        raise InputRefused(f"line {number}: {unknown[0]}: unknown field")
    for required in ("type", "data"):
        if required not in row:
            raise InputRefused(f"line {number}: {required}: missing")
    for name in ("type", "participant", "occurred_at", "meaning", "reason", "event_id"):
        if row.get(name) is not None and not isinstance(row[name], str):
            raise InputRefused(f"line {number}: {name}: must be a string")
    return Command(type=row["type"], participant=row.get("participant"), data=row["data"],
                   occurred_at=row.get("occurred_at"), meaning=row.get("meaning"), reason=row.get("reason"),
                   event_id=row.get("event_id"), text_checked=not NEEDS_TEXT_SCAN.search(raw))


def _decided(decider: Decider, commands: Iterator[tuple[int, Command]],
             tick: Callable[[int], None] | None) -> Iterator[list[Envelope]]:
    batch: list[Envelope] = []
    for number, command in commands:
        try:
            batch.append(decider.decide(command))
        except InputRefused as e:
            raise InputRefused(f"line {number}: {e}") from None
        if len(batch) >= BATCH:
            yield batch
            if tick:
                tick(len(batch))
            batch = []
    if batch:
        yield batch
        if tick:
            tick(len(batch))


def import_file(trial: Trial, path: Source, signer: Signer,
                tick: Callable[[int], None] | None = None, name: str | None = None) -> int:
    """Check and append the whole file in one transaction; returns the number of events."""

    last: list[Envelope] = []
    study: list[Envelope] = []
    study_added = 0

    def batches() -> Iterator[list[Envelope]]:
        nonlocal study_added
        # Built inside the write lock, so the signer registry cannot change under us.
        decider = trial.decider(signer, track_event_ids=True)
        try:
            for batch in _decided(decider, read_commands(path), tick):
                last[:] = batch[-1:]
                for env in batch:
                    if env.stream == STUDY_STREAM:
                        study_added += 1
                        study[:] = [env]
                yield batch
        finally:
            decider.states.close()

    count = trial.store.append_stream(batches(), signer)
    if count == 0:
        raise InputRefused(f"{name or path}: no events to import")
    trial.attest(signer, last, study_added=study_added, last_study=study[0] if study else None)
    return count
