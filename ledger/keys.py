"""Ed25519 signing keys, their encrypted files and their fingerprints.

A key file's passphrase is the second signing component (21 CFR 11.200).
The file format (Argon2id, then ChaCha20-Poly1305 over the seed, so every
passphrase guess pays the full memory-hard KDF) is in ``ledger.keyfile``;
this module creates, loads and rewraps the files.
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

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from ledger import keyfile
from ledger.errors import KeyFileError
from ledger.keyfile import DEFAULT_KDF, KdfParams

# Create only: never overwrite, never follow a symlink planted at the name.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


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


PACKED = 128  # public key (32) ‖ signature (64) ‖ 32-byte message: one check in a packed batch


def failed_signatures(packed: bytes) -> list[int]:
    """Indexes of the checks in ``packed`` (``PACKED`` bytes each) whose signature does not verify.

    The verifier's workers receive a chunk as one bytes object; signature ‖
    message is already libsodium's signed-message layout, so each check is
    one call with no key object or copy (~1.5 µs less per event than
    :func:`verify_signature`; same libsodium function, same verdicts).
    """
    failed = []
    for i in range(0, len(packed), PACKED):
        try:
            crypto_sign_open(packed[i + 32:i + PACKED], packed[i:i + 32])
        except (BadSignatureError, ValueError, TypeError):
            failed.append(i // PACKED)
    return failed


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


def _create(path: Path, blob: bytes, mode: int) -> None:
    """Write a new file; refuse (exit 3) if anything, even a dangling symlink, is at ``path``."""
    try:
        fd = os.open(path, _CREATE_FLAGS, mode)
    except FileExistsError:
        raise KeyFileError(f"{path}: file exists; refusing to overwrite a key") from None
    except OSError as e:
        raise KeyFileError(f"{path}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())


def pub_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def write_key_pair(signer: Signer, user_id: str, path: Path, passphrase: str, *,
                   kdf: KdfParams = DEFAULT_KDF) -> Path:
    """Write the encrypted key (mode 0600) and ``path.pub`` beside it; return the .pub path.

    Both are created with O_EXCL and O_NOFOLLOW, and nothing is written if
    either name is taken. ``kdf`` is for tests (``keyfile.TEST_ONLY_KDF``).
    """
    pub_path = pub_path_for(path)
    for p in (path, pub_path):
        if os.path.lexists(p):
            raise KeyFileError(f"{p}: file exists; refusing to overwrite a key")
    blob = keyfile.seal(signer.private_key, user_id, passphrase, kdf)
    _create(path, blob, 0o600)
    try:
        _create(pub_path, f"{signer.public_b64} {user_id}\n".encode(), 0o644)
    except KeyFileError:
        path.unlink()
        raise
    return pub_path


def _read_key_bytes(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(keyfile.MAX_FILE_BYTES + 1)
    except OSError as e:
        raise KeyFileError(f"key file {path}: {e.strerror}") from None


def is_legacy_key_file(path: Path) -> bool:
    """A PKCS#12 file from an earlier release: it loads, but a passphrase search against it is cheap."""
    try:
        return not keyfile.is_current(_read_key_bytes(path))
    except KeyFileError:
        return False


def rewrap(path: Path, passphrase: str, *, kdf: KdfParams = DEFAULT_KDF) -> bool:
    """Re-encrypt a key file in place in the current format; returns whether it was legacy.

    Atomic: a new file (mode 0600) is written beside it, synced, and renamed
    over it, so a crash leaves the old file or the new one, never half of one.
    """
    blob = _read_key_bytes(path)
    legacy = not keyfile.is_current(blob)
    private = keyfile.open_legacy(blob, passphrase, str(path)) if legacy \
        else keyfile.open_sealed(blob, passphrase, str(path))
    user_id = _legacy_user_id(path) if legacy else keyfile.user_id_of(blob)
    new_blob = keyfile.seal(private, user_id, passphrase, kdf)
    tmp = path.with_name(f".{path.name}.rewrap-{os.getpid()}")
    _create(tmp, new_blob, 0o600)
    try:
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise KeyFileError(f"key file {path}: {e.strerror}") from None
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return legacy


def _legacy_user_id(path: Path) -> str:
    """PKCS#12 files carried the user id as a friendly name; the .pub beside them carries it too."""
    try:
        words = pub_path_for(path).read_text().split()
    except (OSError, UnicodeDecodeError):
        return ""
    return words[1] if len(words) > 1 else ""


def is_world_readable(path: Path) -> bool:
    """A key readable by every local user deserves a warning (it still loads)."""
    try:
        return bool(path.stat().st_mode & (stat.S_IROTH | stat.S_IRGRP))
    except OSError:
        return False


def read_private(path: Path, passphrase: str) -> Signer:
    """Load a key file; a wrong passphrase or a damaged file is a one-line KeyFileError."""
    blob = _read_key_bytes(path)
    if keyfile.is_current(blob):
        return Signer(private_key=keyfile.open_sealed(blob, passphrase, str(path)))
    return Signer(private_key=keyfile.open_legacy(blob, passphrase, str(path)))


def read_public(path: Path) -> str:
    """The base64 raw public key from a ``.pub`` file (first word of its first line)."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"public key file {path}: {getattr(e, 'strerror', None) or e}") from None
    word = text.split()[0] if text else ""
    public_from_b64(word)
    return word
