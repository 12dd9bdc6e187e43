"""The RFC 9162 (Certificate Transparency 2.0) Merkle tree over the events' hashes.

A leaf is event *n*'s chain hash ``H(n)`` (32 bytes), so leaf index ``n - 1`` commits to the
event and, through the chain, to every event before it::

    leaf hash = SHA-256(0x00 || H(n))
    node hash = SHA-256(0x01 || left || right)
    MTH(D[0:n]) = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two below n

Proof generation follows RFC 9162 §2.1.3.1 and §2.1.4.1 over any source of subtree hashes
(``mth(start, end)``: in memory, or from the stored nodes); verification follows §2.1.3.2 and
§2.1.4.2 literally, never raises on a malformed proof, and answers False instead.

Written here rather than taken from a package: the algorithms are short, and the Python
packages on offer (pymerkle and smaller ones) bring their own storage and proof formats,
where this log keeps its nodes in its own tables and must produce RFC 9162 proofs that other
transparency-log tools check (docs/audit.md, "Why a small module").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256

#: ``mth(start, end)``: the Merkle tree hash of leaves ``start..end-1``.
SubtreeHash = Callable[[int, int], bytes]


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n > 1``)."""
    return 1 << ((n - 1).bit_length() - 1)


def is_perfect(start: int, end: int) -> bool:
    """``start..end-1`` is one aligned perfect subtree."""
    size = end - start
    return size > 0 and size & (size - 1) == 0 and start % size == 0


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH of leaf hashes held in memory."""
    compact = CompactRange()
    for leaf in leaves:
        compact.append(leaf)
    return compact.root()


class CompactRange:
    """The perfect subtrees covering leaves ``0..size-1`` (one per bit of ``size``, largest
    first): enough to append leaves and to compute the root at every size, in O(log n)."""

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != size.bit_count() or any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError("a compact range holds one 32-byte hash per bit of its size")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> None:
        hashes = self.hashes
        size = self.size
        while size & 1:
            leaf = _sha256(b"\x01" + hashes.pop() + leaf).digest()  # node_hash, inlined
            size >>= 1
        hashes.append(leaf)
        self.size += 1

    def append_entry(self, entry: bytes) -> None:
        """Append the leaf of ``entry`` (an event's 32-byte hash)."""
        self.append(_sha256(b"\x00" + entry).digest())

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        hashes = self.hashes
        result = hashes[-1]
        for left in reversed(hashes[:-1]):
            result = node_hash(left, result)
        return result

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self.hashes)

    @staticmethod
    def ranges(size: int) -> list[tuple[int, int]]:
        """The (start, end) of the perfect subtrees a compact range of ``size`` holds."""
        out = []
        start = 0
        for bit in range(size.bit_length() - 1, -1, -1):
            if size >> bit & 1:
                out.append((start, start + (1 << bit)))
                start += 1 << bit
        return out


def subtree_hash(mth_perfect: Callable[[int, int], bytes]) -> SubtreeHash:
    """``mth(start, end)`` for any range the proofs ask for, from a source of perfect
    aligned subtrees (every range RFC 9162's recursion visits starts aligned)."""

    def mth(start: int, end: int) -> bytes:
        if is_perfect(start, end):
            return mth_perfect(start, end)
        k = split(end - start)
        return node_hash(mth(start, start + k), mth(start + k, end))

    return mth


def inclusion_proof(index: int, size: int, mth: SubtreeHash) -> list[bytes]:
    """PATH(index, D[0:size]) (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < size:
        raise ValueError("the leaf index must be below the tree size")

    def path(m: int, start: int, end: int) -> list[bytes]:
        n = end - start
        if n == 1:
            return []
        k = split(n)
        if m < k:
            return [*path(m, start, start + k), mth(start + k, end)]
        return [*path(m - k, start + k, end), mth(start, start + k)]

    return path(index, 0, size)


def consistency_proof(old_size: int, new_size: int, mth: SubtreeHash) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) (RFC 9162 §2.1.4.1); empty for 0 or equal sizes."""
    if not 0 <= old_size <= new_size:
        raise ValueError("a consistency proof needs 0 <= old size <= new size")
    if old_size in (0, new_size):
        return []

    def subproof(m: int, start: int, end: int, whole: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if whole else [mth(start, end)]
        k = split(n)
        if m <= k:
            return [*subproof(m, start, start + k, whole), mth(start + k, end)]
        return [*subproof(m - k, start + k, end, False), mth(start, start + k)]

    return subproof(old_size, 0, new_size, True)


def _well_formed(proof: Sequence[object]) -> bool:
    return all(isinstance(p, bytes) and len(p) == HASH_SIZE for p in proof)


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes | None:
    """The root an inclusion proof leads to (RFC 9162 §2.1.3.2), or None if malformed."""
    if not 0 <= index < size or not _well_formed(proof):
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    return root_from_inclusion(index, size, leaf, proof) == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: the tree of ``new_size`` leaves extends that of ``old_size``."""
    if not 0 <= old_size <= new_size or not _well_formed(proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
