"""The RFC 9162 Merkle tree: published vectors, and properties over tree sizes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_inclusion,
    root_of,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)

# The Certificate Transparency test vectors (leaf inputs, and MTH for sizes 1..8).
VECTOR_INPUTS = ("", "00", "10", "2021", "3031", "40414243", "5051525354555657")
VECTOR_LEAVES = [bytes.fromhex(h) for h in (*VECTOR_INPUTS, "606162636465666768696a6b6c6d6e6f")]
VECTOR_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
VECTOR_HASHES = [leaf_hash(e) for e in VECTOR_LEAVES]


def memory_mth(leaves: list[bytes]):  # type: ignore[no-untyped-def]
    return subtree_hash(lambda start, end: root_of(leaves[start:end]))


def test_the_published_roots() -> None:
    assert root_of([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    for size, expected in enumerate(VECTOR_ROOTS, start=1):
        assert root_of(VECTOR_HASHES[:size]).hex() == expected


def test_the_published_proofs() -> None:
    mth = memory_mth(VECTOR_HASHES)
    assert [p.hex() for p in inclusion_proof(5, 8, mth)] == [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]
    assert [p.hex() for p in consistency_proof(3, 8, mth)] == [
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]
    assert [p.hex() for p in consistency_proof(6, 8, mth)] == [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]
    assert [p.hex() for p in consistency_proof(2, 5, mth)] == [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ]


def _leaves(size: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]


@settings(max_examples=60, deadline=None)
@given(size=st.integers(min_value=1, max_value=140))
def test_every_leaf_is_included_and_every_pair_of_sizes_is_consistent(size: int) -> None:
    leaves = _leaves(size)
    mth = memory_mth(leaves)
    roots = [root_of(leaves[:n]) for n in range(size + 1)]
    compact = CompactRange()
    for n, leaf in enumerate(leaves, start=1):
        compact.append(leaf)
        assert compact.root() == roots[n]
    for index in range(size):
        proof = inclusion_proof(index, size, mth)
        assert verify_inclusion(index, size, leaves[index], proof, roots[size])
        assert not verify_inclusion(
            index, size, leaves[index - 1] if index else b"\0" * 32, proof, roots[size]
        )
    for old in range(size + 1):
        proof = consistency_proof(old, size, mth)
        assert verify_consistency(old, size, roots[old], roots[size], proof), (old, size)


MUTATIONS = ["flip", "drop", "extra", "swap", "index", "root"]


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(min_value=2, max_value=300),
    data=st.data(),
    how=st.sampled_from(MUTATIONS),
)
def test_a_mutated_proof_fails(size: int, data: st.DataObject, how: str) -> None:
    leaves = _leaves(size)
    mth = memory_mth(leaves)
    root = root_of(leaves)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    old = data.draw(st.integers(min_value=1, max_value=size - 1))
    old_root = root_of(leaves[:old])
    inclusion = inclusion_proof(index, size, mth)
    consistency = consistency_proof(old, size, mth)

    def mutate(proof: list[bytes]) -> list[bytes]:
        proof = list(proof)
        position = data.draw(st.integers(min_value=0, max_value=max(0, len(proof) - 1)))
        if how == "flip" and proof:
            byte = data.draw(st.integers(min_value=0, max_value=31))
            bad = bytearray(proof[position])
            bad[byte] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
            proof[position] = bytes(bad)
        elif how == "drop" and proof:
            del proof[position]
        elif how == "swap" and len(proof) > 1 and proof[0] != proof[-1]:
            proof[0], proof[-1] = proof[-1], proof[0]
        else:
            proof.insert(position, leaves[0])
        return proof

    if how == "index":
        other = (index + 1) % size
        assert not verify_inclusion(other, size, leaves[index], inclusion, root)
    elif how == "root":
        assert not verify_inclusion(index, size, leaves[index], inclusion, old_root)
        assert not verify_consistency(old, size, root, root, consistency)
    else:
        assert not verify_inclusion(index, size, leaves[index], mutate(inclusion), root)
        assert not verify_consistency(old, size, old_root, root, mutate(consistency))


def test_malformed_proofs_are_false_not_errors() -> None:
    leaves = _leaves(5)
    root = root_of(leaves)
    assert root_from_inclusion(7, 5, leaves[0], []) is None
    assert not verify_inclusion(0, 5, leaves[0], [b"short"], root)
    assert not verify_consistency(3, 2, root, root, [])
    assert not verify_consistency(2, 5, root, root, [b"x" * 31])
    with pytest.raises(ValueError, match="below the tree size"):
        inclusion_proof(5, 5, memory_mth(leaves))
    with pytest.raises(ValueError, match="one 32-byte hash per bit"):
        CompactRange(3, [root])
