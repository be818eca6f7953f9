"""Where inspector outputs get their data: the store's log, verified, then read back (SPEC §5.4).

The one place the report, ODM, audit CSV and package exports read a
database. Everything downstream is a pure function of the ``VerifiedLog``
this returns, so swapping this for another verified reader changes nothing
else. The stored checkpoint is a cache: the report checks it against the
log before showing it (``projections.report.checkpoint_view``).
"""

from __future__ import annotations

from datetime import datetime

from domain.signers import SignerRegistry
from ledger import checkpoint as notes
from ledger.errors import IntegrityFailure
from ledger.merkle_log import MerkleLog
from ledger.store import Store
from ledger.verified_store import LogDoesNotVerify, VerifiedStore
from ledger.verify import Report
from projections.verified_log import VerifiedLog, recorded_prefix


class LogFailed(IntegrityFailure):
    """The log (or its ``--as-of`` prefix) does not verify; ``report`` says why. Nothing is read from it."""

    def __init__(self, report: Report):
        first = report.sorted()[0].line() if report.findings else "the log does not verify"
        super().__init__(f"the log does not verify: {first}")
        self.report = report


def load(store: Store, *, as_of: datetime | None = None, jobs: int | None = None) -> VerifiedLog:
    """The log (or its prefix recorded at or before ``as_of``), verified, with the checkpoint of that time.

    One verification pass binds the log (nothing of it is kept but the binding); the views then read
    it back participant by participant, each read re-checked. LogFailed if it does not verify.
    """
    candidates = stored_checkpoints(store)  # read first: their sizes are the roots the pass keeps
    try:
        vstore = VerifiedStore.open(store, SignerRegistry(), jobs=jobs, checkpoint_sizes=[s for s, _ in candidates],
                                    prefix=None if as_of is None else (lambda rows: recorded_prefix(rows, as_of)))
    except LogDoesNotVerify as e:
        raise LogFailed(e.report) from None
    stored = [(size, note) for size, note in candidates if size <= vstore.count() or as_of is None]
    log = VerifiedLog(vstore, stored[-1][1] if stored else None, [note for _size, note in stored])
    check_stored_notes(log, stored)
    return log


def check_stored_notes(log: VerifiedLog, stored: list[tuple[int, str]]) -> None:
    """Every stored checkpoint shown or used must be one of this verified log's (SPEC §5.4).

    The checkpoints table is writable, so each note must be signed by the root key or a
    registered log key and its root reproduced by the verified log; a row that is not is a
    tampered cache, IntegrityFailure naming the table, never a figure on the page. (A deleted
    row cannot be told from none: the report then says none is stored.)
    """
    keys = log.registry.checkpoint_keys(include_revoked=True)
    for size, note in stored:
        why = None
        try:
            cp = notes.parse(note)[0]
        except notes.CheckpointError as e:
            why = str(e)
        else:
            if cp.size != size:
                why = "its tree size differs from the note's"
            elif not any(_signed(note, key) for key in keys):
                why = "not signed by the root key or a registered log key"
            elif cp.size > log.size or log.merkle_root(cp.size) != cp.root:
                why = "the verified log does not reproduce its root"
        if why is not None:
            raise IntegrityFailure(f"stored table merkle_checkpoints: a row is not a checkpoint of this verified "
                                   f"log ({why}); nothing is shown")


def _signed(note: str, key: bytes) -> bool:
    try:
        notes.verify(note, key)
    except notes.CheckpointError:
        return False
    return True


def stored_checkpoints(store: Store) -> list[tuple[int, str]]:
    """(tree size, note) of every stored checkpoint, oldest first: a writable cache, checked after."""
    if not store.table_exists("merkle_checkpoints"):
        return []  # never create tables from a read
    tree = MerkleLog(store)
    rows = store.fetch(f"SELECT tree_size, note FROM {tree.names['checkpoints']} ORDER BY tree_size")
    out = []
    for row in rows:
        # Every row is read, whatever size it claims: the claim is checked against the signed note.
        try:
            stored_size, note = int(row["tree_size"]), str(row["note"])
            claimed = notes.parse(note)[0].size
        except (TypeError, ValueError, notes.CheckpointError):
            raise IntegrityFailure("stored table merkle_checkpoints: a row is not a checkpoint note; "
                                   "nothing is shown") from None
        if claimed != stored_size:
            raise IntegrityFailure("stored table merkle_checkpoints: a row's tree size differs from its note's; "
                                   "nothing is shown")
        out.append((claimed, note))
    return out
