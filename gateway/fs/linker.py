"""Group commit of directory links: many small files closed at once cost few directory publishes.

Every link into a directory goes through :class:`DirectoryLinker`. A link
into a directory with no publish under way is published after ``window``
seconds (0: on the next reactor turn), together with every other link made by
then; links that arrive while a publish is under way are queued and published
together by the next one (``add_many``: one mutable publish). The window matters for clients that
write files one after another (``sftp put`` of many files, ``cp -r`` over
sshfs): when CLOSE has already been answered from local staging, nobody waits
for the link, and one publish then covers every file closed within the
window, whether the grid is remote or embedded in the process.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from gateway.objects.dirformat import ChildCap, EntryMetadata
from gateway.objects.interfaces import IDirectory


@define(eq=False)
class _Batch:
    """Links waiting for the next publish of one directory."""

    node: IDirectory
    entries: dict[str, tuple[ChildCap, EntryMetadata]] = field(factory=dict)
    waiters: list[Deferred[None]] = field(factory=list)


class DirectoryLinker:
    """Coalesces concurrent links into the same directory into single publishes."""

    def __init__(self, clock: IReactorTime, window: float = 0.0) -> None:
        self._clock = clock
        self._window = window
        self._queued: dict[Any, _Batch] = {}
        self._publishing: set[Any] = set()
        self.publishes = 0
        self.links = 0

    async def link(
        self, node: IDirectory, name: str, cap: ChildCap, metadata: EntryMetadata
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
            self._publishing.add(key)
            self._clock.callLater(
                self._window, lambda: Deferred.fromCoroutine(self._publish_all(key))
            )
        await waiter

    async def _publish_all(self, key: Any) -> None:
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
