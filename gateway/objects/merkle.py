"""Binary Merkle trees over 32-byte hashes, stored as arrays, with sibling paths for one leaf.

A tree over ``m`` leaves is padded to ``P`` (the next power of two) with a fixed
padding hash and stored as ``2P - 1`` nodes: node 0 is the root, the children of
node ``i`` are ``2i + 1`` and ``2i + 2``, and leaf ``j`` is node ``P - 1 + j``.
Leaf and interior hashes use different BLAKE2b personalization tags (chosen by
the caller), so a leaf can never be passed off as an interior node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.objects.crypto import PERSON_MERKLE_PAD, blake2b_hash

PAD_HASH = blake2b_hash(b"", person=PERSON_MERKLE_PAD)
"""The hash that fills leaves beyond the last real one."""


def padded_leaves(num_leaves: int) -> int:
    """The number of leaf slots in a tree over ``num_leaves`` leaves (a power of two, ≥ 1)."""
    return 1 << max(0, num_leaves - 1).bit_length()


def depth(num_leaves: int) -> int:
    """How many siblings a path from a leaf to the root has."""
    return padded_leaves(num_leaves).bit_length() - 1


def tree_size(num_leaves: int) -> int:
    """The number of nodes in the stored array."""
    return 2 * padded_leaves(num_leaves) - 1


def node_hash(left: bytes, right: bytes, person: bytes) -> bytes:
    """An interior node: the hash of its two children."""
    return blake2b_hash(left + right, person=person)


def build(leaf_hashes: Sequence[bytes], node_person: bytes) -> list[bytes]:
    """Every node of the tree over ``leaf_hashes`` (already hashed with a leaf tag), root first."""
    count = padded_leaves(len(leaf_hashes))
    nodes = [PAD_HASH] * (2 * count - 1)
    nodes[count - 1 : count - 1 + len(leaf_hashes)] = leaf_hashes
    for i in range(count - 2, -1, -1):
        nodes[i] = node_hash(nodes[2 * i + 1], nodes[2 * i + 2], node_person)
    return nodes


def leaf_node(num_leaves: int, leaf_index: int) -> int:
    """The array index of leaf ``leaf_index``."""
    if not 0 <= leaf_index < num_leaves:
        raise IndexError(f"leaf {leaf_index} of a tree with {num_leaves} leaves")
    return padded_leaves(num_leaves) - 1 + leaf_index


def path(num_leaves: int, leaf_index: int) -> list[int]:
    """The array indexes from the leaf up to (but excluding) the root."""
    i = leaf_node(num_leaves, leaf_index)
    out = []
    while i > 0:
        out.append(i)
        i = (i - 1) // 2
    return out


def sibling(i: int) -> int:
    """The other child of node ``i``'s parent."""
    return i + 1 if i % 2 else i - 1


def siblings(num_leaves: int, leaf_index: int) -> list[int]:
    """The array indexes of the nodes needed to check leaf ``leaf_index``, bottom-up."""
    return [sibling(i) for i in path(num_leaves, leaf_index)]


def chain(nodes: Sequence[bytes], num_leaves: int, leaf_index: int) -> list[bytes]:
    """The sibling hashes for one leaf, bottom-up (what a reader needs besides the leaf)."""
    return [nodes[i] for i in siblings(num_leaves, leaf_index)]


def verified_path(
    leaf_hash: bytes,
    num_leaves: int,
    leaf_index: int,
    sibling_hashes: Mapping[int, bytes],
    node_person: bytes,
) -> dict[int, bytes]:
    """Compute the nodes on the leaf's path given its siblings; the result includes the root (0).

    The caller compares entry 0 with the trusted root; only then are all the
    returned nodes and the siblings trustworthy.
    """
    out: dict[int, bytes] = {}
    i, value = leaf_node(num_leaves, leaf_index), leaf_hash
    out[i] = value
    while i > 0:
        other = sibling_hashes[sibling(i)]
        value = (
            node_hash(other, value, node_person)
            if i % 2 == 0
            else node_hash(value, other, node_person)
        )
        i = (i - 1) // 2
        out[i] = value
    return out


def root_from_chain(
    leaf_hash: bytes, num_leaves: int, leaf_index: int, chain_hashes: Sequence[bytes], person: bytes
) -> bytes:
    """The root implied by a leaf and its bottom-up sibling chain."""
    idx = siblings(num_leaves, leaf_index)
    if len(chain_hashes) != len(idx):
        raise ValueError("wrong chain length")
    return verified_path(
        leaf_hash, num_leaves, leaf_index, dict(zip(idx, chain_hashes, strict=True)), person
    )[0]
