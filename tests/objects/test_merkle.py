"""Merkle trees: paths verify for every leaf and tree size, tampering is caught."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.objects import merkle

NODE = b"test:node"


@given(st.integers(1, 70), st.data())
def test_every_leaf_verifies(num_leaves: int, data: st.DataObject) -> None:
    """A leaf and its sibling chain give back the root; a different leaf does not."""
    leaves = [bytes([i % 256]) * 32 for i in range(num_leaves)]
    nodes = merkle.build(leaves, NODE)
    assert len(nodes) == merkle.tree_size(num_leaves)
    j = data.draw(st.integers(0, num_leaves - 1))
    chain = merkle.chain(nodes, num_leaves, j)
    assert len(chain) == merkle.depth(num_leaves)
    assert merkle.root_from_chain(leaves[j], num_leaves, j, chain, NODE) == nodes[0]
    assert merkle.root_from_chain(b"x" * 32, num_leaves, j, chain, NODE) != nodes[0]


def test_single_leaf_tree_is_its_leaf() -> None:
    """One leaf needs no siblings; the root is the leaf hash."""
    assert merkle.build([b"a" * 32], NODE) == [b"a" * 32]
    assert merkle.siblings(1, 0) == []


def test_sizes() -> None:
    """Padding goes to the next power of two."""
    assert [merkle.padded_leaves(m) for m in (1, 2, 3, 4, 5, 8, 9)] == [1, 2, 4, 4, 8, 8, 16]
    assert [merkle.depth(m) for m in (1, 2, 3, 10, 256)] == [0, 1, 2, 4, 8]
