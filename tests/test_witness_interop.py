"""Interoperability: the published examples of the C2SP specs parse with our code, with the key ids,
timestamps and byte layouts the specs give, and our own notes and cosignatures have the same layout.

Examples are copied verbatim from the spec texts of the C2SP/C2SP repository: tlog-checkpoint.md,
tlog-cosignature.md, tlog-witness.md; and the signed-note reference vector of Go's
golang.org/x/mod/sumdb/note package documentation (the vkey format the C2SP specs refer to).
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import checkpoint, cosignature, note
from ledger.keys import Signer, raw_public_bytes, verify_signature
from ledger.witness.core import parse_request

# tlog-cosignature.md, "Below is an example of a checkpoint that contains a cosignature."
COSIGNED_EXAMPLE = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo"
    "+zyWE+xeMcTOAYQ8=\n"
    "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0"
    "xUe+mbIUBkBIfZ+qnA==\n"
)

# tlog-cosignature.md, "Ed25519 signed message" example.
SIGNED_MESSAGE_EXAMPLE = (
    "cosignature/v1\n"
    "time 1679315147\n"
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)

# tlog-witness.md, "Example request body".
REQUEST_EXAMPLE = (
    "old 20852014\n"
    "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
    "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
    "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n"
    "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n"
    "\n"
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo"
    "+zyWE+xeMcTOAYQ8=\n"
    "\u2014 example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5R"
    "ovnzv++qbSzm9Q=\n"
)

# tlog-witness.md, "Example response body".
RESPONSE_EXAMPLE = (
    "\u2014 witness.example/w1 CMp+6LWBU0anHGH5aNDTJkH/gj79sG+T6+iP2ThYN5krrDJbR1HDnucjL39QsZTSvVjyQLrdk3DXDqI5G2HgLatV"
    "s0pWh6Up69HVOw==\n"
    "\u2014 witness.example/w1 I7rEps0pvK2UqkS2gSpVUDhrhVtQV9lgF6pRrWAvjJHjyWpW7VcE3SiOlVlbQNt64vWhO+DlkL0+UfzuOBMh9Chd"
    "MkP1vi/lCAsmlw==\n"
    "\u2014 witness.example/w2 AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aLZgrrKbYKA7nC3HNJhm/kWl7oJlqU3"
    "rXXvpysAdyP3wQ==\n"
)

# golang.org/x/mod/sumdb/note documentation: a signer key, its verifier key and a signed note.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_NOTE = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
    "\n"
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_checkpoint_example_layout() -> None:
    cp, body, sigs = checkpoint.parse(COSIGNED_EXAMPLE)
    assert (cp.origin, cp.size, len(cp.root)) == ("example.com/behind-the-sofa", 20852163, 32)
    assert body == COSIGNED_EXAMPLE.split("\n\n")[0] + "\n" and cp.body() == body
    (log_name, log_id, log_sig), (w_name, w_id, w_data) = sigs
    assert (log_name, log_id.hex(), len(log_sig)) == ("example.com/behind-the-sofa", "033de0ae", 64)
    assert (w_name, w_id.hex(), len(w_data)) == ("witness.example.com/w1", "8d66cf3f", 8 + 64)


def test_cosignature_example_timestamp_and_signed_message() -> None:
    text, sigs = note.split(COSIGNED_EXAMPLE)
    witness_sig = sigs[1]
    timestamp = int.from_bytes(witness_sig.data[:8], "big")
    assert timestamp == 1679315147
    assert cosignature.message(text, timestamp) == SIGNED_MESSAGE_EXAMPLE.encode()
    assert witness_sig.line() == COSIGNED_EXAMPLE.split("\n")[5] + "\n"  # re-encodes byte for byte


def test_witness_request_and_response_examples_parse() -> None:
    req = parse_request(REQUEST_EXAMPLE.encode())
    assert req.old_size == 20852014 and len(req.proof) == 4 and all(len(h) == 32 for h in req.proof)
    cp, _, sigs = checkpoint.parse(req.note)
    assert cp.size == 20852163 and [s[0] for s in sigs] == ["example.com/behind-the-sofa"] * 2
    lines = note.parse_signature_lines(RESPONSE_EXAMPLE)
    assert [s.name for s in lines] == ["witness.example/w1", "witness.example/w1", "witness.example/w2"]
    assert all(len(s.data) == 8 + 64 for s in lines)  # timestamped_signature: u64 ‖ Ed25519


def test_go_reference_vector_key_id_vkey_and_signature() -> None:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert seed[0] == note.ED25519
    signer = Signer(Ed25519PrivateKey.from_private_bytes(seed[1:]))
    vkey = note.Vkey("PeterNeumann", note.ED25519, raw_public_bytes(signer.private_key.public_key()))
    assert str(vkey) == GO_VKEY and vkey.key_id.hex() == "c74f20a3"
    assert note.parse_vkey(GO_VKEY) == vkey
    text, (sig,) = note.split(GO_NOTE)
    assert vkey.matches(sig) and verify_signature(vkey.public_raw, sig.data, text.encode())
    assert checkpoint.note_key_id("PeterNeumann", vkey.public_raw).hex() == "c74f20a3"


def test_our_cosignature_has_the_published_layout() -> None:
    signer = Signer(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
    text = note.split(COSIGNED_EXAMPLE)[0]
    ours = cosignature.cosign(text, "witness.example.com/w1", signer, 1679315147)
    published = note.split(COSIGNED_EXAMPLE)[1][1]
    assert ours.name == published.name and ours.data[:8] == published.data[:8]
    assert len(ours.line()) == len(published.line())
    vkey = cosignature.vkey_for("witness.example.com/w1", signer)
    assert str(vkey).split("+", 2)[2].startswith("B")  # base64 of 0x04 ‖ key: type byte 0x04
    assert vkey.key_id == note.key_id("witness.example.com/w1", 0x04, signer.public_raw) != \
        note.key_id("witness.example.com/w1", 0x01, signer.public_raw)
    assert cosignature.verify(text, ours, vkey) is not None
    assert cosignature.verify(text.replace("20852163", "20852164"), ours, vkey) is None
