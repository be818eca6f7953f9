"""The encrypted key file: Argon2id over a random salt, then ChaCha20-Poly1305 over the Ed25519 seed.

SPEC §5.1: a stolen key file must not fall to a cheap passphrase search, so
every guess pays the full memory-hard KDF. The file holds nothing that a
guess could be checked against more cheaply: no MAC, no check value, no
public key, no hash of the passphrase. The only way to test a passphrase is
to run Argon2id with the file's parameters and try the AEAD's tag, and a
wrong passphrase costs exactly what a right one does.

The file is one line of RFC 8785 JSON::

    {"cipher": {"name": "chacha20-poly1305", "nonce": B64(12 bytes)},
     "ciphertext": B64(32-byte seed + 16-byte tag),
     "format": "trial-ledger-key",
     "kdf": {"iterations": 3, "lanes": 4, "memory_kib": 65536, "name": "argon2id", "salt": B64(16 bytes)},
     "user_id": "...", "version": 1}

The AEAD's associated data is the canonical JSON of every field except
``ciphertext``, so a changed parameter or user id fails like a wrong
passphrase. The parameters live in the file, so loading always runs the KDF
the file names; only tests write cheap parameters (``TEST_ONLY_KDF``).

Earlier releases wrote PKCS#12 (whose MAC is checked with 2,048 SHA-256
iterations before the slow KDF runs); such files still load, flagged as
legacy, and ``trial-ledger key rewrap`` converts them.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from ledger.canonical import canonical_bytes
from ledger.errors import KeyFileError

FORMAT = "trial-ledger-key"
VERSION = 1
KDF_NAME = "argon2id"
CIPHER_NAME = "chacha20-poly1305"
SALT_BYTES = 16
NONCE_BYTES = 12
SEED_BYTES = 32
MAX_FILE_BYTES = 64 * 1024
# Bounds a loaded file must respect, so a crafted file cannot ask for 1 TiB of memory.
MAX_MEMORY_KIB = 2 * 1024 * 1024  # RFC 9106 first recommended option: 2 GiB
MAX_ITERATIONS = 64
MAX_LANES = 64


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost: memory in KiB, passes, lanes (RFC 9106 §4)."""

    memory_kib: int
    iterations: int
    lanes: int


# RFC 9106 §4, second recommended option: 64 MiB, 3 passes, 4 lanes.
DEFAULT_KDF = KdfParams(memory_kib=64 * 1024, iterations=3, lanes=4)
# For tests only: they write dozens of keys. Loading still runs the KDF these name.
TEST_ONLY_KDF = KdfParams(memory_kib=64, iterations=1, lanes=1)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _derive(passphrase: bytes, salt: bytes, kdf: KdfParams) -> bytes:
    return Argon2id(salt=salt, length=32, iterations=kdf.iterations, lanes=kdf.lanes,
                    memory_cost=kdf.memory_kib).derive(passphrase)


def _header(user_id: str, kdf: KdfParams, salt: bytes, nonce: bytes) -> dict[str, Any]:
    return {
        "format": FORMAT, "version": VERSION, "user_id": user_id,
        "kdf": {"name": KDF_NAME, "memory_kib": kdf.memory_kib, "iterations": kdf.iterations,
                "lanes": kdf.lanes, "salt": _b64(salt)},
        "cipher": {"name": CIPHER_NAME, "nonce": _b64(nonce)},
    }


def seal(private_key: Ed25519PrivateKey, user_id: str, passphrase: str, kdf: KdfParams = DEFAULT_KDF) -> bytes:
    """The key file's bytes for ``private_key`` under ``passphrase``."""
    if not passphrase:
        raise KeyFileError("passphrase: must not be empty")
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)
    header = _header(user_id, kdf, salt, nonce)
    seed = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    key = _derive(passphrase.encode(), salt, kdf)
    ciphertext = ChaCha20Poly1305(key).encrypt(nonce, seed, canonical_bytes(header))
    return canonical_bytes({**header, "ciphertext": _b64(ciphertext)}) + b"\n"


def is_current(blob: bytes) -> bool:
    """Whether ``blob`` is in this module's format (else it may be legacy PKCS#12)."""
    return blob.lstrip()[:1] == b"{"


def open_sealed(blob: bytes, passphrase: str, where: str) -> Ed25519PrivateKey:
    """Decrypt a key file in the current format; every failure is one KeyFileError line."""
    doc = _parse(blob, where)
    kdf_doc, cipher_doc = doc["kdf"], doc["cipher"]
    kdf = KdfParams(kdf_doc["memory_kib"], kdf_doc["iterations"], kdf_doc["lanes"])
    salt, nonce = _raw(kdf_doc["salt"], where, "kdf.salt"), _raw(cipher_doc["nonce"], where, "cipher.nonce")
    ciphertext = _raw(doc["ciphertext"], where, "ciphertext")
    if len(salt) < SALT_BYTES or len(salt) > 64 or len(nonce) != NONCE_BYTES or len(ciphertext) != SEED_BYTES + 16:
        raise KeyFileError(f"key file {where}: salt, nonce or ciphertext has the wrong length")
    header = {name: value for name, value in doc.items() if name != "ciphertext"}
    key = _derive(passphrase.encode(), salt, kdf)
    try:
        seed = ChaCha20Poly1305(key).decrypt(nonce, ciphertext, canonical_bytes(header))
    except InvalidTag:
        raise KeyFileError(f"key file {where}: wrong passphrase or a damaged key file") from None
    return Ed25519PrivateKey.from_private_bytes(seed)


def open_legacy(blob: bytes, passphrase: str, where: str) -> Ed25519PrivateKey:
    """A PKCS#12 key file from an earlier release (its MAC makes guessing cheap: rewrap it)."""
    # Imported here: pkcs12 pulls in x509 (~30-70 ms), which no current key file needs.
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        key, _cert, _cas = pkcs12.load_key_and_certificates(blob, passphrase.encode())
    except ValueError:
        raise KeyFileError(f"key file {where}: wrong passphrase or not a key file") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"key file {where}: not an Ed25519 key")
    return key


def user_id_of(blob: bytes) -> str:
    """The user id written in a current-format file ("" for a legacy one)."""
    try:
        doc = json.loads(blob)
        return str(doc["user_id"]) if isinstance(doc, dict) else ""
    except (ValueError, KeyError, RecursionError):
        return ""


def _parse(blob: bytes, where: str) -> dict[str, Any]:
    bad = KeyFileError(f"key file {where}: not a {FORMAT} file of version {VERSION}")
    if len(blob) > MAX_FILE_BYTES:
        raise bad
    try:
        doc = json.loads(blob, parse_constant=lambda _c: None)
    except (ValueError, RecursionError):
        raise bad from None
    if not isinstance(doc, dict) or set(doc) != {"format", "version", "user_id", "kdf", "cipher", "ciphertext"}:
        raise bad
    if doc["format"] != FORMAT or type(doc["version"]) is not int or doc["version"] != VERSION \
            or not isinstance(doc["user_id"], str):
        raise bad
    kdf, cipher = doc["kdf"], doc["cipher"]
    if not isinstance(kdf, dict) or set(kdf) != {"name", "memory_kib", "iterations", "lanes", "salt"} \
            or kdf["name"] != KDF_NAME:
        raise KeyFileError(f"key file {where}: the KDF must be {KDF_NAME}")
    if not isinstance(cipher, dict) or set(cipher) != {"name", "nonce"} or cipher["name"] != CIPHER_NAME:
        raise KeyFileError(f"key file {where}: the cipher must be {CIPHER_NAME}")
    for name, low, high in (("lanes", 1, MAX_LANES), ("iterations", 1, MAX_ITERATIONS),
                            ("memory_kib", 8 * _int(kdf["lanes"]), MAX_MEMORY_KIB)):
        value = kdf[name]
        if type(value) is not int or not low <= value <= high:
            raise KeyFileError(f"key file {where}: kdf.{name} must be an integer from {low} to {high}")
    return doc


def _int(value: Any) -> int:
    return value if type(value) is int else 1


def _raw(text: Any, where: str, name: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise KeyFileError(f"key file {where}: {name} is not base64") from None
    if _b64(raw) != text:
        raise KeyFileError(f"key file {where}: {name} is not canonical base64")
    return raw
