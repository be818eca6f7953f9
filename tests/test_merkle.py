"""RFC 9162 §2.1 against the published vectors (transparency-dev/merkle's proof tests), plus properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                       "606162636465666768696a6b6c6d6e6f")]
LEAF_HASHES = [leaf_hash(d) for d in LEAVES]
ROOTS = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]


def h(*hexes: str) -> list[bytes]:
    return [bytes.fromhex(x) for x in hexes]


INCLUSION = [  # (leaf index, tree size, proof)
    (0, 1, []),
    (0, 8, h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (5, 8, h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 3, h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (1, 5, h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
]

CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (6, 8, h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 5, h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
    (6, 7, h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
]


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_of_the_published_tree(size: int) -> None:
    assert root(LEAF_HASHES[:size]) == ROOTS[size - 1]
    compact = CompactRange()
    for leaf in LEAF_HASHES[:size]:
        compact.append(leaf)
    assert compact.root() == ROOTS[size - 1]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert root([]) == EMPTY_ROOT == bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_published_inclusion_proofs(index: int, size: int, proof: list[bytes]) -> None:
    assert inclusion_proof(index, LEAF_HASHES[:size]) == proof
    verify_inclusion(index, size, LEAF_HASHES[index], proof, ROOTS[size - 1])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_published_consistency_proofs(old: int, new: int, proof: list[bytes]) -> None:
    assert consistency_proof(old, LEAF_HASHES[:new]) == proof
    verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], proof)


def test_verifiers_reject_bad_hash_sizes_and_size_zero() -> None:
    with pytest.raises(ValueError, match="hashes must be 32 bytes"):
        verify_inclusion(0, 1, b"short", [], ROOTS[0])
    with pytest.raises(ValueError, match="hashes must be 32 bytes"):
        verify_inclusion(0, 8, LEAF_HASHES[0], [b"x" * 31], ROOTS[7])
    with pytest.raises(ValueError, match="no consistency proof from an empty tree"):
        verify_consistency(0, 1, EMPTY_ROOT, ROOTS[0], [])
    with pytest.raises(ValueError, match="the old tree is larger than the new one"):
        verify_consistency(2, 1, ROOTS[1], ROOTS[0], [])


# Every way a verifier refuses a proof (ledger/merkle.py); a crash with another ValueError must not pass.
REFUSED = (r"does not lead to the root|does not connect the two roots|outside the tree|is too long|"
           r"empty consistency proof|equal sizes need|hashes must be 32 bytes")


def _flip(proof: list[bytes], i: int, bit: int) -> list[bytes]:
    out = list(proof)
    b = bytearray(out[i])
    b[bit // 8] ^= 1 << (bit % 8)
    out[i] = bytes(b)
    return out


def tree(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 64).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1), st.integers(0, 255))))
def test_inclusion_property(args: tuple[int, int, int]) -> None:
    n, index, bit = args
    leaves = tree(n)
    r = root(leaves)
    proof = inclusion_proof(index, leaves)
    verify_inclusion(index, n, leaves[index], proof, r)
    # the probes transparency-dev/merkle uses: a wrong index, or a tree of another height
    for bad_index, bad_size in ((index - 1, n), (index + 1, n), (index ^ 2, n), (index, n * 2), (index, n // 2)):
        if (bad_index, bad_size) != (index, n) and bad_index >= 0:
            with pytest.raises(ValueError, match=REFUSED):
                verify_inclusion(bad_index, bad_size, leaves[index], proof, r)
    if proof:
        with pytest.raises(ValueError, match=REFUSED):
            verify_inclusion(index, n, leaves[index], _flip(proof, bit % len(proof), bit), r)
    with pytest.raises(ValueError, match=REFUSED):
        verify_inclusion(index, n, _flip([leaves[index]], 0, bit)[0], proof, r)


def test_every_inclusion_and_consistency_proof_up_to_64() -> None:
    for n in range(1, 65):
        leaves = tree(n)
        r = root(leaves)
        for index in range(n):
            verify_inclusion(index, n, leaves[index], inclusion_proof(index, leaves), r)
        for m in range(1, n + 1):
            proof = consistency_proof(m, leaves)
            verify_consistency(m, n, root(leaves[:m]), r, proof)
            if m < n:
                with pytest.raises(ValueError, match=REFUSED):
                    verify_consistency(m, n, root(leaves[:m]), r, _flip(proof, len(proof) - 1, 7))
                # transparency-dev/merkle's probes: wrong old size, a new tree of another height
                for bad_m, bad_n in ((m - 1, n), (m + 1, n), (m ^ 2, n), (m, n * 2), (m, n // 2)):
                    if (bad_m, bad_n) != (m, n) and 0 < bad_m <= bad_n:
                        with pytest.raises(ValueError, match=REFUSED):
                            verify_consistency(bad_m, bad_n, root(leaves[:m]), r, proof)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 64).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n - 1), st.integers(0, 255))))
def test_consistency_property_flipped_bits(args: tuple[int, int, int]) -> None:
    n, m, bit = args
    leaves = tree(n)
    proof = consistency_proof(m, leaves)
    old, new = root(leaves[:m]), root(leaves)
    verify_consistency(m, n, old, new, proof)
    with pytest.raises(ValueError, match=REFUSED):
        verify_consistency(m, n, old, new, _flip(proof, bit % len(proof), bit))
    with pytest.raises(ValueError, match=REFUSED):
        verify_consistency(m, n, _flip([old], 0, bit)[0], new, proof)
