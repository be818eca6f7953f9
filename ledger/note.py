"""C2SP signed-note: notes, signature lines, key ids and verifier keys (vkeys).

A signed note is a text ending in a newline, a blank line, then one or
more signature lines ``— <key name> base64(key id ‖ signature)``. The text
is separated from the signatures by the *last* blank line. A key id is
``SHA-256(key name ‖ 0x0A ‖ signature type ‖ public key)[:4]``; the type
byte is 0x01 for an Ed25519 note signature and 0x04 for a timestamped
Ed25519 cosignature (C2SP tlog-cosignature), so one key and name give two
different ids and a note signature can never pass for a cosignature.

A verifier key (the Go ``sumdb/note`` form the C2SP specs refer to) is
``<name>+<8 lower-case hex digits of the key id>+base64(type ‖ public key)``.

Verifiers ignore signatures from unknown keys: a line matters only when
both its name and its key id match a key the verifier was configured with.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
SIGNATURE_PREFIX = "\u2014 "
MAX_SIGNATURES = 100  # the spec asks verifiers to accept at least 16


class NoteError(ValueError):
    """A note, a signature line or a verifier key that does not parse."""


def strict_b64(text: str) -> bytes:
    """Decode base64 that must be in its one canonical form (no stray padding bits)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("not base64") from None
    if base64.b64encode(raw).decode() != text:
        raise NoteError("base64 is not in canonical form")
    return raw


def valid_name(name: str) -> bool:
    """Key names are non-empty, with no Unicode space and no '+'."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name: str, sig_type: int, public_raw: bytes) -> bytes:
    """SHA-256(key name ‖ 0x0A ‖ signature type ‖ public key)[:4], big-endian as written."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_raw).digest()[:4]


@dataclass(frozen=True)
class Signature:
    """One signature line: who (name, key id) and the bytes after the key id."""

    name: str
    key_id: bytes
    data: bytes

    def line(self) -> str:
        return f"{SIGNATURE_PREFIX}{self.name} {base64.b64encode(self.key_id + self.data).decode()}\n"


def parse_signature_line(line: str) -> Signature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteError("a signature line must start with an em dash and a space")
    name, sep, blob_text = line[len(SIGNATURE_PREFIX):].rpartition(" ")
    if not sep or not valid_name(name):
        raise NoteError("a signature line needs a key name without spaces or '+'")
    blob = strict_b64(blob_text)
    if len(blob) < 5:
        raise NoteError("a signature is shorter than its key id")
    return Signature(name, blob[:4], blob[4:])


def _check_characters(note: str) -> None:
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NoteError("a signed note must not hold control characters other than newline")


def split(note: str) -> tuple[str, list[Signature]]:
    """The note text (with its final newline) and its signature lines."""
    _check_characters(note)
    if not note.endswith("\n"):
        raise NoteError("a signed note must end with a newline")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise NoteError("not a signed note: no blank line before the signatures")
    text, sig_block = note[:cut + 1], note[cut + 2:]
    lines = sig_block.split("\n")[:-1]  # the block ends with a newline
    if not lines:
        raise NoteError("signed note has no signature")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"a signed note may hold at most {MAX_SIGNATURES} signatures")
    return text, [parse_signature_line(line) for line in lines]


def parse_signature_lines(block: str) -> list[Signature]:
    """Signature lines on their own (a witness's response body): each ends with a newline."""
    _check_characters(block)
    if not block.endswith("\n"):
        raise NoteError("signature lines must end with a newline")
    lines = block.split("\n")[:-1]
    if not lines or len(lines) > MAX_SIGNATURES:
        raise NoteError("expected between 1 and 100 signature lines")
    return [parse_signature_line(line) for line in lines]


def join(text: str, signatures: list[Signature]) -> str:
    return text + "\n" + "".join(s.line() for s in signatures)


@dataclass(frozen=True)
class Vkey:
    """A verifier key: name, signature type and raw public key (the key id follows from them)."""

    name: str
    sig_type: int
    public_raw: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.sig_type, self.public_raw)

    def __str__(self) -> str:
        data = base64.b64encode(bytes([self.sig_type]) + self.public_raw).decode()
        return f"{self.name}+{self.key_id.hex()}+{data}"

    def matches(self, sig: Signature) -> bool:
        return sig.name == self.name and sig.key_id == self.key_id


def parse_vkey(text: str) -> Vkey:
    """``name+hexid+base64(type ‖ key)``; the id must be the one the name and key give."""
    text = text.strip()
    name, _, rest = text.partition("+")
    hex_id, _, data_text = rest.partition("+")
    if not valid_name(name):
        raise NoteError("verifier key: the name is empty or holds a space")
    if len(hex_id) != 8 or hex_id.lower() != hex_id or any(c not in "0123456789abcdef" for c in hex_id):
        raise NoteError("verifier key: the key id must be 8 lower-case hex digits")
    data = strict_b64(data_text)
    if len(data) != 33 or data[0] not in (ED25519, COSIGNATURE_V1):
        raise NoteError("verifier key: expected an Ed25519 key of type 0x01 or 0x04")
    vkey = Vkey(name, data[0], data[1:])
    if vkey.key_id.hex() != hex_id:
        raise NoteError("verifier key: the key id does not match the name and key")
    return vkey
