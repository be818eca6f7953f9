"""What an attacker with write access to the database (and no private key) can do, as test helpers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ledger.chain import link_hash
from ledger.envelope import Record
from ledger.store import Store

EVENT_COLUMNS = ("originator_id", "originator_version", "topic", "state", "event_id", "prev_hash", "hash",
                 "signature", "key_id")


def pos_col(store: Store) -> str:
    return "notification_id" if store.postgres else "rowid"


def events(store: Store) -> str:
    return store.table("ledger_events")


def all_rows(store: Store) -> list[Record]:
    """Every stored row, including those outside the chain (ids <= 0)."""
    return list(store.records(after=-(2**63)))


def forged_state(record: Record, **changes: Any) -> bytes:
    """The record's envelope with some fields (``data`` merged) changed, in canonical-like JSON."""
    env = json.loads(record.state)
    data = changes.pop("data", None)
    if data is not None:
        env["data"] = {**env["data"], **data}
    env.update(changes)
    return json.dumps(env, sort_keys=True, separators=(",", ":")).encode()


def insert_row(store: Store, row_id: int, record: Record, *, state: bytes | None = None,
               stream_position: int | None = None, prev_hash: bytes | None = None,
               event_id: str | None = None) -> None:
    """Insert a row at an explicit id (the least-privilege role may INSERT), with a consistent own hash."""
    state = record.state if state is None else state
    prev = record.prev_hash if prev_hash is None else prev_hash
    values = (record.stream, record.stream_position if stream_position is None else stream_position, record.type,
              state, event_id or record.event_id, prev, link_hash(state, prev), record.signature, record.key_id)
    store.execute_raw(f"DROP INDEX IF EXISTS {store.table('ledger_events_event_id_idx')}"
                      if store.postgres else "DROP INDEX IF EXISTS ledger_events_event_id")
    store.execute_raw(f"INSERT INTO {events(store)} ({pos_col(store)}, {', '.join(EVENT_COLUMNS)}) "
                      f"VALUES (?, {', '.join('?' * len(EVENT_COLUMNS))})", (row_id, *values))


def set_stream_position(store: Store, position: int, stream_position: int) -> None:
    store.execute_raw(f"UPDATE {events(store)} SET originator_version = ? WHERE {pos_col(store)} = ?",
                      (stream_position, position))


def delete_row(store: Store, position: int) -> None:
    store.execute_raw(f"DELETE FROM {events(store)} WHERE {pos_col(store)} = ?", (position,))


T0 = "2010-09-01T09:00:00+08:00"
DOSE = {"dose_number": 1, "route": "intra-arterial-pancreatic", "lot": "L-001", "cell_source": "autologous bone marrow",
        "cell_count": 1e6, "viability_pct": 93.5, "identity_checked": True}
SAE = {"ae_id": "AE-9", "term": "pancreatitis", "grade": 4, "serious": True, "relatedness": "probable",
       "expected": False, "awareness_at": T0}


def scenario(trial: Any, keys: Any) -> dict[str, str]:
    """Two participants: labs, a correction, a dose before enrolment (a deviation), a grade-4 serious AE last."""
    from domain.service import Command
    from tests.conftest import register

    s = keys.signers
    ids = {}

    def add(pid: str, type_name: str, data: dict[str, Any], user: str = "inv1", reason: str | None = None) -> str:
        return trial.append(Command(type_name, pid, data, occurred_at=T0, reason=reason), s[user]).event_id

    for pid in ("S01-001", "S01-002"):
        register(trial, keys, pid)
        add(pid, "ConsentSigned", {"icf_version": "1.0", "obtained_by": "inv1"})
        ids[f"lab {pid}"] = add(pid, "LabResultRecorded", {"analyte": "FBG", "value": 8.1, "unit": "mmol/L"}, "lab1")
    add("S01-001", "EntryCorrected", {"target_event_id": ids["lab S01-001"], "changes": {"value": 8.4}}, "lab1",
        reason="transcription error")
    add("S01-002", "InfusionAdministered", DOSE, "pharm1")
    ids["sae"] = add("S01-002", "AdverseEventReported", SAE)
    return ids


AS_OF = "2099-01-01T00:00:00+00:00"
_VOLATILE = (
    (re.compile(r'(CreationDateTime|FileOID)="[^"]*"'), r'\1=""'),
    (re.compile(r"Generated \S+ by"), "Generated - by"),
)


def _normal(text: str) -> str:
    for pattern, repl in _VOLATILE:
        text = pattern.sub(repl, text)
    return text


def inspector_outputs(run: Any, tmp: Path, event_id: str | None = None) -> dict[str, tuple[int, str]]:
    """Every inspector output (exit code, stdout or file), with the generation times blanked out."""
    out: dict[str, tuple[int, str]] = {}
    for name, args in {
        "show": ("show", "S01-002"), "show-1": ("show", "S01-001"), "show --as-of": ("show", "S01-002", "--as-of", AS_OF),
        "audit": ("audit", "--format", "csv"), "deviations": ("deviations",), "summary": ("summary",),
        "participants": ("participants",), "signers": ("signer", "list"),
    }.items():
        r = run(*args)
        out[name] = (r.exit_code, r.stdout if r.exit_code == 0 else "")
    files = {"export csv": ("export", "--format", "csv"), "export odm": ("export", "--format", "odm"),
             "export jsonl": ("export", "--format", "jsonl"), "report": ("report",),
             "report --as-of": ("report", "--as-of", AS_OF)}
    if event_id is not None:
        files["prove"] = ("prove", "inclusion", event_id)
    for n, (name, args) in enumerate(files.items()):
        target = tmp / f"out-{n}"
        target.unlink(missing_ok=True)
        r = run(*args, "--out", str(target))
        out[name] = (r.exit_code, _normal(target.read_text()) if r.exit_code == 0 and target.exists() else "")
    return out
