"""Ed25519 signing keys, their encrypted files and their fingerprints.

A key file is PKCS#12 with PBES2 (PBKDF2-SHA256, 600,000 rounds,
AES-256-CBC): its passphrase is the second signing component
(21 CFR 11.200), and the slow KDF keeps a stolen file from falling to a
cheap passphrase search. Plain PKCS#8 ``BestAvailableEncryption`` is not
used because its KDF is fast.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from functools import lru_cache

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import pkcs12
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from ledger.errors import KeyFileError

KDF_ROUNDS = 600_000


def raw_public_bytes(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public_raw: bytes) -> str:
    """SHA-256 of the raw 32-byte public key, as hex: what an inspector compares."""
    return hashlib.sha256(public_raw).hexdigest()


def key_id(public_raw: bytes) -> str:
    """The short id stored with every event: the first 16 hex digits of the fingerprint."""
    return fingerprint(public_raw)[:16]


def public_from_b64(text: str) -> Ed25519PublicKey:
    """A raw 32-byte Ed25519 public key in base64, as held in the log."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError("public key: not valid base64") from None
    if len(raw) != 32:
        raise KeyFileError(f"public key: expected 32 raw bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_signature(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    """Ed25519 verification through libsodium (PyNaCl): about twice as fast as OpenSSL's here.

    Verification is the cost of every full ``verify`` and of every read that
    recomputes from the log, so it uses the fastest well-kept verifier; keys and
    signing stay with ``cryptography``. Both implement RFC 8032 and agree on
    every valid signature (tests/test_vectors.py checks the published vectors
    through this function). A malformed key or signature is simply "does not verify".
    """
    if len(public_raw) != 32 or len(signature) != 64:
        return False
    try:
        _verify_key(public_raw).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


@lru_cache(maxsize=1024)
def _verify_key(public_raw: bytes) -> VerifyKey:
    """A log has few signers and many events: parse each key once."""
    return VerifyKey(public_raw)


@dataclass(frozen=True)
class Signer:
    """A loaded private key; it signs chained hashes.

    Who the key belongs to is not taken from the file: it is whoever the log
    registered the key for, so a renamed or copied file cannot change authorship.
    """

    private_key: Ed25519PrivateKey

    @cached_property
    def public_raw(self) -> bytes:
        return raw_public_bytes(self.private_key.public_key())

    @cached_property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_raw).decode()

    @cached_property
    def key_id(self) -> str:
        return key_id(self.public_raw)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)


def generate() -> Signer:
    return Signer(private_key=Ed25519PrivateKey.generate())


def _encryption(passphrase: bytes) -> serialization.KeySerializationEncryption:
    return (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(passphrase)
    )


def write_key_pair(signer: Signer, user_id: str, path: Path, passphrase: str) -> Path:
    """Write the encrypted key (mode 0600) and ``path.pub`` beside it; return the .pub path."""
    if not passphrase:
        raise KeyFileError("passphrase: must not be empty")
    blob = pkcs12.serialize_key_and_certificates(
        user_id.encode(), signer.private_key, None, None, _encryption(passphrase.encode())
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    pub_path = path.with_name(path.name + ".pub")
    pub_path.write_text(f"{signer.public_b64} {user_id}\n")
    return pub_path


def is_world_readable(path: Path) -> bool:
    """A key readable by every local user deserves a warning (it still loads)."""
    try:
        return bool(path.stat().st_mode & (stat.S_IROTH | stat.S_IRGRP))
    except OSError:
        return False


def read_private(path: Path, passphrase: str) -> Signer:
    """Load a key file; a wrong passphrase or a damaged file is a one-line KeyFileError."""
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"key file {path}: {e.strerror}") from None
    try:
        key, _cert, _cas = pkcs12.load_key_and_certificates(blob, passphrase.encode())
    except ValueError:
        raise KeyFileError(f"key file {path}: wrong passphrase or not a key file") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"key file {path}: not an Ed25519 key")
    return Signer(private_key=key)


def read_public(path: Path) -> str:
    """The base64 raw public key from a ``.pub`` file (first word of its first line)."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"public key file {path}: {getattr(e, 'strerror', None) or e}") from None
    word = text.split()[0] if text else ""
    public_from_b64(word)
    return word
