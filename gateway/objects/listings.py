"""How many entries the directory nodes of a tree keep made between listings, together.

A :class:`~gateway.objects.dirnode.DirectoryNode` keeps the entries its last listing
made (and those looked up since), so that listing a large directory again makes only the
entries that changed. Each costs the process about 150 bytes, and a gateway keeps up to
4,096 nodes (:data:`gateway.fs.nodes.NODES_KEPT`): a tree of large directories kept them
without bound. The nodes opened from one another share a :class:`KeptListings`; past
:data:`MOST` entries, the nodes that listed longest ago forget theirs, down to half (their
next listing makes them again).
"""

from __future__ import annotations

import weakref
from functools import partial
from typing import Protocol

#: Entries the nodes sharing a :class:`KeptListings` keep made, at most.
MOST = 65536


class Listing(Protocol):
    """A node keeping the entries it made (see the module docstring)."""

    def forget_listing(self) -> None:
        """Drop the entries kept."""


class KeptListings:
    """The nodes keeping entries, the one that listed longest ago first, and how many."""

    def __init__(self, most: int = MOST) -> None:
        self.most = most
        #: Entries kept by the nodes, together.
        self.total = 0
        self._kept: dict[int, tuple[weakref.ref[Listing], int]] = {}

    def kept(self, node: Listing, count: int) -> None:
        """``node`` keeps ``count`` entries now (it listed, or looked one up)."""
        key = id(node)
        held = self._kept.pop(key, None)
        if held is None:
            ref = weakref.ref(node, partial(self._gone, key))
        else:
            ref = held[0]
            self.total -= held[1]
        self._kept[key] = (ref, count)
        self.total += count
        if self.total > self.most:
            self._trim(key)

    def _gone(self, key: int, _: object = None) -> None:
        held = self._kept.pop(key, None)
        if held is not None:
            self.total -= held[1]

    def _trim(self, keep: int) -> None:
        for key in list(self._kept):
            if self.total <= self.most // 2:
                return
            if key == keep:
                continue
            ref, count = self._kept.pop(key)
            self.total -= count
            node = ref()
            if node is not None:
                node.forget_listing()
