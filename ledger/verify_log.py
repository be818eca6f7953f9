"""Verifying a whole ledger, optionally against a checkpoint an inspector holds (SPEC §5.3, §5.4).

* Without a checkpoint: ``verify_records`` over every row.
* With a checkpoint: the same, while the leaves are folded into a compact
  range; the root after the checkpoint's size must equal the checkpoint's
  root (else the log was rewritten), the log must reach that size (else it
  was truncated), and the note must carry the ledger root key's signature.
* ``since=True``: rows up to the checkpoint are vouched for by the
  checkpoint. The stored Merkle tree must reproduce the checkpoint's root,
  the signer-registry events and the last checkpointed event are each
  proven included under it, and only the rows after it are verified in
  full; the new root is rebuilt from the checkpoint's frontier plus those
  rows, and a consistency proof must connect the two. The cost grows with
  the new events, not with the log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from ledger import checkpoint as notes
from ledger.chain import link_hash
from ledger.clock import recorded_at_of
from ledger.envelope import Record
from ledger.merkle import CompactRange, leaf_hash, verify_consistency, verify_inclusion
from ledger.merkle_log import MerkleLog
from ledger.store import Store
from ledger.verify import Authority, Finding, Report, Unauthorised, verify_records
from ledger.keys import verify_signature


def _folding(records: Iterator[Record], compact: CompactRange, stop_at: int | None,
             snapshot: list[bytes]) -> Iterator[Record]:
    for record in records:
        compact.append(leaf_hash(record.hash))
        if stop_at is not None and compact.size == stop_at:
            snapshot.append(compact.root())
        yield record


def verify_log(store: Store, authority: Authority, *, jobs: int | None = None, note: str | None = None,
               since: bool = False, authority_streams: Sequence[str] = (),
               on_progress: Callable[[int], None] | None = None,
               origin: str | None = None) -> tuple[Report, notes.Checkpoint | None]:
    """``origin``: this log's identity (``checkpoint.log_origin``, given by the CLI); a checkpoint of
    another log is then a finding."""
    report, cp = _verify_log(store, authority, jobs=jobs, note=note, since=since,
                             authority_streams=authority_streams, on_progress=on_progress)
    if cp is not None and origin is not None and cp.origin != origin:
        report.add(Finding(0, "", f"checkpoint: it is of the log {cp.origin!r}, not of this one ({origin!r})"))
    return report, cp


def _verify_log(store: Store, authority: Authority, *, jobs: int | None, note: str | None,
                since: bool, authority_streams: Sequence[str],
                on_progress: Callable[[int], None] | None) -> tuple[Report, notes.Checkpoint | None]:
    if note is not None and since:
        return _verify_since(store, authority, note, jobs, authority_streams, on_progress)
    try:
        cp = notes.parse(note)[0] if note is not None else None
    except notes.CheckpointError as e:
        report = Report()
        report.add(Finding(0, "", f"checkpoint: {e}"))
        return report, None
    compact, snapshot = CompactRange(), list[bytes]()
    report = verify_records(_folding(store.records(), compact, cp.size if cp else None, snapshot), authority,
                            jobs=jobs, on_progress=on_progress)
    report.tree_size, report.tree_root = compact.size, compact.root()
    if cp is not None:
        _check_note(report, note or "", authority.root_public, authority)
        if compact.size < cp.size:
            report.add(Finding(report.head_position, "", f"truncated: the log holds {compact.size} events, "
                                                          f"the checkpoint covers {cp.size}"))
        elif snapshot and snapshot[0] != cp.root:
            report.add(Finding(0, "", f"rewritten: the first {cp.size} events do not reproduce the "
                                      "checkpoint's root"))
    return report, cp


def _check_note(report: Report, note: str, root_public: bytes | None, authority: object = None) -> None:
    if root_public is None:
        report.add(Finding(0, "", "checkpoint: the ledger has no root key to check it with"))
        return
    # A dedicated checkpoint (log) key registered in the log signs too, so the root key can stay offline.
    extra: list[bytes] = getattr(authority, "checkpoint_keys", lambda **_: [])(include_revoked=True)
    for key in [root_public, *extra]:
        try:
            notes.verify(note, key)
            return
        except notes.CheckpointError as e:
            error = e
    report.add(Finding(0, "", f"checkpoint: {error} (the ledger's root or log key); was the ledger rebuilt?"))


def _verify_since(store: Store, authority: Authority, note: str, jobs: int | None,
                  authority_streams: Sequence[str],
                  on_progress: Callable[[int], None] | None) -> tuple[Report, notes.Checkpoint | None]:
    report = Report()
    try:
        cp = notes.parse(note)[0]
    except notes.CheckpointError as e:
        report.add(Finding(0, "", f"checkpoint: {e}"))
        return report, None
    tree = MerkleLog(store)
    size = tree.sync()
    if size < cp.size:
        report.add(Finding(store.head_position(), "", f"truncated: the log holds {size} events, "
                                                      f"the checkpoint covers {cp.size}"))
        return report, cp
    if cp.size == 0 or tree.root(cp.size) != cp.root:
        report.add(Finding(0, "", f"rewritten: the stored tree of {cp.size} events does not reproduce the "
                                  "checkpoint's root"))
        return report, cp
    boundary = tree.position_of(cp.size - 1)

    def proven(record: Record) -> bool:
        index = tree.leaf_index(record.position)
        if index is None or index >= cp.size or link_hash(record.state, record.prev_hash) != record.hash:
            return False
        try:
            verify_inclusion(index, cp.size, leaf_hash(record.hash), tree.inclusion(index, cp.size), cp.root)
        except ValueError:
            return False
        return True

    for stream in authority_streams:
        for record in store.stream_records(stream):
            if record.position > boundary:
                break
            if not proven(record):
                report.add(Finding(record.position, record.event_id, "not included under the checkpoint"))
                continue
            env = record.envelope()
            try:
                public = authority.authorise(env)
            except Unauthorised as e:
                report.add(Finding(record.position, record.event_id, f"unauthorised: {e}"))
                public = None
            if public is not None and not verify_signature(public, record.signature, record.hash):
                report.add(Finding(record.position, record.event_id, "signature does not verify"))
            authority.observe(env)
    _check_note(report, note, authority.root_public, authority)
    at = store.record_at(boundary)
    found = [at] if at is not None else []
    if not found:
        report.add(Finding(boundary, "", f"truncated: the checkpoint's last event (position {boundary}) "
                                         "is gone from the log"))
        return report, cp
    last = found[0]
    if not proven(last):
        report.add(Finding(last.position, last.event_id, "the checkpoint's last event is not included under it"))
    compact = tree.compact_range(cp.size)
    suffix = verify_records(
        _folding(store.records(after=boundary), compact, None, []), authority, jobs=jobs,
        start_hash=last.hash, start_position=last.position,
        stream_head=lambda stream: store.stream_position_at(stream, boundary), on_progress=on_progress,
        start_recorded_at=recorded_at_of(last.state))
    for finding in suffix.findings:
        report.add(finding)
    report.events = suffix.events
    report.head_position, report.head_hash = suffix.head_position, suffix.head_hash
    report.root_fingerprint = authority.root_fingerprint
    report.tree_size, report.tree_root = compact.size, compact.root()
    if compact.size > cp.size:
        try:
            verify_consistency(cp.size, compact.size, cp.root, compact.root(),
                               tree.consistency(cp.size, compact.size))
        except (ValueError, LookupError) as e:
            report.add(Finding(0, "", f"consistency proof from the checkpoint fails: {e}"))
    return report, cp
