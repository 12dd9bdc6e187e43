"""The stored Merkle tree: perfect subtrees of 256 leaves and up, extended when a checkpoint
is signed (never on an append), and what roots and proofs are computed from.

Only nodes at level 8 and above are stored (``audit_tree_nodes``: ``level``, ``idx``,
``hash``; node ``(level, idx)`` covers leaves ``idx * 2**level`` to ``(idx + 1) * 2**level
- 1``), about one row per 128 events. Anything below, and anything beyond the last stored
block, is computed from the events' ``hash`` column: at most 255 leaves for a block, plus
the events since the last checkpoint.

Everything here is synchronous (``session.run_sync``), because checkpoints are signed
inside the writer's commit hook.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from sqlalchemy import Table, func, insert, select, tuple_
from sqlalchemy.orm import Session

from app.audit import merkle
from app.models.audit import AuditEvent, AuditTreeNode

#: Stored nodes start at this level: 2**8 = 256 leaves.
TILE_LEVEL = 8
TILE = 1 << TILE_LEVEL
_NODES = cast(Table, AuditTreeNode.__table__)


class TreeError(RuntimeError):
    """The events do not form the gapless sequence the tree needs (the chain is broken)."""


class TreeStore:
    """One session's view of the tree; caches what it reads."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._nodes: dict[tuple[int, int], bytes] = {}
        self._leaves: dict[int, bytes] = {}
        self._extended: int | None = None

    # -- reading ---------------------------------------------------------------------------

    def extended(self) -> int:
        """How many leaves the stored level-8 nodes cover."""
        if self._extended is None:
            top = self.session.execute(
                select(func.max(AuditTreeNode.idx)).where(AuditTreeNode.level == TILE_LEVEL)
            ).scalar_one_or_none()
            self._extended = 0 if top is None else (int(top) + 1) * TILE
        return self._extended

    def _load_leaves(self, start: int, end: int) -> None:
        missing = [i for i in range(start, end) if i not in self._leaves]
        if not missing:
            return
        low, high = missing[0], missing[-1] + 1
        rows = self.session.execute(
            select(AuditEvent.seq, AuditEvent.hash)
            .where(AuditEvent.seq > low, AuditEvent.seq <= high)
            .order_by(AuditEvent.seq)
        ).all()
        if len(rows) != high - low or (rows and int(rows[-1].seq) != high):
            raise TreeError(f"events {low + 1}..{high} are not all there")
        for index, row in enumerate(rows, start=low):
            try:
                self._leaves[index] = merkle.leaf_hash(bytes.fromhex(row.hash))
            except ValueError:
                raise TreeError(f"event {index + 1} has no valid hash") from None

    def leaves(self, start: int, end: int) -> list[bytes]:
        """Leaf hashes of leaves ``start..end-1`` (events ``start+1..end``)."""
        self._load_leaves(start, end)
        return [self._leaves[i] for i in range(start, end)]

    def _load_nodes(self, keys: Iterable[tuple[int, int]]) -> None:
        wanted = [k for k in keys if k not in self._nodes]
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            rows = self.session.execute(
                select(AuditTreeNode.level, AuditTreeNode.idx, AuditTreeNode.hash).where(
                    tuple_(AuditTreeNode.level, AuditTreeNode.idx).in_(chunk)
                )
            ).all()
            for row in rows:
                self._nodes[(int(row.level), int(row.idx))] = bytes(row.hash)

    def perfect(self, start: int, end: int) -> bytes:
        """MTH of the aligned perfect subtree ``start..end-1``."""
        size = end - start
        level = size.bit_length() - 1
        if level >= TILE_LEVEL and end <= self.extended():
            key = (level, start >> level)
            if key not in self._nodes:
                self._load_nodes([key])
            stored = self._nodes.get(key)
            if stored is None:
                raise TreeError(f"tree node {key} is missing")
            return stored
        if level <= TILE_LEVEL:
            return merkle.root_of(self.leaves(start, end))
        half = size // 2
        return merkle.node_hash(self.perfect(start, start + half), self.perfect(start + half, end))

    def prefetch(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Read what :meth:`perfect` will need for these ranges in a few queries."""
        extended = self.extended()
        nodes: list[tuple[int, int]] = []
        leaf_ranges: list[tuple[int, int]] = []

        def visit(start: int, end: int) -> None:
            level = (end - start).bit_length() - 1
            if level >= TILE_LEVEL and end <= extended:
                nodes.append((level, start >> level))
            elif level <= TILE_LEVEL:
                leaf_ranges.append((start, end))
            else:
                half = (end - start) // 2
                visit(start, start + half)
                visit(start + half, end)

        for start, end in ranges:
            visit(start, end)
        self._load_nodes(nodes)
        for start, end in _merged(leaf_ranges):
            self._load_leaves(start, end)

    def compact(self, size: int) -> merkle.CompactRange:
        """The compact range of the first ``size`` leaves."""
        ranges = merkle.CompactRange.ranges(size)
        self.prefetch(ranges)
        return merkle.CompactRange(size, [self.perfect(s, e) for s, e in ranges])

    def root(self, size: int) -> bytes:
        return self.compact(size).root()

    def _recording(self) -> tuple[merkle.SubtreeHash, list[tuple[int, int]]]:
        seen: list[tuple[int, int]] = []

        def record(start: int, end: int) -> bytes:
            seen.append((start, end))
            return b"\0" * merkle.HASH_SIZE

        return merkle.subtree_hash(record), seen

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        dry, seen = self._recording()
        merkle.inclusion_proof(index, size, dry)
        self.prefetch(seen)
        return merkle.inclusion_proof(index, size, merkle.subtree_hash(self.perfect))

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        dry, seen = self._recording()
        merkle.consistency_proof(old_size, new_size, dry)
        self.prefetch(seen)
        return merkle.consistency_proof(old_size, new_size, merkle.subtree_hash(self.perfect))

    # -- extending (under the chain lock) --------------------------------------------------

    def extend(self, size: int) -> int:
        """Store the complete 256-leaf blocks of the first ``size`` leaves, and every node
        above them they complete; return how many nodes were written."""
        done, target = self.extended(), size // TILE * TILE
        if target <= done:
            return 0
        leaves = self.leaves(done, target)
        new: dict[tuple[int, int], bytes] = {}
        for block in range(done // TILE, target // TILE):
            offset = block * TILE - done
            node = merkle.root_of(leaves[offset : offset + TILE])
            level, idx = TILE_LEVEL, block
            new[(level, idx)] = node
            while idx & 1:
                left_key = (level, idx - 1)
                left = new.get(left_key)
                if left is None:
                    left = self.perfect((idx - 1) << level, idx << level)
                node = merkle.node_hash(left, node)
                level, idx = level + 1, idx >> 1
                new[(level, idx)] = node
        self.session.execute(
            insert(_NODES),
            [{"level": lv, "idx": ix, "hash": h} for (lv, ix), h in sorted(new.items())],
        )
        self._nodes.update(new)
        self._extended = target
        for index in [i for i in self._leaves if i < target]:
            del self._leaves[index]
        return len(new)


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
