"""The global log as an RFC 9162 Merkle tree, kept in the ledger's database.

Leaves are the events' chained hashes, in the store's global order (leaf
index = rank in notification-id order, so PostgreSQL id gaps do not matter).
Every perfect subtree is stored once it is complete, so a root, an inclusion
proof or a consistency proof costs O(log n) lookups and an append O(1)
amortised: nothing rescans the log. The tables are a cache derived from the
events: ``sync()`` extends them, and every proof they give is checked
against a signed checkpoint, never trusted.
"""

from __future__ import annotations

from typing import Any

from ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    split,
)
from ledger.store import Store

DDL = (
    "CREATE TABLE IF NOT EXISTS {leaves} (leaf_index BIGINT PRIMARY KEY, position BIGINT NOT NULL UNIQUE, "
    "hash {blob} NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {nodes} (level INTEGER NOT NULL, idx BIGINT NOT NULL, hash {blob} NOT NULL, "
    "PRIMARY KEY (level, idx))",
    "CREATE TABLE IF NOT EXISTS {checkpoints} (tree_size BIGINT PRIMARY KEY, root {blob} NOT NULL, "
    "note TEXT NOT NULL)",
)
SYNC_PAGE = 5000


class MerkleLog:
    def __init__(self, store: Store):
        self.store = store
        self.names = {t: store.table(f"merkle_{t}") for t in ("leaves", "nodes", "checkpoints")}
        blob = "BYTEA" if store.postgres else "BLOB"
        if store.table_exists("merkle_checkpoints"):
            return
        with store.write_transaction() as c:
            for ddl in DDL:
                c.execute(ddl.format(blob=blob, **self.names))

    # -- growing ----------------------------------------------------------------------------

    def size(self) -> int:
        rows = self.store.fetch(f"SELECT MAX(leaf_index) AS m FROM {self.names['leaves']}")
        return 0 if rows[0]["m"] is None else int(rows[0]["m"]) + 1

    def sync(self) -> int:
        """Add a leaf for every event not yet in the tree; returns the tree size."""
        size = self.size()
        after = self.position_of(size - 1) if size else 0
        compact = self.compact_range(size)
        while True:
            page = self.store.hashes(after, SYNC_PAGE)
            if not page:
                return size
            leaves, nodes = [], []
            for position, digest in page:
                leaf = leaf_hash(digest)
                leaves.append((size, position, leaf))
                for node_size, node in compact.append_returning(leaf)[1:]:  # the leaf itself goes in leaves
                    nodes.append((node_size.bit_length() - 1, size // node_size, node))
                size += 1
            with self.store.write_transaction() as c:
                c.executemany(self.store.sql(
                    f"INSERT INTO {self.names['leaves']} (leaf_index, position, hash) VALUES (?, ?, ?)"), leaves)
                c.executemany(self.store.sql(
                    f"INSERT INTO {self.names['nodes']} (level, idx, hash) VALUES (?, ?, ?)"), nodes)
            after = page[-1][0]

    def reset(self) -> None:
        """Forget the derived tree (not the checkpoints); the next sync rebuilds it from the events."""
        with self.store.write_transaction() as c:
            c.execute(f"DELETE FROM {self.names['leaves']}")
            c.execute(f"DELETE FROM {self.names['nodes']}")

    # -- reading ----------------------------------------------------------------------------

    def _node(self, level: int, idx: int) -> bytes:
        if level == 0:
            rows = self.store.fetch(f"SELECT hash FROM {self.names['leaves']} WHERE leaf_index = ?", (idx,))
        else:
            rows = self.store.fetch(f"SELECT hash FROM {self.names['nodes']} WHERE level = ? AND idx = ?",
                                    (level, idx))
        if not rows:
            raise LookupError(f"Merkle node ({level}, {idx}) is missing; run `trial-ledger rebuild`")
        return bytes(rows[0]["hash"])

    def subtree(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end), from stored perfect subtrees."""
        n = end - start
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and start % n == 0:
            return self._node(n.bit_length() - 1, start // n)
        k = split(n)
        return node_hash(self.subtree(start, start + k), self.subtree(start + k, end))

    def root(self, size: int) -> bytes:
        return self.subtree(0, size)

    def compact_range(self, size: int) -> CompactRange:
        """The frontier of the tree of ``size`` leaves, from its stored perfect subtrees."""
        nodes, start = [], 0
        for bit in reversed(range(size.bit_length())):
            width = 1 << bit
            if size & width:
                nodes.append((width, self._node(bit, start // width)))
                start += width
        return CompactRange(nodes)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return inclusion_proof(index, (), subtree=self.subtree, size=size)

    def consistency(self, old_size: int, size: int) -> list[bytes]:
        return consistency_proof(old_size, (), subtree=self.subtree, size=size)

    def leaf_index(self, position: int) -> int | None:
        rows = self.store.fetch(f"SELECT leaf_index FROM {self.names['leaves']} WHERE position = ?", (position,))
        return int(rows[0]["leaf_index"]) if rows else None

    def position_of(self, index: int) -> int:
        rows = self.store.fetch(f"SELECT position FROM {self.names['leaves']} WHERE leaf_index = ?", (index,))
        if not rows:
            raise LookupError(f"no leaf {index}")
        return int(rows[0]["position"])

    # -- checkpoints --------------------------------------------------------------------------

    def save_checkpoint(self, size: int, root: bytes, note: str) -> None:
        with self.store.write_transaction() as c:
            c.execute(self.store.sql(f"DELETE FROM {self.names['checkpoints']} WHERE tree_size = ?"), (size,))
            c.execute(self.store.sql(
                f"INSERT INTO {self.names['checkpoints']} (tree_size, root, note) VALUES (?, ?, ?)"),
                (size, root, note))

    def latest_checkpoint(self) -> dict[str, Any] | None:
        rows = self.store.fetch(
            f"SELECT tree_size, root, note FROM {self.names['checkpoints']} ORDER BY tree_size DESC LIMIT 1")
        return dict(rows[0]) if rows else None
