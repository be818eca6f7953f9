"""Published test vectors: RFC 8032 (Ed25519) and RFC 8785 (JSON canonicalization)."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.canonical import canonical_bytes
from ledger.keys import Signer, raw_public_bytes, verify_signature

# RFC 8032 §7.1, TEST 1 (empty message).
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065"
    "224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def test_rfc8032_test1_public_key_and_signature() -> None:
    signer = Signer(Ed25519PrivateKey.from_private_bytes(RFC8032_SECRET))
    assert raw_public_bytes(signer.private_key.public_key()) == RFC8032_PUBLIC
    assert signer.sign(b"") == RFC8032_SIGNATURE
    assert verify_signature(RFC8032_PUBLIC, RFC8032_SIGNATURE, b"")


def test_rfc8032_test1_rejects_altered_message_or_signature() -> None:
    assert not verify_signature(RFC8032_PUBLIC, RFC8032_SIGNATURE, b"\x00")
    bad = bytearray(RFC8032_SIGNATURE)
    bad[0] ^= 1
    assert not verify_signature(RFC8032_PUBLIC, bytes(bad), b"")


# RFC 8785 §3.2.2: the sample input and its canonical output.
RFC8785_INPUT = r'''{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}'''
RFC8785_OUTPUT = (
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
    '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
).encode("utf-8")


def test_rfc8785_sample() -> None:
    assert canonical_bytes(json.loads(RFC8785_INPUT)) == RFC8785_OUTPUT


def test_rfc8785_property_sorting_by_utf16_code_units() -> None:
    # RFC 8785 §3.2.3: keys sort by UTF-16 code units, not by code points.
    value = {
        "\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One", "\U0001F600": "Emoji: Grinning Face", "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys_in_output = list(json.loads(canonical_bytes(value)).keys())
    assert keys_in_output == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001F600", "\ufb33"]


@pytest.mark.parametrize(
    ("number", "text"),
    [  # RFC 8785 Appendix B
        (0.0, "0"), (-0.0, "0"), (5e-324, "5e-324"), (1.7976931348623157e308, "1.7976931348623157e+308"),
        (9007199254740992.0, "9007199254740992"), (1e21, "1e+21"), (1e-7, "1e-7"), (0.000001, "0.000001"),
        (295147905179352830000.0, "295147905179352830000"), (333333333.3333333, "333333333.3333333"),
    ],
)
def test_rfc8785_numbers(number: float, text: str) -> None:
    assert canonical_bytes(number) == text.encode()


# RFC 8032 §7.1, TEST 2 (one byte) and TEST 3 (two bytes): checked through the libsodium verifier.
RFC8032_MORE = (
    ("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
     "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
     "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
)


@pytest.mark.parametrize(("public", "message", "signature"), RFC8032_MORE)
def test_rfc8032_tests_2_and_3_verify(public: str, message: str, signature: str) -> None:
    pub, msg, sig = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
    assert verify_signature(pub, sig, msg)
    assert not verify_signature(pub, sig, msg + b"\x00")


def test_verifier_agrees_with_cryptography_and_rejects_malformed_input() -> None:
    """libsodium verifies, cryptography signs: they must agree, and garbage is "does not verify"."""
    key = Ed25519PrivateKey.generate()
    public = raw_public_bytes(key.public_key())
    for n in range(50):
        message = bytes([n]) * n
        signature = key.sign(message)
        assert verify_signature(public, signature, message)
        assert not verify_signature(public, signature[:-1] + bytes([signature[-1] ^ 1]), message)
    assert not verify_signature(public[:31], signature, message)
    assert not verify_signature(public, signature[:63], message)
    assert not verify_signature(b"\x00" * 32, b"\x00" * 64, b"")
