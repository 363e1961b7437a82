"""What the object layer offers the filesystem layer: a store of objects and directories.

The filesystem layer (gateway/fs) works through these interfaces only, with
the object layer's value types (capabilities in :mod:`gateway.objects.caps`,
directory entries in :mod:`gateway.objects.dirformat`) and errors
(:mod:`gateway.objects.errors`); how objects are encoded, placed, read back
and published stays behind them. :class:`~gateway.objects.store.ObjectStore`,
:class:`~gateway.objects.dirnode.DirectoryNode` and
:class:`~gateway.objects.file_reader.FileReader` provide them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, BinaryIO

from zope.interface import Attribute, Interface

from gateway.objects.caps import (
    DirectoryReadCap,
    DirectoryWriteCap,
    ImmutableCap,
    ImmutableReadCap,
    LiteralCap,
    MutableReadCap,
    MutableWriteCap,
)
from gateway.objects.dirformat import ChildCap, Entry, EntryMetadata


class IDirectory(Interface):
    """One directory of the grid, as a gateway sees and changes it."""

    cap = Attribute("DirectoryWriteCap | DirectoryReadCap: the directory's capability (secret)")
    storage_index = Attribute("bytes: the directory's storage index (public)")
    read_only = Attribute("bool: opened with a read capability, it can only be listed")

    def child_node(entry: Entry) -> IDirectory:
        """The directory a subdirectory entry names (no I/O)."""

    def listed_before() -> bool:
        """Whether this gateway has contents of the directory to show without the grid."""

    async def list(max_age: float | None = None) -> dict[str, Entry]:
        """Every entry by name; contents at most ``max_age`` seconds old may be reused."""

    async def get(name: str | bytes, max_age: float | None = None) -> Entry:
        """The entry called ``name``; NoSuchChild when there is none."""

    async def add(
        name: str | bytes,
        cap: ChildCap | None,
        metadata: EntryMetadata,
        overwrite: bool = True,
        journal: bool = True,
    ) -> Entry:
        """Link ``cap`` as ``name``; ChildExists when the name is taken and not ``overwrite``.
        Without ``journal`` the caller publishes the directory now and waits for it: the
        change is journaled only if it must be (:mod:`gateway.objects.unjournaled`)."""

    async def add_many(
        entries: Mapping[str, tuple[ChildCap | None, EntryMetadata]], overwrite: bool = True
    ) -> dict[str, Entry]:
        """Link several children at once (all or none without ``overwrite``)."""

    async def remove(name: str | bytes) -> Entry:
        """Unlink ``name``; NoSuchChild when there is none."""

    async def rename(old: str | bytes, new: str | bytes, overwrite: bool = True) -> Entry:
        """Rename an entry within this directory."""

    async def move_to(
        name: str | bytes, destination: IDirectory, new_name: str | bytes, overwrite: bool = True
    ) -> Entry:
        """Move an entry into another directory (in one step where the layer can)."""

    async def mkdir(
        name: str | bytes,
        metadata: EntryMetadata | None = None,
        overwrite: bool = False,
        entries: Mapping[str, tuple[ChildCap | None, EntryMetadata]] | None = None,
    ) -> IDirectory:
        """Create a directory and link it as ``name``; the new directory."""

    async def set_metadata(name: str | bytes, **changes: Any) -> Entry:
        """Change fields of an entry's metadata."""


class IFileReader(Interface):
    """Random-access reads of one immutable file."""

    size = Attribute("int: the file's size in bytes")

    async def read(offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (b'' at the end)."""


class IDirectoryFlusher(Interface):
    """Directory changes answered before they reach the grid (directory write-back)."""

    async def flush(storage_indexes: Iterable[bytes]) -> None:
        """Publish these directories' changes now."""


class IObjectStore(Interface):
    """Immutable files, mutable files and directories on the grid."""

    params = Attribute("EncodingParams: the erasure coding of new objects")
    servers = Attribute("Sequence[IStorageClient]: the servers in use now")
    write_back = Attribute("IDirectoryFlusher | None: set when directory changes are written back")
    ordered = Attribute(
        "bool: the grid is one server whose changes become durable in the order made "
        "(gateway.grid.interfaces.IOrderedStorage)"
    )

    async def sync() -> None:
        """Return once every change made on ordered servers is durable (raises the error of
        a flush that failed)."""

    def directory(cap: DirectoryWriteCap | DirectoryReadCap | str) -> IDirectory:
        """An existing directory (no I/O)."""

    def reader(cap: ImmutableCap, read_ahead: bool = True) -> IFileReader:
        """Random-access reads of an immutable file (``read_ahead`` False: only what is asked
        for is fetched, as when a change merges a few ranges of its base)."""

    async def upload(source: BinaryIO) -> LiteralCap | ImmutableReadCap:
        """Upload a seekable file as one immutable object; its read capability."""

    async def update_file(
        base: ImmutableCap | None,
        size: int,
        changed: Sequence[tuple[int, int]],
        read: Callable[[int, int], Awaitable[bytes]],
        progress: Callable[[int], None] | None = None,
        zeros: Sequence[tuple[int, int]] = (),
        ordered: bool = False,
        overlay: bool = False,
    ) -> ImmutableCap:
        """Store a new version of a file, at the cost of what changed; its read capability.

        ``read(offset, length)`` returns the new contents (``size`` bytes). ``changed``
        holds sorted, disjoint ``[start, end)`` ranges of them: every byte below
        ``min(size, base.size)`` outside these ranges is the base's byte at the same
        offset, so the store may keep what holds it instead of reading and storing it
        again. Without a base every byte counts as changed. ``progress(n)`` is told
        each time ``n`` more changed bytes are stored. ``zeros`` holds ranges (sorted,
        disjoint) known to be zeros, such as a sparse file's holes: the store may take
        them as zeros without reading them. ``ordered`` (on an :attr:`ordered` grid): it
        returns once the objects are written, not durable (see :meth:`sync`).
        ``overlay`` (a client waits for this version): a small change to a large file may
        be carried in the returned cap instead of stored (:mod:`gateway.objects.overlay`).
        """

    async def read_mutable(cap: MutableWriteCap | MutableReadCap) -> bytes:
        """The current contents of a mutable file."""

    async def replace_mutable(cap: MutableWriteCap, data: bytes) -> None:
        """Make ``data`` the contents of a mutable file."""

    async def create_empty_directory(cap: DirectoryWriteCap) -> None:
        """Create, empty, the directory a capability names (an account's first root)."""
