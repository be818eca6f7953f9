"""The add-checkpoint decision of C2SP tlog-witness, free of HTTP.

Order of checks, as the spec lists them: a body that does not parse is
400; an unknown origin 404; no signature from a key trusted for that
origin 403; an old size above the checkpoint size 400; an old size other
than the stored one 409 (body: the stored size); a consistency proof that
fails 422; equal sizes with a different root 409. Otherwise the new
checkpoint is stored (in the same transaction as the check) and the
answer is a cosignature/v1 line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ledger import checkpoint as notes
from ledger import cosignature
from ledger.keys import Signer
from ledger.merkle import verify_consistency
from ledger.note import NoteError, strict_b64
from ledger.witness.state import Latest, WitnessState

MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Request:
    old_size: int
    proof: list[bytes]
    note: str


def parse_request(body: bytes) -> Request:
    """``old N``, up to 63 base64 proof lines, an empty line, then the checkpoint note."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("the body is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise NoteError("no empty line between the proof and the checkpoint")
    lines = head.split("\n")
    old_line, proof_lines = lines[0], lines[1:]
    size_text = old_line[4:]
    try:
        if not old_line.startswith("old "):
            raise notes.CheckpointError("not an old line")
        old_size = notes.parse_size(size_text)  # one spelling, below 2**63: never int() of 5,000 digits
    except notes.CheckpointError:
        raise NoteError("the first line must be 'old <size>' in decimal without leading zeroes") from None
    if len(proof_lines) > MAX_PROOF_LINES:
        raise NoteError(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in proof_lines:
        h = strict_b64(line)
        if len(h) != 32:
            raise NoteError("a consistency proof line is not a 32-byte hash")
        proof.append(h)
    return Request(old_size, proof, note)


@dataclass
class Witness:
    name: str
    signer: Signer
    state: WitnessState
    logs: dict[str, list[bytes]]  # origin -> trusted Ed25519 public keys of that log
    clock: Callable[[], float] = field(default=time.time)

    @property
    def vkey(self) -> str:
        return str(cosignature.vkey_for(self.name, self.signer))

    def add_checkpoint(self, body: bytes) -> Answer:
        try:
            req = parse_request(body)
            cp, note_text, _sigs = notes.parse(req.note)
        except NoteError as e:
            return Answer(400, f"malformed request: {e}\n")
        keys = self.logs.get(cp.origin)
        if keys is None:
            return Answer(404, f"unknown log origin {cp.origin}\n")
        if not any(_signed_by(req.note, key) for key in keys):
            return Answer(403, "no signature from a key trusted for this log\n")
        if req.old_size > cp.size:
            return Answer(400, f"old size {req.old_size} is above the checkpoint size {cp.size}\n")
        text = body.decode()
        with self.state.transaction() as tx:
            latest = tx.latest(cp.origin)
            stored = latest.size if latest else 0
            if latest is not None and cp.size == latest.size and cp.root != latest.root:
                tx.keep_evidence(self._now(), cp.origin, f"a second root for size {cp.size}", latest.note, text)
            if req.old_size != stored:
                return Answer(409, f"{stored}\n", SIZE_CONTENT_TYPE)
            failure = _inconsistent(req, cp, latest)
            if failure is not None:
                tx.keep_evidence(self._now(), cp.origin, f"consistency proof fails: {failure}",
                                 latest.note if latest else None, text)
                return Answer(422, f"consistency proof does not verify: {failure}\n")
            if latest is not None and cp.size == latest.size and cp.root != latest.root:
                return Answer(409, f"{stored}\n", SIZE_CONTENT_TYPE)
            if latest is None or cp.size > latest.size:  # the same checkpoint again changes nothing stored
                tx.store(cp.origin, cp.size, cp.root, req.note)
            timestamp = int(self.clock())
            line = cosignature.cosign(note_text, self.name, self.signer, timestamp).line()
        return Answer(200, line)

    def _now(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).isoformat()


def _signed_by(note: str, public_raw: bytes) -> bool:
    try:
        notes.verify(note, public_raw)
    except NoteError:
        return False
    return True


def _inconsistent(req: Request, cp: notes.Checkpoint, latest: Latest | None) -> str | None:
    """Why the proof fails, or None. From size 0 the proof must be empty."""
    if req.old_size == 0:
        return "a proof from size 0 must be empty" if req.proof else None
    assert latest is not None  # old size equals the stored size, which is not 0
    if req.old_size == cp.size:
        return "a proof between equal sizes must be empty" if req.proof else None
    try:
        verify_consistency(req.old_size, cp.size, latest.root, cp.root, req.proof)
    except ValueError as e:
        return str(e)
    return None
