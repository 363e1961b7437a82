"""Directories: mutable objects that map NFC-normalized names to child capabilities and metadata.

The contents' format is in :mod:`gateway.objects.dirformat`. Every change is a
read-modify-write through :meth:`MutableClient.modify`: the change is
re-applied to freshly read contents whenever another writer (another process,
another gateway) published first, so concurrent writers lose no entries.
Between attempts a writer waits a random, growing pause on the clock it was
given, so two writers that keep colliding drift apart.

A node remembers the version it last read or published (contents and share
map). A change made within ``reuse_known`` seconds of that is written against
it without reading first; the publish's test vectors make it fall back to a
fresh read if anyone else wrote meanwhile. So that writers sharing a directory
do not starve each other's reads (a read needs a moment without publishes),
after such a collision the node reads before every change for ``reuse_known``
seconds, and at most ``reuse_streak`` changes in a row skip the read. A
sequence of changes by one node (``mkdir``, ``rename``, ``rmdir`` one after
another) thus costs mostly one publish each, not a read and a publish.

A node given a :class:`~gateway.objects.writeback.DirectoryWriteBack` (what a
running gateway does) publishes nothing itself: each change becomes a
:mod:`~gateway.objects.dirchanges` change decided against the write-back's
view, journaled, and published later with the directory's other changes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define, evolve, field
from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from zope.interface import implementer

from gateway.objects.caps import (
    DirectoryReadCap,
    DirectoryWriteCap,
    b32encode,
    parse,
)
from gateway.objects.crypto import directory_write_key
from gateway.objects.dirchanges import (
    Change,
    Create,
    Link,
    Rename,
    SetMetadata,
    Unlink,
    write_through,
)
from gateway.objects.dirformat import (
    FORMAT_VERSION,
    BadChild,
    BadName,
    ChildCap,
    ChildExists,
    CorruptDirectory,
    Entry,
    EntryMetadata,
    Kind,
    NoSuchChild,
    Record,
    exists_message,
    kind_of,
    make_record,
    make_records,
    normalize_name,
    pack_contents,
    read_only_cap,
    shown_name,
    unpack_contents,
    unseal_write_cap,
)
from gateway.objects.errors import (
    BadCapability,
    NotWritable,
    SharesKeptChanging,
    UncoordinatedWriteError,
)
from gateway.objects.interfaces import IDirectory
from gateway.objects.mutable import KnownState, MutableClient

if TYPE_CHECKING:
    from gateway.objects.writeback import DirectoryWriteBack

T = TypeVar("T")


@implementer(IDirectory)
@define(eq=False)
class DirectoryNode:
    """One directory, opened through its write cap (read-write) or read cap (read-only).

    ``clock`` times the read cache and the random pauses (growing from
    ``backoff`` to at most ``max_backoff`` seconds) between attempts of a change
    that lost a race; ``attempts`` bounds those attempts. (A read that overlaps
    another writer's publish is retried by :class:`MutableClient` itself.)

    With ``write_back`` a writable node's changes are decided against the
    gateway's view, journaled, and published later by that
    :class:`~gateway.objects.writeback.DirectoryWriteBack`; its reads see the
    view, which every node of the directory shares.
    """

    client: MutableClient
    cap: DirectoryWriteCap | DirectoryReadCap
    clock: IReactorTime
    attempts: int = 24
    backoff: float = 0.02
    max_backoff: float = 1.0
    rng: random.Random = field(factory=random.Random, repr=False)
    reuse_known: float = 10.0
    reuse_streak: int = 4
    write_back: DirectoryWriteBack | None = field(default=None, repr=False)
    _cache: tuple[float, dict[str, Record]] | None = field(default=None, init=False, repr=False)
    _known: tuple[float, KnownState] | None = field(default=None, init=False, repr=False)
    _contended_until: float = field(default=0.0, init=False, repr=False)
    _streak: int = field(default=0, init=False, repr=False)
    _changing: DeferredLock = field(factory=DeferredLock, init=False, repr=False)
    _entries: dict[str, tuple[Record, Entry]] = field(factory=dict, init=False, repr=False)

    @classmethod
    async def create(
        cls,
        client: MutableClient,
        entries: Mapping[str, tuple[ChildCap | None, EntryMetadata]] | None = None,
        *,
        clock: IReactorTime,
        **options: Any,
    ) -> DirectoryNode:
        """A new directory on the grid holding ``entries`` (name → (cap, metadata)).

        One publish, or two when an entry holds a write cap: the key that seals
        it derives from the directory's own cap, which :meth:`MutableClient.create`
        makes.
        """
        entries = entries or {}
        records = make_records(entries, None)  # checks names and kinds before anything is created
        writable = any(cap is not None and not cap.read_only for cap, _ in entries.values())
        writer, state = await client.create_known(pack_contents({} if writable else records))
        node = cls(client, DirectoryWriteCap(writer), clock, **options)
        node._known = (clock.seconds(), state)
        if writable:
            await node.add_many(entries)
        else:
            node._remember(records)
        return node

    @classmethod
    def open(
        cls,
        client: MutableClient,
        cap: DirectoryWriteCap | DirectoryReadCap | str,
        *,
        clock: IReactorTime,
        **options: Any,
    ) -> DirectoryNode:
        """A node for an existing directory (no I/O); a string is parsed as a capability."""
        if isinstance(cap, str):
            cap = cast(DirectoryWriteCap | DirectoryReadCap, parse(cap))
        if not isinstance(cap, DirectoryWriteCap | DirectoryReadCap):
            raise BadCapability("that capability does not name a directory (or only verifies it)")
        return cls(client, cap, clock, **options)

    @property
    def read_only(self) -> bool:
        """True when this node can only list (opened with a read cap)."""
        return self.cap.read_only

    @property
    def storage_index(self) -> bytes:
        """The directory's storage index (public)."""
        return self.cap.storage_index

    def child_node(self, entry: Entry) -> DirectoryNode:
        """A node for a subdirectory entry, with this node's client, clock and options."""
        if not isinstance(entry.cap, DirectoryWriteCap | DirectoryReadCap):
            raise BadChild(f"the entry {shown_name(entry.name)} is not a directory")
        return evolve(self, cap=entry.cap)

    # -- reading --

    async def list(self, max_age: float | None = None) -> dict[str, Entry]:
        """Every entry by name.

        With ``max_age`` (seconds) the contents last read or written by this node
        are reused when they are at most that old; otherwise the grid is read.
        """
        return {name: self._entry(name, r) for name, r in (await self._records(max_age)).items()}

    async def get(self, name: str | bytes, max_age: float | None = None) -> Entry:
        """The entry called ``name`` (NFC-normalized); NoSuchChild when there is none."""
        name = normalize_name(name)
        records = await self._records(max_age)
        if name not in records:
            raise NoSuchChild(f"there is no entry named {shown_name(name)}")
        return self._entry(name, records[name])

    async def child(self, name: str | bytes, max_age: float | None = None) -> DirectoryNode:
        """The subdirectory called ``name``, opened as its entry allows."""
        return self.child_node(await self.get(name, max_age))

    # -- changing --

    async def add(
        self,
        name: str | bytes,
        cap: ChildCap | None,
        metadata: EntryMetadata | None = None,
        overwrite: bool = True,
    ) -> Entry:
        """Link ``cap`` as ``name``; ChildExists when the name is taken and not ``overwrite``.

        Without ``metadata`` the entry gets the cap's kind and the clock's time.
        """
        name = normalize_name(name)
        return (await self.add_many({name: (cap, metadata)}, overwrite))[name]

    async def add_many(
        self,
        entries: Mapping[str, tuple[ChildCap | None, EntryMetadata | None]],
        overwrite: bool = True,
    ) -> dict[str, Entry]:
        """Link several children in one publish; without ``overwrite`` all or none are added."""
        key = self._write_key()
        now = self.clock.seconds()
        new: dict[str, Record] = {}
        for raw, (cap, metadata) in entries.items():
            name = normalize_name(raw)
            if name in new:
                raise BadName(
                    f"the name {shown_name(name)} is given twice (after NFC normalization)"
                )
            if metadata is None:
                metadata = EntryMetadata(kind=kind_of(cap), mtime=now, ctime=now)
            new[name] = make_record(cap, metadata, key)
        if not new:
            return {}
        await self._commit(Link(tuple(new.items()), not overwrite))
        return {name: self._entry(name, r) for name, r in new.items()}

    async def remove(self, name: str | bytes) -> Entry:
        """Unlink ``name`` and return the entry it had (the child object itself is untouched)."""
        name = normalize_name(name)
        self._write_key()
        return self._entry(name, await self._commit_record(Unlink(name)))

    async def rename(self, old: str | bytes, new: str | bytes, overwrite: bool = True) -> Entry:
        """Rename an entry within this directory in one publish; returns it under its new name."""
        old, new = normalize_name(old), normalize_name(new)
        self._write_key()
        if old == new:
            return await self.get(old)
        return self._entry(new, await self._commit_record(Rename(old, new, overwrite)))

    async def mkdir(
        self,
        name: str | bytes,
        metadata: EntryMetadata | None = None,
        overwrite: bool = False,
        entries: Mapping[str, tuple[ChildCap | None, EntryMetadata]] | None = None,
    ) -> DirectoryNode:
        """Create a new directory and link it here as ``name``; returns its (writable) node.

        The child is published before it is linked, so a crash or a ChildExists
        leaves at worst an unlinked directory, never a link to nothing.
        """
        name = normalize_name(name)
        self._write_key()
        if metadata is not None and metadata.kind != "dir":
            raise BadChild("mkdir needs metadata of kind 'dir'")
        if not overwrite:
            await self._check_free(name)
        if self._writes_back() and not entries:
            # The new directory is published later, before the first publish that links it.
            cap = DirectoryWriteCap.generate()
            now = self.clock.seconds()
            meta = metadata or EntryMetadata(kind="dir", mtime=now, ctime=now)
            child = evolve(self, cap=cap)
            link = Link(((name, make_record(cap, meta, self._write_key())),), not overwrite)
            assert self.write_back is not None
            await self.write_back.commit([(child, Create()), (self, link)])
            return child
        child = await DirectoryNode.create(
            self.client,
            entries,
            clock=self.clock,
            attempts=self.attempts,
            backoff=self.backoff,
            max_backoff=self.max_backoff,
            rng=self.rng,
            write_back=self.write_back,
        )
        await self.add(name, child.cap, metadata, overwrite)
        return child

    async def set_metadata(self, name: str | bytes, **changes: Any) -> Entry:
        """Change fields of an entry's metadata (e.g. ``mtime=…, mode=0o644``); returns the entry.

        The kind cannot change (BadChild); unknown fields raise TypeError.
        """
        name = normalize_name(name)
        self._write_key()
        if "kind" in changes:
            raise BadChild("an entry's kind cannot be changed")
        change = SetMetadata(name, tuple(sorted(changes.items())))
        return self._entry(name, await self._commit_record(change))

    async def move_to(
        self,
        name: str | bytes,
        destination: IDirectory,
        new_name: str | bytes,
        overwrite: bool = True,
    ) -> Entry:
        """Move an entry into another directory (see :func:`move`)."""
        assert isinstance(destination, DirectoryNode)
        return await move(self, name, destination, new_name, overwrite)

    def listed_before(self) -> bool:
        """Whether this gateway has contents of the directory to show without the grid."""
        if self.write_back is not None and self.write_back.has_view(self.storage_index):
            return True
        return self._cache is not None

    async def read_state(self) -> KnownState:
        """The directory's newest version from the grid (pausing while writers keep changing
        it)."""
        for attempt in range(self.attempts):
            try:
                return await self.client.read_known(self.cap.node)
            except SharesKeptChanging:  # writers kept replacing it: pause, then try again
                if attempt == self.attempts - 1:
                    raise
                await self._pause(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- internals --

    def _writes_back(self) -> bool:
        return self.write_back is not None and isinstance(self.cap, DirectoryWriteCap)

    async def _commit(self, change: Change) -> Record | None:
        """The one seam through which this node's changes go: journaled by write-back (and
        published later) when the node has it, else published now."""
        if self._writes_back():
            assert self.write_back is not None
            return (await self.write_back.commit([(self, change)]))[0]
        return await self._modify(write_through(change))

    async def _commit_record(self, change: Change) -> Record:
        """:meth:`_commit` of a change that names one entry; its record."""
        record = await self._commit(change)
        assert record is not None
        return record

    def _write_key(self) -> bytes:
        if not isinstance(self.cap, DirectoryWriteCap):
            raise NotWritable("this directory was opened read-only; it cannot be changed")
        return directory_write_key(self.cap.node.signing_seed)

    def _entry(self, name: str, record: Record) -> Entry:
        # Parsing a cap and unsealing a write cap cost tens of microseconds; a path lookup
        # makes one entry per component, so each record's entry is made once.
        cached = self._entries.get(name)
        if cached is not None and cached[0] is record:
            return cached[1]
        entry = self._make_entry(name, record)
        self._entries[name] = (record, entry)
        return entry

    def _make_entry(self, name: str, record: Record) -> Entry:
        cap: ChildCap | None = None
        if record.read_cap is not None:
            text = record.read_cap
            if record.sealed_write_cap is not None and isinstance(self.cap, DirectoryWriteCap):
                key = directory_write_key(self.cap.node.signing_seed)
                text = unseal_write_cap(key, record.sealed_write_cap, record.read_cap)
            try:
                cap = cast(ChildCap, parse(text))
                kind = kind_of(cap)
            except (BadCapability, BadChild) as e:
                raise CorruptDirectory(
                    f"the entry {shown_name(name)} has a bad capability: {e}"
                ) from None
            if kind != record.metadata.kind or read_only_cap(cap).to_string() != record.read_cap:
                raise CorruptDirectory(f"the entry {shown_name(name)}'s capabilities do not agree")
        return Entry(name, cap, record.metadata)

    def _remember(self, records: dict[str, Record]) -> None:
        self._cache = (self.clock.seconds(), dict(records))
        if len(self._entries) > 2 * len(records) + 64:  # drop entries of removed names
            self._entries = {n: e for n, e in self._entries.items() if records.get(n) is e[0]}

    async def _records(self, max_age: float | None) -> dict[str, Record]:
        if self.write_back is not None:
            if isinstance(self.cap, DirectoryWriteCap):
                return await self.write_back.records(self, max_age)
            view = self.write_back.view(self.storage_index, max_age)
            if view is not None:
                return view
        if max_age is not None and self._cache is not None:
            when, records = self._cache
            if self.clock.seconds() - when <= max_age:
                return records
        state = await self.read_state()
        records = unpack_contents(state.data)
        self._remember(records)
        self._known = (self.clock.seconds(), state)
        return records

    async def _check_free(self, name: str) -> None:
        # A hint only (the change itself checks again): recent contents do, unless contended.
        contended = self.clock.seconds() < self._contended_until
        if name in await self._records(None if contended else self.reuse_known):
            raise ChildExists(exists_message([name]))

    async def _modify(self, change: Callable[[dict[str, Record]], T]) -> T:
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

    async def _modify_now(self, change: Callable[[dict[str, Record]], T]) -> T:
        assert isinstance(self.cap, DirectoryWriteCap)
        outcome: list[tuple[T, dict[str, Record]]] = []

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
                si = b32encode(self.storage_index)
                raise UncoordinatedWriteError(
                    f"the directory {si} changed under every one of {self.attempts}"
                    " attempts to update it; try again later"
                ) from None
            result, records = outcome[0]
            self._remember(records)
            self._known = (self.clock.seconds(), state)
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


async def move(
    source: DirectoryNode,
    source_name: str | bytes,
    destination: DirectoryNode,
    destination_name: str | bytes,
    overwrite: bool = True,
) -> Entry:
    """Move an entry from one directory to another; returns it as linked in ``destination``.

    Two publishes: the entry is added to ``destination`` first and removed from
    ``source`` second, so a crash in between leaves the entry in both places,
    never in neither. The removal only happens if ``source_name`` still links
    the same child (another writer may have replaced it meanwhile). Within one
    directory this is :meth:`DirectoryNode.rename` (one atomic publish). Moving a
    directory into its own subtree is the caller's to prevent.
    """
    source_name = normalize_name(source_name)
    destination_name = normalize_name(destination_name)
    source._write_key()
    destination._write_key()
    if source.storage_index == destination.storage_index:
        return await source.rename(source_name, destination_name, overwrite)
    entry = await source.get(source_name)
    if source.write_back is not None and destination.write_back is source.write_back:
        # Both changes in one journal record: the entry is never in neither place.
        record = make_record(entry.cap, entry.metadata, destination._write_key())
        link = Link(((destination_name, record),), exclusive=not overwrite)
        await source.write_back.commit([(destination, link), (source, Unlink(source_name))])
        return destination._entry(destination_name, record)
    added = await destination.add(destination_name, entry.cap, entry.metadata, overwrite)
    expected = (entry.read_cap and entry.read_cap.to_string(), entry.metadata.symlink)

    def change(records: dict[str, Record]) -> None:
        record = records.get(source_name)
        if record is not None and (record.read_cap, record.metadata.symlink) == expected:
            del records[source_name]

    await source._modify(change)
    return added


# The directory API in one place for callers: the node and the format's public names.
__all__ = [
    "FORMAT_VERSION",
    "BadChild",
    "BadName",
    "ChildCap",
    "ChildExists",
    "CorruptDirectory",
    "DirectoryNode",
    "Entry",
    "EntryMetadata",
    "Kind",
    "NoSuchChild",
    "kind_of",
    "move",
    "normalize_name",
    "pack_contents",
    "unpack_contents",
]
