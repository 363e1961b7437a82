"""Group commit of directory links: many small files closed at once cost few directory publishes.

Every link into a directory goes through :class:`DirectoryLinker`. When no
publish of that directory is under way the link is published at once; links
that arrive while one is under way are queued and published together by the
next one (``add_many``: one mutable publish). Nothing waits on a timer, so a
lone file is linked as fast as before, and a burst of files (an ``sftp put``
of a tree, ``cp -r`` over sshfs) shares publishes.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred

from gateway.objects.dirnode import ChildCap, DirectoryNode, EntryMetadata


@define(eq=False)
class _Batch:
    """Links waiting for the next publish of one directory."""

    node: DirectoryNode
    entries: dict[str, tuple[ChildCap, EntryMetadata]] = field(factory=dict)
    waiters: list[Deferred[None]] = field(factory=list)


class DirectoryLinker:
    """Coalesces concurrent links into the same directory into single publishes."""

    def __init__(self) -> None:
        self._queued: dict[Any, _Batch] = {}
        self._publishing: set[Any] = set()
        self.publishes = 0
        self.links = 0

    async def link(
        self, node: DirectoryNode, name: str, cap: ChildCap, metadata: EntryMetadata
    ) -> None:
        """Link ``cap`` as ``name`` in ``node`` (replacing any entry); return once published."""
        key = node.cap
        batch = self._queued.get(key)
        if batch is None:
            batch = self._queued[key] = _Batch(node)
        batch.entries[name] = (cap, metadata)
        waiter: Deferred[None] = Deferred()
        batch.waiters.append(waiter)
        self.links += 1
        if key not in self._publishing:
            Deferred.fromCoroutine(self._publish_all(key))
        await waiter

    async def _publish_all(self, key: Any) -> None:
        self._publishing.add(key)
        try:
            while key in self._queued:
                batch = self._queued.pop(key)
                self.publishes += 1
                try:
                    await batch.node.add_many(batch.entries, overwrite=True)
                except Exception as e:  # every waiter of the batch learns the failure
                    for waiter in batch.waiters:
                        waiter.errback(e)
                else:
                    for waiter in batch.waiters:
                        waiter.callback(None)
        finally:
            self._publishing.discard(key)
