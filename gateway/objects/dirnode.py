"""Directories: mutable objects that map NFC-normalized names to child capabilities and metadata.

The contents' format is in :mod:`gateway.objects.dirformat`. A node's operations build
changes (:mod:`gateway.objects.dirchanges`) and commit them through one seam,
:meth:`DirectoryNode._commit`, without knowing how they reach the grid. A node given a
:class:`~gateway.objects.writeback.DirectoryWriteBack` (what a running gateway does)
journals them there, decided against the write-back's view, and they are published later
with the directory's other changes; otherwise they are published at once by
:class:`~gateway.objects.writethrough.WriteThrough`, read-modify-write
(:mod:`gateway.objects.dirupdates`), and concurrent writers lose no entries either way.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from attrs import Factory, define, evolve, field
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from gateway.objects.caps import DirectoryReadCap, DirectoryWriteCap, parse
from gateway.objects.crypto import directory_write_key
from gateway.objects.dirchanges import (
    Change,
    Create,
    Link,
    Rename,
    SetMetadata,
    Unlink,
    identity,
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
from gateway.objects.dirupdates import DirectoryUpdates
from gateway.objects.errors import BadCapability, NotWritable
from gateway.objects.interfaces import IDirectory
from gateway.objects.listings import KeptListings
from gateway.objects.mutable import KnownState, MutableClient
from gateway.objects.writethrough import WriteThrough

if TYPE_CHECKING:
    from gateway.objects.writeback import DirectoryWriteBack

Items = Sequence[tuple["DirectoryNode", Change]]
Results = list[Record | None]


@implementer(IDirectory)
@define(eq=False)
class DirectoryNode:
    """One directory, opened through its write cap (read-write) or read cap (read-only).

    ``clock`` times the read cache and the random pauses (growing from
    ``backoff`` to at most ``max_backoff`` seconds) between attempts of a change
    that lost a race; ``attempts`` bounds those attempts (see
    :class:`~gateway.objects.dirupdates.DirectoryUpdates`).

    With ``write_back`` a writable node's changes are decided against the
    gateway's view, journaled, and published later by that
    :class:`~gateway.objects.writeback.DirectoryWriteBack`; its reads see the
    view, which every node of the directory shares. Without it they are published
    at once by ``write_through``, which nodes opened from one another share (a
    gateway's object store gives all of its nodes one that shares publishes).
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
    write_through: WriteThrough = field(factory=WriteThrough, repr=False)
    #: How many entries the nodes opened from one another keep made (``_listed``), at most.
    listings: KeptListings = field(factory=KeptListings, repr=False)
    #: Where a mkdir's new directory gets its write cap (a gateway's are made ahead).
    new_caps: Callable[[], DirectoryWriteCap] = field(
        default=DirectoryWriteCap.generate, repr=False
    )
    #: The directory's storage index (public): kept, as lookups and changes ask for it often.
    storage_index: bytes = field(
        default=Factory(lambda node: node.cap.storage_index, takes_self=True),
        init=False,
        repr=False,
    )
    updates: DirectoryUpdates = field(
        default=Factory(lambda node: node._make_updates(), takes_self=True), init=False, repr=False
    )
    #: The caps of entries, parsed and checked, by their stored form (read cap, sealed
    #: write cap): a rename or a metadata change keeps them, and a link made here
    #: (mkdir, add, a move) starts with the cap it linked.
    _caps: dict[tuple[str, bytes | None], tuple[ChildCap, str]] = field(
        factory=dict, init=False, repr=False
    )
    #: The last listing's entries and those looked up since, each with its record (:meth:`list`).
    _listed: dict[str, tuple[Record, Entry]] = field(factory=dict, init=False, repr=False)

    @classmethod
    async def create(
        cls,
        client: MutableClient,
        entries: Mapping[str, tuple[ChildCap | None, EntryMetadata]] | None = None,
        *,
        clock: IReactorTime,
        **options: Any,
    ) -> DirectoryNode:
        """A new directory on the grid holding ``entries`` (name → (cap, metadata)), in one
        publish (even with write-back: it exists when this returns)."""
        node = cls(client, DirectoryWriteCap.generate(), clock, **options)
        records = make_records(entries or {}, node._write_key())
        items: list[tuple[DirectoryNode, Change]] = [(node, Create())]
        if records:
            items.append((node, Link(tuple(records.items()), exclusive=False)))
        await node.write_through.commit(items)
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

    def child_node(self, entry: Entry) -> DirectoryNode:
        """A node for a subdirectory entry, with this node's client, clock and options."""
        if not isinstance(entry.cap, DirectoryWriteCap | DirectoryReadCap):
            raise BadChild(f"the entry {shown_name(entry.name)} is not a directory")
        return evolve(self, cap=entry.cap)

    # -- reading --

    async def list(self, max_age: float | None = None) -> dict[str, Entry]:
        """Every entry by name.

        With ``max_age`` (seconds) the contents last read or written by this node
        are reused when they are at most that old; otherwise the grid is read. An entry
        whose record is the one the last listing saw is that listing's ``Entry`` (records
        are immutable: a change replaces one), so listing a large directory again makes
        only the entries that changed.
        """
        records = await self._records(max_age)
        last = self._listed
        entries: dict[str, Entry] = {}
        listed: dict[str, tuple[Record, Entry]] = {}
        for name, record in records.items():
            known = last.get(name)
            if known is None or known[0] is not record:
                known = (record, self._entry(name, record))
            listed[name] = known
            entries[name] = known[1]
        self._listed = listed
        self.listings.kept(self, len(listed))
        return entries

    async def get(self, name: str | bytes, max_age: float | None = None) -> Entry:
        """The entry called ``name`` (NFC-normalized); NoSuchChild when there is none. The
        same ``Entry`` as last time (or as the last listing's) while its record is."""
        name = normalize_name(name)
        records = await self._records(max_age)
        if name not in records:
            raise NoSuchChild(f"there is no entry named {shown_name(name)}")
        record, known = records[name], self._listed.get(name)
        if known is not None and known[0] is record:
            return known[1]
        entry = self._entry(name, record)
        if len(self._listed) <= len(records):  # (a listing starts it afresh)
            self._listed[name] = (record, entry)
            self.listings.kept(self, len(self._listed))
        return entry

    def forget_listing(self) -> None:
        """Drop the entries kept made, and their parsed caps (:mod:`gateway.objects.listings`)."""
        self._listed, self._caps = {}, {}

    async def child(self, name: str | bytes, max_age: float | None = None) -> DirectoryNode:
        """The subdirectory called ``name``, opened as its entry allows."""
        return self.child_node(await self.get(name, max_age))

    def listed_before(self) -> bool:
        """Whether this gateway has contents of the directory to show without the grid."""
        if self.write_back is not None and self.write_back.has_view(self.storage_index):
            return True
        return self.updates.cached is not None

    async def read_state(self, known: KnownState | None = None) -> KnownState:
        """The directory's newest version from the grid (pausing while writers keep changing
        it); ``known``'s contents are kept while its version is still the newest."""
        return await self.updates.read_state(known)

    # -- changing --

    async def add(
        self,
        name: str | bytes,
        cap: ChildCap | None,
        metadata: EntryMetadata | None = None,
        overwrite: bool = True,
        journal: bool = True,
    ) -> Entry:
        """Link ``cap`` as ``name``; ChildExists when the name is taken and not ``overwrite``.

        Without ``metadata`` the entry gets the cap's kind and the clock's time; without
        ``journal``, see :meth:`~gateway.objects.writeback.DirectoryWriteBack.commit`."""
        name = normalize_name(name)
        return (await self.add_many({name: (cap, metadata)}, overwrite, journal))[name]

    async def add_many(
        self,
        entries: Mapping[str, tuple[ChildCap | None, EntryMetadata | None]],
        overwrite: bool = True,
        journal: bool = True,
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
            new[name] = self._known_cap(make_record(cap, metadata, key), cap)
        if not new:
            return {}
        await self._commit([(self, Link(tuple(new.items()), not overwrite))], journal)
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

        The child is published before it is linked (written through now, or written
        back later), so a crash or a ChildExists leaves at worst an unlinked directory,
        never a link to nothing.
        """
        name = normalize_name(name)
        key = self._write_key()
        if metadata is not None and metadata.kind != "dir":
            raise BadChild("mkdir needs metadata of kind 'dir'")
        if not overwrite:
            await self._check_free(name)
        child = evolve(self, cap=self.new_caps())
        now = self.clock.seconds()
        link = self._known_cap(
            make_record(
                child.cap, metadata or EntryMetadata(kind="dir", mtime=now, ctime=now), key
            ),
            child.cap,
        )
        items: list[tuple[DirectoryNode, Change]] = [(child, Create())]
        records = make_records(entries or {}, child._write_key())
        if records:
            items.append((child, Link(tuple(records.items()), exclusive=False)))
        items.append((self, Link(((name, link),), exclusive=not overwrite)))
        await self._commit(items)
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

    # -- internals --

    async def _commit(self, items: Items, journal: bool = True) -> Results:
        """The one seam every change goes through: a list of changes to this and other
        directories, in order. Each is journaled by its node's write-back (and published
        later) when it has one, else published now by its write-through; consecutive
        changes of one path are committed together (one journal record for a move)."""
        results: Results = []
        start = 0
        while start < len(items):
            path = items[start][0]._path()
            end = start + 1
            while end < len(items) and items[end][0]._path() is path:
                end += 1
            results += await path.commit(items[start:end], journal)
            start = end
        return results

    def _path(self) -> DirectoryWriteBack | WriteThrough:
        """The commit path of this node's changes."""
        return self.write_back if self.write_back is not None else self.write_through

    async def _commit_record(self, change: Change) -> Record:
        """:meth:`_commit` of a change that names one entry; its record."""
        (record,) = await self._commit([(self, change)])
        assert record is not None
        return record

    def _make_updates(self) -> DirectoryUpdates:
        return DirectoryUpdates(
            self.client,
            self.cap,
            self.clock,
            self.attempts,
            self.backoff,
            self.max_backoff,
            self.rng,
            self.reuse_known,
            self.reuse_streak,
        )

    def _write_key(self) -> bytes:
        if not isinstance(self.cap, DirectoryWriteCap):
            raise NotWritable("this directory was opened read-only; it cannot be changed")
        return directory_write_key(self.cap.node.signing_seed)

    def _entry(self, name: str, record: Record) -> Entry:
        # Parsing a cap and unsealing a write cap cost tens of microseconds; a path lookup
        # makes one entry per component, so each stored cap is parsed once.
        if record.read_cap is None:
            return Entry(name, None, record.metadata)
        known = self._caps.get((record.read_cap, record.sealed_write_cap))
        if known is None:
            cap = self._parse_cap(name, record)
            known = self._caps[(record.read_cap, record.sealed_write_cap)] = (cap, kind_of(cap))
        cap, kind = known
        if kind != record.metadata.kind:
            raise CorruptDirectory(f"the entry {shown_name(name)}'s capabilities do not agree")
        return Entry(name, cap, record.metadata)

    def _known_cap(self, record: Record, cap: ChildCap | None) -> Record:
        """Remember the cap a record made here holds (no need to parse it back)."""
        if cap is not None and record.read_cap is not None:
            if record.sealed_write_cap is None or isinstance(self.cap, DirectoryWriteCap):
                self._caps[(record.read_cap, record.sealed_write_cap)] = (cap, kind_of(cap))
        return record

    def _parse_cap(self, name: str, record: Record) -> ChildCap:
        assert record.read_cap is not None
        text = record.read_cap
        if record.sealed_write_cap is not None and isinstance(self.cap, DirectoryWriteCap):
            key = directory_write_key(self.cap.node.signing_seed)
            text = unseal_write_cap(key, record.sealed_write_cap, record.read_cap)
        try:
            cap = cast(ChildCap, parse(text))
            kind_of(cap)
        except (BadCapability, BadChild) as e:
            raise CorruptDirectory(
                f"the entry {shown_name(name)} has a bad capability: {e}"
            ) from None
        if read_only_cap(cap).to_string() != record.read_cap:
            raise CorruptDirectory(f"the entry {shown_name(name)}'s capabilities do not agree")
        return cap

    async def _records(self, max_age: float | None) -> dict[str, Record]:
        records = await self._current_records(max_age)
        if len(self._caps) > 2 * len(records) + 64:  # drop the caps of removed entries
            live = {(r.read_cap, r.sealed_write_cap) for r in records.values()}
            self._caps = {k: c for k, c in self._caps.items() if k in live}
        return records

    async def _current_records(self, max_age: float | None) -> dict[str, Record]:
        if self.write_back is not None:
            if isinstance(self.cap, DirectoryWriteCap):
                return await self.write_back.records(self, max_age)
            view = self.write_back.view(self.storage_index, max_age)
            if view is not None:
                return view
        records = self.updates.recent(max_age) if max_age is not None else None
        if records is None:
            records = await self.updates.read()
        return records

    async def _check_free(self, name: str) -> None:
        # A hint only (the change itself checks again): recent contents do, unless contended.
        if name in await self._records(None if self.updates.contended() else self.reuse_known):
            raise ChildExists(exists_message([name]))


async def move(
    source: DirectoryNode,
    source_name: str | bytes,
    destination: DirectoryNode,
    destination_name: str | bytes,
    overwrite: bool = True,
) -> Entry:
    """Move an entry from one directory to another; returns it as linked in ``destination``.

    One commit of two changes: the entry is linked in ``destination`` first and
    unlinked from ``source`` second, so a crash in between leaves the entry in
    both places, never in neither (written back, both are one journal record).
    The unlink only happens if ``source_name`` still links the same child
    (another writer may have replaced it meanwhile). Within one directory this
    is :meth:`DirectoryNode.rename` (one atomic publish). Moving a directory
    into its own subtree is the caller's to prevent.
    """
    source_name = normalize_name(source_name)
    destination_name = normalize_name(destination_name)
    source._write_key()
    key = destination._write_key()
    if source.storage_index == destination.storage_index:
        return await source.rename(source_name, destination_name, overwrite)
    entry = await source.get(source_name)
    record = destination._known_cap(make_record(entry.cap, entry.metadata, key), entry.cap)
    link = Link(((destination_name, record),), exclusive=not overwrite)
    await source._commit([(destination, link), (source, Unlink(source_name, identity(record)))])
    return destination._entry(destination_name, record)


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
