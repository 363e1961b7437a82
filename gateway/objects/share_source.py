"""One immutable share as a reader uses it, and checking runs of its blocks.

A :class:`ShareSource` is a share on one server whose first bytes were read and
verified against the cap; it remembers the block hash tree nodes known good and
may read the tree's top levels once. :func:`verify_run` checks the blocks of
consecutive segments against the share's verified block-tree root, computing
the nodes inside the run's subtrees; :func:`run_siblings` names the nodes it
must read instead. :class:`gateway.objects.immutable.ImmutableReader` reads
through these.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred

from gateway.grid.interfaces import IStorageClient
from gateway.objects import immutable_format as fmt
from gateway.objects import merkle
from gateway.objects.concurrency import owned, start
from gateway.objects.crypto import HASH_SIZE, PERSON_BLOCK_NODE
from gateway.objects.errors import CorruptShare

__all__ = ["WHOLE_TREE_LIMIT", "ShareSource", "coalesce", "run_siblings", "verify_run"]

WHOLE_TREE_LIMIT = 64 * 1024
"""Block hash trees up to this size (2047 nodes: files of up to 1024 segments) are read whole;
of larger ones, reads of several segments read the top levels (at least this much, 1/8 of the
tree) once per share."""


@define(eq=False)
class ShareSource:
    """One share on one server, its verified metadata and the tree nodes known good."""

    server: IStorageClient
    verified: fmt.VerifiedShare
    nodes: dict[int, bytes] = field(factory=dict)
    """Block-tree nodes checked against the verified root (with the blocks they verified)."""
    top: bytes = b""
    """The first nodes of the stored block hash tree (its top levels, or all of it), read once.
    Unverified: a node from here is trusted only once a block's path through it matches."""
    top_read: Deferred[bytes] | None = None
    """The read of ``top`` while it is in flight (concurrent runs share it)."""
    tree_fetches: int = 0

    @property
    def share_number(self) -> int:
        """The share's number (which of the ``n`` shares it is)."""
        return self.verified.share_number

    def top_nodes(self) -> int:
        """How many nodes the read of the tree's top covers.

        The whole tree when it is at most ``WHOLE_TREE_LIMIT`` bytes; otherwise its
        levels down to three above the leaves (1/8 of it), at least ``WHOLE_TREE_LIMIT``
        bytes' worth. Runs of 8 aligned blocks need no node below those levels (their
        subtrees are computed from the blocks), so a sequential read of any size reads
        the tree once per share.
        """
        num = self.verified.layout.num_segments
        count = merkle.tree_size(num)
        eighth = (1 << max(0, merkle.depth(num) - 2)) - 1
        return min(count, max(WHOLE_TREE_LIMIT // HASH_SIZE - 1, eighth))

    def known(self, index: int) -> bytes | None:
        """A node verified earlier, else the stored one from the tree's top (if read)."""
        node = self.nodes.get(index)
        if node is None and (index + 1) * HASH_SIZE <= len(self.top):
            node = self.top[index * HASH_SIZE : (index + 1) * HASH_SIZE]
        return node

    def wants_top(self, missing: list[int], bulk: bool) -> bool:
        """Whether to read the tree's top for nodes ``missing`` (known neither way).

        A run of several blocks (a sequential or large read) reads it at once; single
        blocks (random reads) read only the nodes they need, and the whole tree once
        it is small and a second block is read.
        """
        self.tree_fetches += 1
        if self.top or not missing:
            return False
        top = self.top_nodes()
        if bulk:
            return any(i < top for i in missing)
        count = merkle.tree_size(self.verified.layout.num_segments)
        return self.tree_fetches > 1 and top == count

    def check_top(self, good: Mapping[int, bytes]) -> None:
        """Raise CorruptShare if the tree's top as read disagrees with nodes known good.

        Nodes a run computes from its blocks are never read, so a bad stored copy of
        one would go unnoticed (and fail a later single-block read): the share is
        dropped and reported as for a bad block.
        """
        top = self.top
        count = len(top) // HASH_SIZE
        for i, node in good.items():
            if i < count and top[i * HASH_SIZE : (i + 1) * HASH_SIZE] != node:
                raise CorruptShare(f"share {self.share_number} has a corrupt block hash tree")

    async def read_top(self, read: Callable[[int, int], Coroutine[Any, Any, bytes]]) -> None:
        """Read the tree's top once (awaiting the read another run started)."""
        if self.top:
            return
        if self.top_read is None:
            layout = self.verified.layout
            self.top_read = start(read(layout.tree_offset, self.top_nodes() * HASH_SIZE))
        pending = self.top_read
        try:
            # (as its owner: a failure, once every reader waiting has it, is consumed, so
            # the Deferred dropped below logs no "Unhandled error in Deferred")
            data = await owned(pending)
        finally:
            if self.top_read is pending:
                self.top_read = None  # done: kept (below) or, failed, to be read again
        if len(data) != self.top_nodes() * HASH_SIZE:
            raise CorruptShare(f"share {self.share_number} has a truncated block hash tree")
        self.top = data


def run_siblings(num_leaves: int, run: range) -> list[int]:
    """The block-tree nodes needed to check the blocks of consecutive segments together.

    Walking up from the run's leaves, each level's nodes form one range; only a left
    neighbour of its first node and a right neighbour of its last lie outside the
    run's subtrees (every other sibling is computed from the run's blocks).
    """
    first, last = merkle.leaf_node(num_leaves, run[0]), merkle.leaf_node(num_leaves, run[-1])
    out: list[int] = []
    while first > 0:
        if first % 2 == 0:  # a right child: its left sibling lies outside
            out.append(first - 1)
        if last % 2 == 1:  # a left child: its right sibling lies outside
            out.append(last + 1)
        first, last = (first - 1) // 2, (last - 1) // 2
    return out


def verify_run(
    share: fmt.VerifiedShare, run: range, blocks: Sequence[bytes], siblings: Mapping[int, bytes]
) -> dict[int, bytes]:
    """Check the blocks of consecutive segments against the share's verified block-tree root.

    Each block's leaf hash is computed once and the run's subtrees level by level, so the
    nodes inside them are computed, not read; ``siblings`` holds the others
    (:func:`run_siblings`). The computed root must equal the verified one, so every block
    and node used is then known good: they are returned. Any wrong block or node changes
    the root: CorruptShare (naming the run; the reader drops and reports the share).
    """
    layout = share.layout
    number = share.share_number
    hashes: list[bytes] = []
    for segment, block in zip(run, blocks, strict=True):
        if len(block) != layout.block_length(segment):
            raise CorruptShare(f"share {number} has a truncated block {segment}")
        hashes.append(fmt.block_leaf(block))
    first = merkle.leaf_node(layout.num_segments, run[0])
    good: dict[int, bytes] = {}
    try:
        while first > 0:
            if first % 2 == 0:  # the level starts at a right child: take in its left sibling
                first -= 1
                hashes.insert(0, siblings[first])
            if (first + len(hashes) - 1) % 2 == 1:  # it ends at a left child: its right one
                hashes.append(siblings[first + len(hashes)])
            good.update(zip(range(first, first + len(hashes)), hashes, strict=True))
            hashes = [
                merkle.node_hash(hashes[i], hashes[i + 1], PERSON_BLOCK_NODE)
                for i in range(0, len(hashes), 2)
            ]
            first = (first - 1) // 2
    except KeyError:
        raise CorruptShare(f"share {number} lacks block hash tree nodes") from None
    if hashes != [share.block_root]:
        if len(run) == 1:
            raise CorruptShare(f"share {number} has a corrupt block {run[0]}")
        raise CorruptShare(f"share {number} has a corrupt block in segments {run[0]}-{run[-1]}")
    good[0] = share.block_root
    return good


def coalesce(indexes: Sequence[int], gap: int = 32) -> list[tuple[int, int]]:
    """Group sorted node indexes into (first, last) runs whose gaps are at most ``gap`` nodes."""
    runs: list[tuple[int, int]] = []
    for i in sorted(indexes):
        if runs and i - runs[-1][1] <= gap:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs
