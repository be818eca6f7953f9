"""Key files (SPEC §5.1): every passphrase guess pays the full Argon2id; keygen never overwrites or follows links."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.serialization import PrivateFormat, pkcs12

from ledger import keyfile
from ledger.canonical import canonical_bytes
from ledger.errors import KeyFileError
from ledger.keys import Signer, read_private, rewrap, write_key_pair
from tests.conftest import PASSPHRASE, Cli, Keys

FIELDS = {"format", "version", "user_id", "kdf", "cipher", "ciphertext"}


def keygen(tmp_path: Path, out: Path, user: str = "dr-li") -> tuple[int, str]:
    r = Cli(str(tmp_path / "unused.db"))("keygen", "--user-id", user, "--out", str(out))
    return r.exit_code, r.stderr


def test_key_file_is_argon2id_then_an_aead_and_nothing_cheaper(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    assert keygen(tmp_path, key)[0] == 0
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    doc = json.loads(key.read_bytes())
    # Exactly these fields: no MAC, check value, public key or passphrase hash that a guess could be tried on.
    assert set(doc) == FIELDS and doc["format"] == "trial-ledger-key" and doc["version"] == 1
    kdf = doc["kdf"]
    assert set(kdf) == {"name", "memory_kib", "iterations", "lanes", "salt"}
    assert (kdf["name"], kdf["memory_kib"], kdf["iterations"], kdf["lanes"]) == ("argon2id", 65536, 3, 4)
    salt = base64.b64decode(kdf["salt"])
    assert len(salt) == 16
    assert doc["cipher"]["name"] == "chacha20-poly1305" and set(doc["cipher"]) == {"name", "nonce"}
    nonce, ciphertext = base64.b64decode(doc["cipher"]["nonce"]), base64.b64decode(doc["ciphertext"])
    assert len(ciphertext) == 32 + 16  # the seed and the AEAD tag: nothing else is encrypted or checked

    # Decrypt by hand, through the KDF path only: Argon2id with the file's parameters, then the AEAD.
    header = canonical_bytes({k: v for k, v in doc.items() if k != "ciphertext"})

    def derive(passphrase: str) -> bytes:
        return Argon2id(salt=salt, length=32, iterations=3, lanes=4, memory_cost=65536).derive(passphrase.encode())

    seed = ChaCha20Poly1305(derive(PASSPHRASE)).decrypt(nonce, ciphertext, header)
    public = base64.b64encode(Signer(Ed25519PrivateKey.from_private_bytes(seed)).public_raw).decode()
    assert (tmp_path / "k.key.pub").read_text().split()[0] == public
    # A wrong guess is only ever rejected by the AEAD tag, under a key that only the KDF gives.
    with pytest.raises(InvalidTag):
        ChaCha20Poly1305(derive("wrong")).decrypt(nonce, ciphertext, header)


def test_a_wrong_passphrase_runs_the_full_kdf_before_it_is_refused(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "k.key"
    write_key_pair(Signer(Ed25519PrivateKey.generate()), "u1", key, PASSPHRASE, kdf=keyfile.TEST_ONLY_KDF)
    calls: list[keyfile.KdfParams] = []
    real = keyfile._derive
    monkeypatch.setattr(keyfile, "_derive", lambda p, s, k: calls.append(k) or real(p, s, k))
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        read_private(key, "not it")
    assert calls == [keyfile.TEST_ONLY_KDF]  # the file's own parameters, once, for the wrong guess too
    read_private(key, PASSPHRASE)
    assert len(calls) == 2


@pytest.mark.parametrize("edit", [
    lambda d: d["kdf"].update(iterations=1),
    lambda d: d["kdf"].update(memory_kib=8),
    lambda d: d.update(user_id="someone-else"),
])
def test_changed_parameters_fail_like_a_wrong_passphrase(tmp_path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    key = tmp_path / "k.key"
    write_key_pair(Signer(Ed25519PrivateKey.generate()), "u1", key, PASSPHRASE,
                   kdf=keyfile.KdfParams(memory_kib=64, iterations=2, lanes=1))
    doc = json.loads(key.read_bytes())
    edit(doc)
    key.write_bytes(canonical_bytes(doc))
    with pytest.raises(KeyFileError):
        read_private(key, PASSPHRASE)


def test_a_crafted_file_cannot_ask_for_unbounded_memory(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    write_key_pair(Signer(Ed25519PrivateKey.generate()), "u1", key, PASSPHRASE, kdf=keyfile.TEST_ONLY_KDF)
    doc = json.loads(key.read_bytes())
    doc["kdf"]["memory_kib"] = 1 << 40
    key.write_bytes(canonical_bytes(doc))
    with pytest.raises(KeyFileError, match=r"kdf\.memory_kib"):
        read_private(key, PASSPHRASE)


def _legacy_pkcs12(signer: Signer, user: str, path: Path) -> None:
    """A key file as earlier releases wrote it (PKCS#12, PBKDF2 payload, 2,048-iteration MAC)."""
    enc = (PrivateFormat.PKCS12.encryption_builder().kdf_rounds(1000)
           .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(hashes.SHA256())
           .build(PASSPHRASE.encode()))
    path.write_bytes(pkcs12.serialize_key_and_certificates(user.encode(), signer.private_key, None, None, enc))
    path.chmod(0o600)
    path.with_name(path.name + ".pub").write_text(f"{signer.public_b64} {user}\n")


def test_legacy_pkcs12_loads_with_a_warning_and_rewraps_in_place(trial, keys: Keys, run: Cli,  # type: ignore[no-untyped-def]
                                                                 tmp_path: Path) -> None:
    legacy = tmp_path / "admin-legacy.key"
    _legacy_pkcs12(keys.signers["admin"], "admin", legacy)
    r = run("checkpoint", "--key", str(legacy), "--out", str(tmp_path / "cp1.txt"))
    assert r.exit_code == 0, r.stderr
    assert "legacy PKCS#12" in r.stderr and "key rewrap" in r.stderr

    wrong = run("key", "rewrap", str(legacy), env={"TRIAL_LEDGER_PASSPHRASE": "wrong"})
    assert wrong.exit_code == 3 and len(wrong.stderr.strip().splitlines()) == 1
    assert not keyfile.is_current(legacy.read_bytes())  # untouched

    inode = legacy.stat().st_ino
    r = run("key", "rewrap", str(legacy))
    assert r.exit_code == 0, r.stderr
    assert legacy.stat().st_ino != inode  # a new file renamed over the old one, not rewritten in place
    assert oct(legacy.stat().st_mode & 0o777) == "0o600"
    doc = json.loads(legacy.read_bytes())
    assert doc["kdf"]["name"] == "argon2id" and doc["kdf"]["memory_kib"] == 65536 and doc["user_id"] == "admin"
    assert sorted(p.name for p in tmp_path.iterdir() if "rewrap" in p.name) == []  # no temporary left behind
    assert read_private(legacy, PASSPHRASE).public_raw == keys.signers["admin"].public_raw
    r = run("checkpoint", "--key", str(legacy), "--out", str(tmp_path / "cp2.txt"))
    assert r.exit_code == 0 and "legacy" not in r.stderr


def test_rewrap_of_a_current_file_keeps_the_key(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    signer = Signer(Ed25519PrivateKey.generate())
    write_key_pair(signer, "u1", key, PASSPHRASE, kdf=keyfile.TEST_ONLY_KDF)
    assert rewrap(key, PASSPHRASE, kdf=keyfile.TEST_ONLY_KDF) is False
    assert read_private(key, PASSPHRASE).public_raw == signer.public_raw


# -- keygen: O_EXCL, no symlink following ---------------------------------------------------


def test_keygen_refuses_when_either_file_exists(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    key.write_text("precious")
    code, err = keygen(tmp_path, key)
    assert code == 3 and "exists" in err and key.read_text() == "precious"
    assert not (tmp_path / "k.key.pub").exists()

    other = tmp_path / "o.key"
    (tmp_path / "o.key.pub").write_text("precious")
    code, err = keygen(tmp_path, other)
    assert code == 3 and "exists" in err
    assert not other.exists() and (tmp_path / "o.key.pub").read_text() == "precious"


@pytest.mark.parametrize("dangling", [False, True])
def test_keygen_never_follows_a_symlink_planted_at_the_pub_file(tmp_path: Path, dangling: bool) -> None:
    victim = tmp_path / "victim.txt"
    if not dangling:
        victim.write_text("do not overwrite")
    key = tmp_path / "k.key"
    os.symlink(victim, tmp_path / "k.key.pub")
    code, err = keygen(tmp_path, key)
    assert code == 3 and "exists" in err and len(err.strip().splitlines()) == 1
    assert not key.exists()
    if dangling:
        assert not victim.exists()
    else:
        assert victim.read_text() == "do not overwrite"


def test_keygen_never_follows_a_symlink_planted_at_the_key_file(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    os.symlink(victim, tmp_path / "k.key")
    code, _err = keygen(tmp_path, tmp_path / "k.key")
    assert code == 3 and not victim.exists() and not (tmp_path / "k.key.pub").exists()


def test_keygen_refuses_a_user_id_with_a_newline(tmp_path: Path) -> None:
    code, err = keygen(tmp_path, tmp_path / "k.key", user="dr-li\nroot")
    assert code == 3 and "--user-id" in err and not (tmp_path / "k.key").exists()
