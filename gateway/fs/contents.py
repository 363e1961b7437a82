"""A local file's contents: its staged bytes over its base in the grid, read and copied.

The volume reads files that are open or waiting for their upload through
:class:`Contents`: a handle's READ, the upload of a changed file (which
stores only its changed ranges, :meth:`~gateway.objects.interfaces.IObjectStore.update_file`),
and the copy an fsync takes. Readers of the grid versions files lie over are
kept for a while, so the segments a client's reads fetched are there again
when the upload reads around its changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

from gateway.fs.boundary import grid_boundary
from gateway.fs.localfile import LocalFile
from gateway.fs.rangecopy import copy_and_close, copy_ranges
from gateway.fs.sparse import Base, Ranges, Reader, merged_read
from gateway.fs.staging import MEMORY_FILE_BYTES, StagedFile, StagingArea
from gateway.fs.under import Under
from gateway.objects.caps import ImmutableCap, parse
from gateway.objects.interfaces import IObjectStore
from gateway.threads import Threads

#: Readers of base versions kept. Each caches segments of its file (a chunk tree's reader
#: up to 8 extents' worth, ~8 MiB), and a file fsynced in a loop makes a new base each time:
#: 16 of them let a SQLite workload's RSS grow past 250 MiB; 4 kept it near 100 MiB (both
#: measured while dropped readers still waited for the garbage collector: _Forgetting).
BASE_READERS = 4

COPY_IN_THREAD = 4 << 20
"""Bytes from which a staged copy runs in a thread (below, a thread handoff costs more)."""

MEMORY_COPY_BYTES = 1 << 20
"""Most changed bytes a copy may hold in memory rather than in a new staged file."""


def grid_read(store: IObjectStore, cap: ImmutableCap, read_ahead: bool = True) -> Reader:
    """A read function over an immutable grid file, with filesystem errors."""
    return grid_boundary(store.reader(cap, read_ahead).read)


def base_cap(base: Base) -> ImmutableCap:
    """The capability of a base version (parsed only when this process did not make it:
    a base adopted from the journal at a restart)."""
    if base.parsed is not None:
        return base.parsed
    cap = parse(base.cap)
    if not isinstance(cap, ImmutableCap):
        raise TypeError("a base version is an immutable file")
    return cap


class Contents:
    """Reads and copies the contents of local files, for one volume."""

    def __init__(self, store: IObjectStore, staging: StagingArea):
        self.store = store
        self.staging = staging
        self._readers: dict[tuple[str, bool], Reader] = {}

    def base_reader(self, base: Base, read_ahead: bool = True) -> Reader:
        """Reads of a base version (one reader per version, kept for a while; a reader whose
        read failed is dropped, so the next read finds the servers afresh)."""
        key = (base.cap, read_ahead)
        read = self._readers.get(key)
        if read is None:
            if len(self._readers) >= BASE_READERS:
                del self._readers[next(iter(self._readers))]
            read = self._readers[key] = self._forgetting(key, base_cap(base))
        return read

    def forget(self, base: Base) -> None:
        """Drop the reader of a base no local file lies over any more (an fsync rebased)."""
        self._readers.pop((base.cap, True), None)
        self._readers.pop((base.cap, False), None)

    def _forgetting(self, key: tuple[str, bool], cap: ImmutableCap) -> Reader:
        """A reader of a base that leaves the cache when a read fails."""
        return _Forgetting(self._readers, key, grid_read(self.store, cap, key[1]))

    def reader(
        self,
        file: LocalFile,
        staged: Callable[[int, int], bytes] | None = None,
        *,
        read_ahead: bool = True,
    ) -> Reader:
        """Reads of the file's contents as they are at each read (later writes included).

        ``staged`` reads the staged bytes (by default the file's staged file; a reader that
        must outlive it passes its own descriptor's). An upload, which reads only the
        extents it stores again, reads its base without ``read_ahead``.
        """

        async def read(offset: int, length: int) -> bytes:
            assert file.staged is not None
            base, under = file.base, file.under
            below: Reader | None = None
            if base is not None:
                below = self.base_reader(base, read_ahead)
            elif under is not None:
                below = self.under_reader(under, read_ahead)
            return await merged_read(
                offset,
                length,
                size=file.size,
                changed=file.changed,
                staged=staged if staged is not None else file.staged.read,
                base=below,
                limit=file.limit,
            )

        return read

    def under_reader(self, under: Under, read_ahead: bool = True) -> Reader:
        """Reads of the version a file was opened over and did not copy (its staged bytes
        over its own base), its descriptor held open while each read runs."""
        base = None if under.base is None else self.base_reader(under.base, read_ahead)

        async def read(offset: int, length: int) -> bytes:
            under.reading()
            try:
                return await merged_read(
                    offset,
                    length,
                    size=under.size,
                    changed=under.held,
                    staged=under.read_staged,
                    base=base,
                    limit=under.limit,
                )
            finally:
                under.read_done()

        return read

    async def copy(
        self, file: LocalFile, threads: Threads | None = None, in_memory: bool = False
    ) -> StagedFile:
        """A new staged file holding what ``file``'s staged file holds of its contents: the
        changed ranges over a base (never the base's bytes), or everything without one.

        The kernel copies the bytes; a copy of :data:`COPY_IN_THREAD` bytes or more runs in a
        thread, the reactor serving others meanwhile. The caller keeps ``file`` from being
        written until this returns (an fsync's snapshot must be one state of the file).

        A small copy is made in memory, as a new staged file starts
        (:mod:`gateway.fs.staging`); with ``in_memory`` (for a copy that is not written
        again and that only an inline journal record may name) up to
        :data:`MEMORY_COPY_BYTES`. No file is then created in the staging directory and
        none removed after. On a filesystem without a journal, ext4 skips inodes freed in
        the last minute when it makes a new one, so each file created and removed per
        fsync made every later file (shares, staged files) cost more to create.
        """
        assert file.staged is not None and file.under is None
        source = file.staged
        # Its descriptor's number may already name another file: never copy from it.
        assert not source.discarded, "copying a staged file that was discarded"
        held = file.staged_bytes().copy()
        limit = MEMORY_COPY_BYTES if in_memory else MEMORY_FILE_BYTES
        copy = self.staging.create(threads, memory_limit=limit if held.covered <= limit else 0)
        if copy.in_memory or source.in_memory or threads is None or held.covered < COPY_IN_THREAD:
            return _filled(copy, source, held)
        try:
            copy.hold(held, source.size)
            # Descriptors of its own: the source may be closed meanwhile.
            fds = os.dup(source.fd), os.dup(copy.fd)
            await threads(partial(copy_and_close, *fds, list(held)))
        except BaseException:
            copy.discard()
            raise
        return copy


def _filled(copy: StagedFile, source: StagedFile, held: Ranges) -> StagedFile:
    """``copy`` (new and empty) holding the ``held`` ranges of ``source``, and as long; it
    is discarded if that fails. The kernel copies no range between memory and a disk:
    such copies are made by hand."""
    try:
        copy.hold(held, source.size)
        copy_ranges(source.fd, copy.fd, list(held), kernel=not (copy.in_memory or source.in_memory))
    except BaseException:
        copy.discard()
        raise
    return copy


class _Forgetting:
    """Reads of a base through ``read``; a failed read drops it from ``readers``.

    An object, not a closure that names itself to find its entry: that made a reference
    cycle, so a reader dropped from the cache (every fsync makes a new base) lived on, with
    the segments its extents' readers keep (up to 8 MiB), until a full collection of the
    garbage collector (run rarely, :mod:`gateway.collector`): under a stream of fsyncs
    289 of them were alive at once, 34 MiB of segments.
    """

    def __init__(
        self, readers: dict[tuple[str, bool], Reader], key: tuple[str, bool], read: Reader
    ) -> None:
        self._readers = readers
        self._key = key
        self._read = read

    async def __call__(self, offset: int, length: int) -> bytes:
        """Bytes at ``offset`` of the base (dropped from the cache if the read fails)."""
        try:
            return await self._read(offset, length)
        except BaseException:
            if self._readers.get(self._key) is self:
                del self._readers[self._key]
            raise
