"""Where inspector outputs get their data: the store's log, verified, held in memory (SPEC §5.4).

The one place the report, ODM, audit CSV and package exports read a
database. Everything downstream is a pure function of the ``VerifiedLog``
this returns, so swapping this for another verified reader changes nothing
else. The stored checkpoint is a cache: the report checks it against the
log before showing it (``projections.report.checkpoint_view``).
"""

from __future__ import annotations

from datetime import datetime

from ledger.merkle_log import MerkleLog
from ledger.store import Store
from ledger.verify import FIRST_ID
from projections.verified_log import VerifiedLog, recorded_prefix, verify


def load(store: Store, *, as_of: datetime | None = None, jobs: int | None = None) -> VerifiedLog:
    """The log (or its prefix recorded at or before ``as_of``), verified, with the checkpoint of that time."""
    rows = store.records(after=FIRST_ID)  # rows at ids <= 0 too: they are findings, never silently skipped
    records = list(rows) if as_of is None else recorded_prefix(rows, as_of)
    kept, report = verify(records, jobs=jobs)
    return VerifiedLog(kept, report, latest_checkpoint(store, len(kept)), stored_notes(store, len(kept)))


def latest_checkpoint(store: Store, size: int) -> str | None:
    """The stored checkpoint note with the largest tree size not beyond ``size`` (what existed then)."""
    if not store.table_exists("merkle_checkpoints"):
        return None  # never create tables from a read
    tree = MerkleLog(store)
    rows = store.fetch(f"SELECT note FROM {tree.names['checkpoints']} WHERE tree_size <= ? "
                       "ORDER BY tree_size DESC LIMIT 1", (size,))
    return str(rows[0]["note"]) if rows else None


def stored_notes(store: Store, size: int) -> list[str]:
    """Every stored checkpoint note up to ``size``, oldest first (their cosignatures date the events)."""
    if not store.table_exists("merkle_checkpoints"):
        return []
    tree = MerkleLog(store)
    rows = store.fetch(f"SELECT note FROM {tree.names['checkpoints']} WHERE tree_size <= ? ORDER BY tree_size",
                       (size,))
    return [str(r["note"]) for r in rows]
