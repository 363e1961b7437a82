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
past that, the largest inline patches are stored as objects (once: from then on
the node names them), until it is back within its budget.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from gateway.objects.caps import LiteralCap
from gateway.objects.chunk_format import (
    INLINE_NODE_BYTES,
    ChildCap,
    ExtentCap,
    PatchedExtent,
    inline_bytes,
    is_inline,
)
from gateway.objects.concurrency import gather


async def within_budget(
    entries: Sequence[ChildCap], store: Callable[[bytes], Coroutine[Any, Any, ExtentCap]]
) -> list[ChildCap]:
    """A leaf node's entries, with the largest inline patches stored (by ``store``) until
    the node keeps at most INLINE_NODE_BYTES inline."""
    total = sum(map(inline_bytes, entries))
    if total <= INLINE_NODE_BYTES:
        return list(entries)
    inline = sorted(
        (
            (patch.size, i, j)
            for i, entry in enumerate(entries)
            if isinstance(entry, PatchedExtent)
            for j, (_, patch) in enumerate(entry.patches)
            if is_inline(patch)
        ),
        reverse=True,
    )
    chosen: list[tuple[int, int]] = []
    for size, i, j in inline:
        if total <= INLINE_NODE_BYTES:
            break
        chosen.append((i, j))
        total -= size

    def data(i: int, j: int) -> bytes:
        entry = entries[i]
        assert isinstance(entry, PatchedExtent)
        patch = entry.patches[j][1]
        assert isinstance(patch, LiteralCap)
        return patch.data

    stored = await gather([store(data(i, j)) for i, j in chosen])
    by_entry: dict[int, dict[int, ExtentCap]] = {}
    for (i, j), cap in zip(chosen, stored, strict=True):
        if isinstance(cap, Exception):
            raise cap
        by_entry.setdefault(i, {})[j] = cap
    out = list(entries)
    for i, caps in by_entry.items():
        entry = entries[i]
        assert isinstance(entry, PatchedExtent)
        out[i] = PatchedExtent(
            entry.extent,
            tuple((at, caps.get(j, patch)) for j, (at, patch) in enumerate(entry.patches)),
        )
    return out
