"""What directory write-back keeps of one directory: the view sessions see, the changes not
yet published, and the two exchanges with the grid (reading it, publishing the changes).

The view is what the grid held when last read or published, with the
unpublished changes applied on top (leniently, as a publish applies them). A
read that overlapped a publish of this gateway's is stale and dropped (the
publish's contents are newer).
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from gateway.objects.caps import DirectoryWriteCap
from gateway.objects.dirchanges import Change, Link, MutableRecords, apply_lenient
from gateway.objects.dirformat import CorruptDirectory, Record, unpack_contents
from gateway.objects.dirpacking import Packer
from gateway.objects.dirpublish import JournaledDirectory, PublishAs, publish_changes
from gateway.objects.errors import NotEnoughShares
from gateway.objects.mutable import KnownState, MutableClient

#: Entries the views of directories with nothing to publish may hold together (about half
#: a KiB each, with the records the directory was read as: 20 directories of 2,000 entries
#: listed took a gateway from 63 to 96 MiB); past it the oldest are forgotten.
KEEP_ENTRIES = 65536


@define(eq=False)
class DirectoryState:
    """One directory's state here: the view sessions see and the changes not yet published."""

    cap: DirectoryWriteCap
    read_cap: str
    view: MutableRecords | None = None
    known: KnownState | None = None
    known_records: MutableRecords | None = None  # ``known.data`` unpacked (never changed)
    read_at: float = float("-inf")
    changes: list[tuple[int, Change]] = field(factory=list)
    create: bool = False  # made here, not yet published
    maybe_exists: bool = False  # made before a restart: may have been published
    generation: int = 0  # publishes so far: a read that overlapped one is stale
    failures: int = 0
    waiting_since: float = 0.0  # when the oldest unpublished change was made
    timer: IDelayedCall | None = None
    loading: Deferred[Exception | None] | None = None
    lock: DeferredLock = field(factory=DeferredLock)
    packer: Packer = field(factory=Packer)  # its last publish's contents, to pack the next

    @classmethod
    def of(cls, cap: DirectoryWriteCap) -> DirectoryState:
        """A fresh state for a directory."""
        return cls(cap, cap.get_read_cap().to_string())

    def links(self) -> Iterable[Record]:
        """The records this directory links or will link (its view, else its changes')."""
        if self.view is not None:
            return self.view.values()
        return (r for _, c in self.changes if isinstance(c, Link) for _, r in c.entries)

    async def read(self, node: JournaledDirectory, clock: IReactorTime) -> Exception | None:
        """Read the directory into the view; the error, if any, is returned (for every
        waiter to raise)."""
        generation = self.generation
        try:
            state: KnownState | None = await node.read_state(self.known)
        except NotEnoughShares as e:
            if not self.create:
                return e
            state = None  # made before a restart and never published
        except Exception as e:
            return e
        if self.generation != generation:
            return None  # a publish finished meanwhile: its contents are newer than this read's
        try:
            if state is None:
                base: MutableRecords = {}
            elif (
                self.known_records is not None
                and self.known is not None
                and (state.data is self.known.data)
            ):
                base = dict(self.known_records)  # revalidated: the same contents as before
            else:
                base = unpack_contents(state.data)
        except CorruptDirectory as e:
            return e
        self.known = state
        self.known_records = dict(base)
        self.read_at = clock.seconds()
        self.view = apply_lenient([c for _, c in self.changes], base)
        return None

    async def publish(
        self, client: MutableClient, clock: IReactorTime, rng: random.Random
    ) -> list[tuple[int, Change]]:
        """Publish the changes made so far (called with the lock held); those published."""
        snapshot = list(self.changes)
        published = await publish_changes(
            client,
            self.cap,
            [c for _, c in snapshot],
            self.known,
            PublishAs(create=self.create, maybe_exists=self.maybe_exists),
            clock,
            rng,
            self.known_records,
            self.packer,
        )
        self.generation += 1
        self.known = published.state
        self.known_records = dict(published.records)
        self.read_at = clock.seconds()
        self.create = self.maybe_exists = False
        del self.changes[: len(snapshot)]
        self.waiting_since = self.read_at  # what was made meanwhile waits from now
        self.view = apply_lenient([c for _, c in self.changes], published.records)
        return snapshot


def forget_clean(dirs: dict[bytes, DirectoryState], most_views: int, most_entries: int) -> None:
    """Once ``dirs`` holds ``most_views`` directories or their views more than
    ``most_entries`` entries, forget the states of directories with nothing to publish
    and not being read, the oldest first, until both are down to half (they are read again
    when next needed)."""
    entries = sum(len(d.view) for d in dirs.values() if d.view is not None)
    if len(dirs) < most_views and entries <= most_entries:
        return
    for si, d in list(dirs.items()):
        if len(dirs) <= most_views // 2 and entries <= most_entries // 2:
            return
        if not (d.changes or d.create or d.loading or d.lock.locked):
            entries -= len(d.view or ())
            del dirs[si]
