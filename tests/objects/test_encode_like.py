"""A leaf encoded from the leaf it was made of: the unchanged entries' encodings are taken,
not made again, and the bytes are the same as a whole encoding's."""

from __future__ import annotations

import os

import cbor2

from gateway.objects.caps import ChunkedCap, ImmutableReadCap, LiteralCap
from gateway.objects.chunk_format import (
    INLINE_VERSION,
    Node,
    PackedPatch,
    PatchedExtent,
    encode_node,
)

CHUNK = 1 << 20


def _extent() -> ImmutableReadCap:
    return ImmutableReadCap(os.urandom(16), os.urandom(32), 1, 1, CHUNK)


def _leaf(entries: list[object]) -> Node:
    return Node(0, 128, len(entries), tuple(entries))  # type: ignore[arg-type]


def test_a_leaf_made_of_another_encodes_as_a_whole_encoding_does() -> None:
    """Entries changed, patched (inline and packed), added at the end and the same: the
    encoding with ``like`` is byte for byte the one without, the version included, and
    the new leaf keeps its entries' encodings for the next."""
    entries: list[object] = [_extent() for _ in range(20)]
    base = _leaf(entries)
    first = encode_node(base)
    assert base.parts is not None and len(base.parts) == 20
    assert encode_node(base, base) == first
    pack = ImmutableReadCap(os.urandom(16), os.urandom(32), 1, 1, 9000)
    changed = list(entries)
    changed[3] = PatchedExtent(entries[3], ((100, LiteralCap(os.urandom(4000))),))  # type: ignore[arg-type]
    changed[7] = PatchedExtent(entries[7], ((0, PackedPatch(pack, 0, 4096)),))  # type: ignore[arg-type]
    changed[19] = _extent()
    changed.append(_extent())
    new = _leaf(changed)
    assert encode_node(new, base) == encode_node(_leaf(changed))
    assert cbor2.loads(encode_node(new, base))[0] == INLINE_VERSION
    again = _leaf([*changed[:3], entries[3], *changed[4:]])  # patch 3 dropped again
    assert encode_node(again, new) == encode_node(_leaf(list(again.entries)))
    assert cbor2.loads(encode_node(again, new))[0] == INLINE_VERSION  # (entry 7's pack)


def test_a_leaf_never_encoded_lends_nothing() -> None:
    """``like`` without kept encodings (a leaf read from the grid), or a node of another
    height: every entry is encoded, and inner nodes keep nothing."""
    entries = [_extent() for _ in range(5)]
    fresh = _leaf(entries)
    assert fresh.parts is None
    other = _leaf([*entries[:4], _extent()])
    assert encode_node(other, fresh) == encode_node(_leaf(list(other.entries)))
    node = ImmutableReadCap(os.urandom(16), os.urandom(32), 1, 1, 5000)
    inner = Node(1, 128, 256, (ChunkedCap(node, 128 * CHUNK), ChunkedCap(node, 128 * CHUNK)))
    encode_node(inner)
    assert inner.parts is None
