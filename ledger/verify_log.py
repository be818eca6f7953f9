"""Verifying a whole ledger, optionally against a checkpoint an inspector holds (SPEC §5.3, §5.4).

* Without a checkpoint: ``verify_records`` over every row.
* With a checkpoint: the same, while the leaves are folded into a compact
  range; the root after the checkpoint's size must equal the checkpoint's
  root (else the log was rewritten), the log must reach that size (else it
  was truncated), and the note must carry the ledger root key's signature.
* ``since=True``: rows up to the checkpoint are vouched for by the
  checkpoint, but only once their leaves, recomputed from the rows (one
  SHA-256 each, no signature), reproduce its root: the boundary is then
  exactly leaf ``size - 1``. The signer-registry rows of the prefix are
  checked in full (authorisation and signature, in order), so the registry
  at the boundary is bound; every row after it is verified in full and
  folded into the same tree. No stored Merkle table is read. Signatures,
  authorisation and payload decoding of the prefix's other rows are what
  this mode skips.

Every row is read from the lowest possible id: a row at id 0 or below is
outside the chain and a finding, never silently skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence

from pydantic import ValidationError

from ledger import checkpoint as notes
from ledger.chain import GENESIS_PREV_HASH, link_hash
from ledger.clock import recorded_at_of
from ledger.envelope import Envelope, Record
from ledger.keys import verify_signature
from ledger.merkle import CompactRange, leaf_hash
from ledger.store import Store
from ledger.verify import (
    FIRST_ID,
    Authority,
    Finding,
    Report,
    Unauthorised,
    verify_records,
)


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
    report = verify_records(_folding(store.records(after=FIRST_ID), compact, cp.size if cp else None, snapshot), authority,
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
    """Hash the checkpointed prefix (no signatures) and verify only what follows in full.

    Nothing is taken from a writable table on trust: the prefix's leaves are
    recomputed from the rows themselves and must give the checkpoint's root,
    so the boundary is exactly leaf ``size - 1`` and the prefix is the one the
    checkpoint signed. Rows of ``authority_streams`` (the signer registry) in
    the prefix are checked in full, in order, so the registry at the boundary
    is the signed one. Per-stream positions come from the signed bytes.
    """
    report = Report()
    try:
        cp = notes.parse(note)[0]
    except notes.CheckpointError as e:
        report.add(Finding(0, "", f"checkpoint: {e}"))
        return report, None
    if cp.size == 0:
        report.add(Finding(0, "", "checkpoint: an empty checkpoint vouches for nothing; verify without "
                                  "--since-checkpoint"))
        return report, cp
    compact = CompactRange()
    heads: dict[str, int] = {}
    rows = iter(store.records(after=FIRST_ID))
    prev_hash, prev_position = GENESIS_PREV_HASH, 0
    last_state: bytes | None = None
    for record in rows:
        _check_prefix_row(record, prev_hash, heads, authority, authority_streams, report)
        compact.append(leaf_hash(record.hash))
        prev_hash, prev_position, last_state = record.hash, record.position, record.state
        if compact.size == cp.size:
            break
    if compact.size < cp.size:
        report.add(Finding(prev_position, "", f"truncated: the log holds {compact.size} events, "
                                              f"the checkpoint covers {cp.size}"))
        return report, cp
    if compact.root() != cp.root:
        report.add(Finding(0, "", f"rewritten: the first {cp.size} rows do not reproduce the checkpoint's root"))
        return report, cp
    _check_note(report, note, authority.root_public, authority)
    suffix = verify_records(
        _folding(rows, compact, None, []), authority, jobs=jobs, start_hash=prev_hash,
        start_position=prev_position, stream_head=lambda stream: heads.get(stream, 0), on_progress=on_progress,
        start_recorded_at=recorded_at_of(last_state) if last_state is not None else None)
    for finding in suffix.findings:
        report.add(finding)
    report.events = suffix.events
    report.head_position, report.head_hash = suffix.head_position, suffix.head_hash
    report.root_fingerprint = authority.root_fingerprint
    report.tree_size, report.tree_root = compact.size, compact.root()
    return report, cp


def _check_prefix_row(record: Record, prev_hash: bytes, heads: dict[str, int], authority: Authority,
                      authority_streams: Sequence[str], report: Report) -> None:
    """Cheap checks of a row the checkpoint vouches for; registry rows get the full check."""
    def fail(reason: str) -> None:
        report.add(Finding(record.position, record.event_id, reason))

    if record.position <= 0:
        fail("row outside the chain: a stored id at or below 0 (the log's ids start at 1)")
    if record.prev_hash != prev_hash or link_hash(record.state, record.prev_hash) != record.hash:
        fail("chain broken or content changed inside the checkpointed prefix")
    try:
        signed = json.loads(record.state)
        stream, position = str(signed["stream"]), int(signed["position"])
    except (ValueError, KeyError, TypeError, RecursionError):
        fail("state does not decode to a signed envelope")
        return
    if (record.stream, record.stream_position) != (stream, position):
        fail(f"stored stream/position ({record.stream!r}, {record.stream_position}) differ from the signed "
             f"({stream!r}, {position})")
    if position != heads.get(stream, 0) + 1:
        fail(f"stream {stream!r} position {position} where {heads.get(stream, 0) + 1} was due")
    heads[stream] = max(position, heads.get(stream, 0))
    if stream not in authority_streams:
        return
    try:
        env = Envelope.from_canonical(record.state)
    except (ValueError, ValidationError):
        fail("state does not decode to a signed envelope")
        return
    try:
        public: bytes | None = authority.authorise(env)
    except Unauthorised as e:
        fail(f"unauthorised: {e}")
        public = None
    if public is not None and not verify_signature(public, record.signature, record.hash):
        fail("signature does not verify under the signer's registered key")
    authority.observe(env)
