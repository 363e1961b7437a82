"""Patches kept in their leaf node, within the node's budget.

A small change to a large extent is stored as a *patch* laid over it
(:mod:`gateway.objects.chunk_update`). A patch of at most
:data:`~gateway.objects.chunk_format.INLINE_PATCH_BYTES` is kept in the leaf
node itself, as a literal entry, rather than stored as an object of its own:
the node is stored again by every update under it anyway, so an fsync of a
4 KiB write stores one object (the node) instead of two. Reading such a patch
fetches nothing more than the node.

Every update that rewrites a node pays for the bytes it keeps, so a node keeps
at most :data:`~gateway.objects.chunk_format.INLINE_NODE_BYTES` of patches:
past that, all the patches it keeps move into one *pack*, an immutable object
of their bytes, and the node names each by its range in the pack. So changes
at random places of a large file cost one node per fsync and, every few
fsyncs, one pack: not one object per patch.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from gateway.objects.caps import ImmutableReadCap, LiteralCap
from gateway.objects.chunk_format import (
    INLINE_NODE_BYTES,
    ChildCap,
    ExtentCap,
    PackedPatch,
    PatchedExtent,
    is_inline,
)


async def within_budget(
    entries: Sequence[ChildCap], store: Callable[[bytes], Coroutine[Any, Any, ExtentCap]]
) -> list[ChildCap]:
    """A leaf node's entries, within INLINE_NODE_BYTES inline: past it, every patch the node
    keeps inline moves into one *pack* (one object, stored by ``store``), named by range."""
    if sum([e.inline_bytes for e in entries if type(e) is PatchedExtent]) <= INLINE_NODE_BYTES:
        return list(entries)
    pieces: list[bytes] = []
    places: dict[tuple[int, int], tuple[int, int]] = {}  # (entry, patch) -> (offset, size)
    at = 0
    for i, entry in enumerate(entries):
        if not isinstance(entry, PatchedExtent):
            continue
        for j, (_, patch) in enumerate(entry.patches):
            if is_inline(patch):
                assert isinstance(patch, LiteralCap)
                pieces.append(patch.data)
                places[i, j] = (at, patch.size)
                at += patch.size
    pack = await store(b"".join(pieces))
    assert isinstance(pack, ImmutableReadCap)  # (longer than a literal: its pieces are)
    out = list(entries)
    for i in {i for i, _ in places}:
        entry = entries[i]
        assert isinstance(entry, PatchedExtent)
        out[i] = PatchedExtent(
            entry.extent,
            tuple(
                (offset, PackedPatch(pack, *places[i, j]) if (i, j) in places else patch)
                for j, (offset, patch) in enumerate(entry.patches)
            ),
        )
    return out
