"""Two writers on one participant: the store's primary key rejects one, the loser re-reads,
re-signs at the new head and retries; nothing is lost and no signature is reused."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ledger.errors import PositionTaken

from domain.service import Command, Trial
from domain.signers import SignerRegistry
from ledger.store import Store
from ledger.verify import verify_records
from tests.conftest import PASSPHRASE, Keys, register

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from domain.service import Command, Trial
    from ledger.keys import read_private
    from ledger.store import Store

    db, key, tag, n = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    trial = Trial(Store(db))
    signer = read_private(key, sys.argv[5])
    for i in range(n):
        trial.append(Command("LabResultRecorded", "S01-001",
                             {"analyte": "FBG", "value": 7 + i / 1000, "unit": "mmol/L"},
                             occurred_at="2010-09-02T08:00:00+08:00"), signer)
        print(f"{tag} {i}", flush=True)
""")


def test_two_processes_append_to_one_participant(trial: Trial, keys: Keys, tmp_path: Path) -> None:
    register(trial, keys, "S01-001")
    before = trial.store.count()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [
        subprocess.Popen([sys.executable, str(script), trial.store.db, str(keys.path(user)), user, "100", PASSPHRASE],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for user in ("lab1", "inv1")
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert len(out.splitlines()) == 100
    store = Store(trial.store.db)
    records = list(store.records())
    assert len(records) == before + 200
    stream = store.stream("S01-001")
    assert [e.position for e in stream] == list(range(1, 202))
    assert {e.author for e in stream[1:]} == {"lab1", "inv1"}
    assert len({r.signature for r in records}) == len(records), "a signature was reused"
    assert verify_records(iter(records), SignerRegistry(), jobs=2).ok
    store.close()


def test_stale_writer_is_rejected_by_the_primary_key(trial: Trial, keys: Keys) -> None:
    register(trial, keys, "S01-001")
    command = Command("LabResultRecorded", "S01-001", {"analyte": "FBG", "value": 7.5, "unit": "mmol/L"},
                      occurred_at="2010-09-02T08:00:00+08:00")
    stale = trial.decide([command], keys.signers["lab1"])[0]
    trial.append(command, keys.signers["inv1"])  # another writer takes position 2 first
    with pytest.raises(PositionTaken):
        trial.store.append([stale], keys.signers["lab1"])
    retried = trial.append(command, keys.signers["lab1"])
    assert retried.position == 3
