"""How one directory node reads and publishes its directory: the grid side of a node.

Every change is a read-modify-write through :meth:`MutableClient.update`: the
change is re-applied to freshly read contents whenever another writer (another
process, another gateway) published first, so concurrent writers lose no
entries. Between attempts a writer waits a random, growing pause on the clock
it was given, so two writers that keep colliding drift apart.

The updates remember the version last read or published (contents and share
map). A change made within ``reuse_known`` seconds of that is written against
it without reading first; the publish's test vectors make it fall back to a
fresh read if anyone else wrote meanwhile. So that writers sharing a directory
do not starve each other's reads (a read needs a moment without publishes),
after such a collision the node reads before every change for ``reuse_known``
seconds, and at most ``reuse_streak`` changes in a row skip the read. A
sequence of changes by one node (``mkdir``, ``rename``, ``rmdir`` one after
another) thus costs mostly one publish each, not a read and a publish.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

from attrs import define, field
from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from gateway.objects.caps import DirectoryReadCap, DirectoryWriteCap, b32encode
from gateway.objects.dirformat import Record, pack_contents, unpack_contents
from gateway.objects.errors import SharesKeptChanging, UncoordinatedWriteError
from gateway.objects.mutable import KnownState, MutableClient

T = TypeVar("T")

Records = dict[str, Record]


@define(eq=False)
class DirectoryUpdates:
    """Reads and publishes of one directory through one node, with what they last saw.

    ``clock`` times the reuse of known contents and the random pauses (growing
    from ``backoff`` to at most ``max_backoff`` seconds) between attempts of a
    change that lost a race; ``attempts`` bounds those attempts. (A read that
    overlaps another writer's publish is retried by :class:`MutableClient`
    itself.)
    """

    client: MutableClient
    cap: DirectoryWriteCap | DirectoryReadCap
    clock: IReactorTime
    attempts: int
    backoff: float
    max_backoff: float
    rng: random.Random = field(repr=False)
    reuse_known: float
    reuse_streak: int
    #: The contents last read or published, and when.
    cached: tuple[float, Records] | None = field(default=None, init=False, repr=False)
    _known: tuple[float, KnownState] | None = field(default=None, init=False, repr=False)
    _contended_until: float = field(default=0.0, init=False, repr=False)
    _streak: int = field(default=0, init=False, repr=False)
    _changing: DeferredLock = field(factory=DeferredLock, init=False, repr=False)

    def recent(self, max_age: float) -> Records | None:
        """The contents last read or published, when at most ``max_age`` seconds old."""
        if self.cached is not None and self.clock.seconds() - self.cached[0] <= max_age:
            return self.cached[1]
        return None

    def learn(self, other: DirectoryUpdates) -> None:
        """Take on the contents another node of this directory published for this one's
        changes (so that this node's reads show them)."""
        if other.cached is not None and (self.cached is None or other.cached[0] >= self.cached[0]):
            self.cached = other.cached

    def contended(self) -> bool:
        """Whether another writer collided with this node within ``reuse_known`` seconds."""
        return self.clock.seconds() < self._contended_until

    async def read(self) -> Records:
        """The directory's contents, read from the grid now (and remembered)."""
        state = await self.read_state()
        records = unpack_contents(state.data)
        self._remember(records, state)
        return records

    async def read_state(self, known: KnownState | None = None) -> KnownState:
        """The directory's newest version from the grid (pausing while writers keep changing
        it); ``known``'s contents are kept while its version is still the newest."""
        for attempt in range(self.attempts):
            try:
                return await self.client.read_known(self.cap.node, known)
            except SharesKeptChanging:  # writers kept replacing it: pause, then try again
                if attempt == self.attempts - 1:
                    raise
                await self._pause(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def create(self, records: Records) -> None:
        """Publish the directory for the first time, holding ``records`` (one publish)."""
        assert isinstance(self.cap, DirectoryWriteCap)
        _, state = await self.client.create_known(pack_contents(records), self.cap.node)
        self._remember(records, state)

    async def modify(self, change: Callable[[Records], T]) -> T:
        """Apply ``change`` (which edits the records in place) to fresh contents and publish.

        Changes through one node take turns: this process never races itself (a session's
        mkdir and a background upload's link into the same directory would otherwise
        collide, and the loser would pause).
        """
        await self._changing.acquire()
        try:
            return await self._modify_now(change)
        finally:
            self._changing.release()

    def _remember(self, records: Records, state: KnownState) -> None:
        now = self.clock.seconds()
        self.cached = (now, dict(records))
        self._known = (now, state)

    async def _modify_now(self, change: Callable[[Records], T]) -> T:
        assert isinstance(self.cap, DirectoryWriteCap)
        outcome: list[tuple[T, Records]] = []

        def apply(data: bytes) -> bytes:
            records = unpack_contents(data)
            result = change(records)
            outcome[:] = [(result, records)]
            return pack_contents(records)

        for attempt in range(self.attempts):
            try:
                state = await self._update(apply)
            except (UncoordinatedWriteError, SharesKeptChanging):  # contention: pause, retry
                if attempt < self.attempts - 1:
                    await self._pause(attempt)
                    continue
                si = b32encode(self.cap.storage_index)
                raise UncoordinatedWriteError(
                    f"the directory {si} changed under every one of {self.attempts}"
                    " attempts to update it; try again later"
                ) from None
            result, records = outcome[0]
            self._remember(records, state)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _update(self, apply: Callable[[bytes], bytes]) -> KnownState:
        """One change and publish: against the known version if recent and uncontended."""
        assert isinstance(self.cap, DirectoryWriteCap)
        known, self._known = self._known, None  # unknown until this change's outcome is
        now = self.clock.seconds()
        if (
            known is not None
            and now - known[0] <= self.reuse_known
            and now >= self._contended_until
            and self._streak < self.reuse_streak
        ):
            self._streak += 1
            try:
                return await self.client.update(self.cap.node, apply, known[1])
            except UncoordinatedWriteError:
                self._contended_until = self.clock.seconds() + self.reuse_known
        self._streak = 0
        return await self.client.update(self.cap.node, apply)

    async def _pause(self, attempt: int) -> None:
        delay = self.rng.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))
        await deferLater(self.clock, delay)
