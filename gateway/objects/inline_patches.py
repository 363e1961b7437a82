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
of their bytes, and the node names each by its range. So changes at random
places of a large file cost one node per fsync and, every few fsyncs, one
pack: not one object per patch.

An update that changes several leaves under one parent (a fold of an overlay:
a leaf per range, at random places of a large file) puts them within budget
together (:func:`shared_pack`): when keeping their patches inline would store
an object besides the parent anyway (a leaf past its budget, or leaves that no
longer fit in the parent), every patch they keep inline moves into one pack
they share. One object, however many leaves changed, rather than a pack per
leaf and the leaves the parent had no room for; and the leaves, stored again by
every later change under them, carry entries, not patch bytes.
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

Store = Callable[[bytes], Coroutine[Any, Any, ExtentCap]]


def kept_inline(entries: Sequence[ChildCap]) -> int:
    """Bytes of patches a leaf node's entries keep inline."""
    return sum([e.inline_bytes for e in entries if type(e) is PatchedExtent])


async def within_budget(entries: Sequence[ChildCap], store: Store) -> Sequence[ChildCap]:
    """A leaf node's entries, within INLINE_NODE_BYTES inline: past it, every patch the node
    keeps inline moves into one *pack* (one object, stored by ``store``), named by range;
    ``entries`` itself when within."""
    if kept_inline(entries) <= INLINE_NODE_BYTES:
        return entries
    (out,) = await packed([entries], store)
    return out


def shared_pack(leaves: Sequence[Sequence[ChildCap]], sizes: Sequence[int], room: int) -> bool:
    """Whether the new leaves of one parent (their entries, and their encodings' ``sizes``
    when every leaf is within its budget) should move their inline patches into one shared
    pack: when one is past its budget (a pack is stored anyway), or when they do not fit
    in the parent's ``room`` and their inline patches hold at least the excess (a leaf
    would be stored as an object of its own anyway, and the pack may spare it)."""
    inline = [kept_inline(entries) for entries in leaves]
    if max(inline, default=0) > INLINE_NODE_BYTES:
        return True
    excess = sum(sizes) - room
    return excess > 0 and sum(inline) >= excess


async def packed(leaves: Sequence[Sequence[ChildCap]], store: Store) -> list[Sequence[ChildCap]]:
    """The leaves' entries with every patch they keep inline moved into one pack (stored by
    ``store``), each named by its range in it; a leaf keeping none inline is returned as it
    was (the same sequence), and nothing is stored when none keeps any."""
    pieces: list[bytes] = []
    places: dict[tuple[int, int, int], tuple[int, int]] = {}  # (leaf, entry, patch) -> range
    at = 0
    for n, entries in enumerate(leaves):
        for i, entry in enumerate(entries):
            if type(entry) is not PatchedExtent:
                continue
            for j, (_, patch) in enumerate(entry.patches):
                if is_inline(patch):
                    assert isinstance(patch, LiteralCap)
                    pieces.append(patch.data)
                    places[n, i, j] = (at, patch.size)
                    at += patch.size
    if not pieces:
        return list(leaves)
    pack = await store(b"".join(pieces))
    assert isinstance(pack, ImmutableReadCap)  # (longer than a literal: its pieces are)
    changed: dict[int, list[ChildCap]] = {}
    for n, i in sorted({(n, i) for n, i, _ in places}):
        entry = leaves[n][i]
        assert isinstance(entry, PatchedExtent)
        changed.setdefault(n, list(leaves[n]))[i] = PatchedExtent(
            entry.extent,
            tuple(
                (offset, PackedPatch(pack, *places[n, i, j]) if (n, i, j) in places else patch)
                for j, (offset, patch) in enumerate(entry.patches)
            ),
        )
    return [changed.get(n, entries) for n, entries in enumerate(leaves)]
