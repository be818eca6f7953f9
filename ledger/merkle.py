"""Merkle tree hashing, proofs and their verification: RFC 9162 §2.1.

Hashes are 32-byte ``bytes``. ``leaf_hashes`` are already leaf hashes
(``leaf_hash(data)``); the tree over them is MTH of RFC 9162 §2.1.1. The
proof builders take an optional ``subtree`` function so a stored tree can
answer perfect subtrees from disk in O(log n); by default they hash from
the list. The two verifiers return ``None`` or raise ``ValueError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Subtree = Callable[[int, int], bytes]  # MTH of leaves [start, end)


def leaf_hash(data: bytes) -> bytes:
    """§2.1.1: MTH({d0}) = SHA-256(0x00 || d0)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """§2.1.1: SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _list_subtree(leaf_hashes: Sequence[bytes]) -> Subtree:
    def mth(start: int, end: int) -> bytes:
        n = end - start
        if n == 0:
            return EMPTY_ROOT
        if n == 1:
            return leaf_hashes[start]
        k = split(n)
        return node_hash(mth(start, start + k), mth(start + k, end))
    return mth


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """§2.1.1: the Merkle Tree Hash; the empty tree's is SHA-256 of nothing."""
    return _list_subtree(leaf_hashes)(0, len(leaf_hashes))


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes], subtree: Subtree | None = None,
                    size: int | None = None) -> list[bytes]:
    """§2.1.3.1: PATH(m, D[n])."""
    n = len(leaf_hashes) if size is None else size
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} is outside a tree of size {n}")
    mth = subtree or _list_subtree(leaf_hashes)

    def path(m: int, start: int, end: int) -> list[bytes]:
        if end - start == 1:
            return []
        k = split(end - start)
        if m < k:
            return path(m, start, start + k) + [mth(start + k, end)]
        return path(m - k, start + k, end) + [mth(start, start + k)]

    return path(index, 0, n)


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes], subtree: Subtree | None = None,
                      size: int | None = None) -> list[bytes]:
    """§2.1.4.1: PROOF(m, D[n]) = SUBPROOF(m, D[n], true)."""
    n = len(leaf_hashes) if size is None else size
    if not 0 < old_size <= n:
        raise ValueError(f"no consistency proof from size {old_size} to size {n}")
    mth = subtree or _list_subtree(leaf_hashes)

    def subproof(m: int, start: int, end: int, whole: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if whole else [mth(start, end)]
        k = split(n)
        if m <= k:
            return subproof(m, start, start + k, whole) + [mth(start + k, end)]
        return subproof(m - k, start + k, end, False) + [mth(start, start + k)]

    return subproof(old_size, 0, n, True)


def _check_sizes(*hashes: bytes) -> None:
    for h in hashes:
        if not isinstance(h, (bytes, bytearray)) or len(h) != HASH_SIZE:
            raise ValueError("hashes must be 32 bytes")


def verify_inclusion(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """§2.1.3.2, step by step."""
    _check_sizes(leaf_hash, root, *proof)
    # 1. leaf_index must be inside the tree.
    if index < 0 or index >= size:
        raise ValueError("leaf index outside the tree")
    # 2. fn = leaf_index, sn = tree_size - 1.
    fn, sn = index, size - 1
    # 3. r = hash.
    r = leaf_hash
    # 4. for each p in the inclusion path:
    for p in proof:
        # a. if sn is 0, stop and fail.
        if sn == 0:
            raise ValueError("inclusion proof is too long")
        # b. if LSB(fn) is set, or fn == sn:
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # ii. if LSB(fn) is not set, shift right until LSB(fn) is set or fn is 0.
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        # c. shift both right once.
        fn >>= 1
        sn >>= 1
    # 5. sn must be 0 and r the root.
    if sn != 0 or r != root:
        raise ValueError("inclusion proof does not lead to the root")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """§2.1.4.2, step by step; a proof from size 0 is refused."""
    _check_sizes(old_root, new_root, *proof)
    if old_size <= 0:
        raise ValueError("no consistency proof from an empty tree")
    if old_size > new_size:
        raise ValueError("the old tree is larger than the new one")
    if old_size == new_size:
        if proof or old_root != new_root:
            raise ValueError("equal sizes need an empty proof and equal roots")
        return
    # 1. an empty path fails.
    if not proof:
        raise ValueError("empty consistency proof")
    path = list(proof)
    # 2. if first is an exact power of 2, prepend first_hash.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3. fn = first - 1, sn = second - 1.
    fn, sn = old_size - 1, new_size - 1
    # 4. if LSB(fn) is set, shift right until it is not.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. fr = sr = the first value.
    fr = sr = path[0]
    # 6. for each subsequent value c:
    for c in path[1:]:
        # a. if sn is 0, stop and fail.
        if sn == 0:
            raise ValueError("consistency proof is too long")
        # b. if LSB(fn) is set, or fn == sn:
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            # iii. if LSB(fn) is not set, shift right until LSB(fn) is set or fn is 0.
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        # c. shift both right once.
        fn >>= 1
        sn >>= 1
    # 7. fr must be first_hash, sr second_hash, and sn 0.
    if sn != 0 or fr != old_root or sr != new_root:
        raise ValueError("consistency proof does not connect the two roots")


class CompactRange:
    """The perfect-subtree frontier of a growing tree: O(log n) memory, O(1) amortised append.

    ``root()`` folds the frontier from the right, which is MTH (§2.1.1)
    because the tree splits at the largest power of two.
    """

    def __init__(self, frontier: Sequence[tuple[int, bytes]] = ()):
        self.nodes: list[tuple[int, bytes]] = list(frontier)  # (subtree size, hash), largest first
        self.size = sum(s for s, _ in self.nodes)  # kept, not summed per call: verify asks once per row

    def append(self, leaf: bytes) -> None:
        """Append a leaf (the verifier's hot path: no list of completed subtrees is built)."""
        nodes, size, h = self.nodes, 1, leaf
        while nodes and nodes[-1][0] == size:
            left_size, left = nodes.pop()
            size, h = left_size + size, hashlib.sha256(b"\x01" + left + h).digest()
        nodes.append((size, h))
        self.size += 1

    def append_returning(self, leaf: bytes) -> list[tuple[int, bytes]]:
        """Append a leaf; return every perfect subtree (size, hash) it completed, the leaf first."""
        size, h = 1, leaf
        completed = [(size, h)]
        while self.nodes and self.nodes[-1][0] == size:
            left_size, left = self.nodes.pop()
            size, h = left_size + size, node_hash(left, h)
            completed.append((size, h))
        self.nodes.append((size, h))
        self.size += 1
        return completed

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        h = self.nodes[-1][1]
        for _size, left in reversed(self.nodes[:-1]):
            h = node_hash(left, h)
        return h
