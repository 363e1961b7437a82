"""Opening files for writing, and what happens when their handles close, sync or vanish.

All handles open for writing on one path share a
:class:`~gateway.fs.localfile.LocalFile` and its staged file. It is registered
in the overlay *before* the first await of the OPEN, so a STAT pipelined behind
the OPEN already sees the file; each step below is a transition of its state
machine, made by the overlay. The last
handle to close hands the staged file to the volume for publishing; a handle
whose session ended without a CLOSE is aborted, and publishes nothing unless
another handle on the same file was closed by its client (whose data the
gateway acknowledged, and therefore keeps).

A file opened without TRUNC is not copied: its staged file is sparse, holding
the ranges written over the grid version it was opened on (see
:mod:`gateway.fs.sparse`); reads merge the two, and its upload stores only what
changed. An fsync stores a snapshot of the changes and then makes that version
the base of what is written next, so each fsync costs what changed since the
last one.

The staged files of open files are written back to disk in the reactor's
threads while they are written, and the closing CLOSE fsyncs in a thread before
the volume publishes (see :mod:`gateway.fs.staging`): its reply still waits for
the bytes to be durable, but the reactor serves other sessions meanwhile. Until
that publish has journaled the file, an OPEN of its path waits. The journal
record is flushed in a thread too, together with the records of other files
closed meanwhile (:meth:`~gateway.uploads.queue.UploadQueue.durable`); the
CLOSE is answered once it is on disk.
"""

from __future__ import annotations

import errno

from attrs import define
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from gateway.fs.boundary import grid_boundary
from gateway.fs.errors import (
    FileExists,
    FSError,
    IsADirectory,
    NoSpace,
    NoSuchFile,
    PermissionDenied,
)
from gateway.fs.interfaces import FileAttributes, IOpenFile, OpenFlags, SetAttributes
from gateway.fs.localfile import Changes, LocalFile, LocalMeta, Phase
from gateway.fs.located import Located
from gateway.fs.overlay import Overlay
from gateway.fs.paths import Path, join, parent_and_name
from gateway.fs.reopening import copy_under, open_over, wait_over
from gateway.fs.sparse import Base, Reader
from gateway.fs.staging import MEMORY_FILE_BYTES, StagedFile
from gateway.fs.volume import Volume
from gateway.objects.caps import ImmutableCap, MutableReadCap, MutableWriteCap
from gateway.objects.concurrency import shared
from gateway.objects.dirformat import Entry, NoSuchChild
from gateway.threads import Threads, reactor_threads

COPY_CHUNK = 1 << 20

#: Applied to the mode a client gives at OPEN or MKDIR, as a POSIX server's umask is.
CREATE_UMASK = 0o022


def creation_mode(mode: int | None) -> int | None:
    """The mode a new file or directory gets from the mode the client asked for."""
    return None if mode is None else mode & 0o7777 & ~CREATE_UMASK


class Writers:
    """The write side of one session's filesystem: open, close, abort, fsync."""

    def __init__(self, volume: Volume, clock: IReactorTime, threads: Threads | None = None):
        """``threads`` runs staged files' flush-behind; by default the clock's thread pool (a
        clock without one, such as a test's, leaves all of it to the fsync at CLOSE)."""
        self.volume = volume
        self.overlay: Overlay = volume.overlay
        self._clock = clock
        self._threads = threads if threads is not None else reactor_threads(clock)

    def now(self) -> float:
        """The volume clock's time."""
        return float(self._clock.seconds())

    async def open(
        self, parts: Path, flags: OpenFlags, attrs: SetAttributes, found: Located | None = None
    ) -> WriteHandle:
        """A handle on the path's shared open file, making the file if needed (``found``: the
        lookup that resolved ``parts``, whose directory is not walked to again)."""
        state = self.overlay.writing.get(parts)
        while state is not None and state.phase is Phase.CLOSING:
            assert state.closed is not None
            await shared(state.closed)  # its last CLOSE is publishing it: open what it published
            state = self.overlay.writing.get(parts)
        if state is not None and not state.abandoned:
            if flags.exclusive and flags.create:
                raise FileExists(f"{join(parts)} already exists")
            if state.meta.mode is not None and not state.meta.mode & 0o222:
                raise PermissionDenied(f"{join(parts)} is read-only")  # (chmod a-w while open)
            state.handles += 1
            handle = WriteHandle(self, state, flags.read, flags.append)
            await shared(state.ready)
            if state.failure is not None:
                state.handles -= 1
                raise as_fs_error(state.failure)
            if flags.truncate:
                assert state.staged is not None
                state.staged.truncate(0)
                state.truncated(0)  # nothing of the base shows any more
                state.meta.mtime = self.now()
                state.dirty = True
            return handle
        # Registered before the first await: a STAT pipelined behind this OPEN sees the file.
        now = self.now()
        meta = LocalMeta(mode=creation_mode(attrs.mode), mtime=now, ctime=now)
        state = self.overlay.opening(parts, meta)
        try:
            await self._prepare(state, flags, found)
        except BaseException as e:
            if state.staged is not None:
                state.staged.discard()
            self.overlay.failed(state, e)
            raise
        if state.abandoned:  # removed while it was being opened: the handle writes nowhere
            state.ready.callback(None)
        else:
            self.overlay.ready(state)
        return WriteHandle(self, state, flags.read, flags.append)

    async def _prepare(self, state: LocalFile, flags: OpenFlags, found: Located | None) -> None:
        """Check the open is allowed and give the state its starting contents."""
        parts = state.path
        parent, name = parent_and_name(parts)
        found_parent = None if found is None else found.parent
        directory = found_parent or await self.volume.directory(parent)
        if directory.read_only:
            raise PermissionDenied(f"read-only directory: {join(parent)}")
        pending = self.overlay.pending.get(parts)
        entry: Entry | None = None
        if pending is None:
            try:
                entry = await self.volume.lookup(directory, name)
            except NoSuchChild:
                entry = None
        exists = pending is not None or entry is not None
        if entry is not None:
            if entry.kind == "dir":
                raise IsADirectory(f"{join(parts)} is a directory")
            if entry.kind == "symlink":  # only an exclusive create gets here without following
                raise FileExists(f"{join(parts)} already exists")
            if entry.metadata.no_write or isinstance(entry.cap, MutableReadCap):
                raise PermissionDenied(f"{join(parts)} is read-only")
        if pending is not None and pending.meta.mode is not None and not pending.meta.mode & 0o222:
            raise PermissionDenied(f"{join(parts)} is read-only")
        if exists and flags.exclusive and flags.create:
            raise FileExists(f"{join(parts)} already exists")
        if not exists and not flags.create:
            raise NoSuchFile(f"no such file: {join(parts)}")
        if not exists:
            await self.volume.writable_directory(parent, found)  # a new name: not chmod a-w
        if pending is not None:
            state.meta.mode = pending.meta.mode
            state.meta.ctime = pending.meta.ctime
            if not flags.truncate:  # unchanged until written (O_TRUNC changes it, as in POSIX)
                state.meta.mtime = pending.attributes(self.now()).mtime
        elif entry is not None:
            state.meta.mode = entry.metadata.mode
            state.meta.ctime = entry.metadata.ctime
            if not flags.truncate:
                state.meta.mtime = entry.metadata.mtime
        if exists and not flags.truncate:
            if pending is not None:  # (gateway.fs.reopening)
                contents = self.volume.contents
                await open_over(state, pending, contents, self._new_staged, self._threads)
            else:
                assert entry is not None
                state.staged = self._new_staged()
                if isinstance(entry.cap, ImmutableCap):
                    # Nothing is copied: reads come from the grid until changed, and after.
                    state.on_base(Base(entry.cap.to_string(), entry.cap.size, entry.cap))
                else:
                    await self._download_into(entry.cap, state)
        else:
            state.staged = self._new_staged()
            state.dirty = True

    def _new_staged(self) -> StagedFile:
        """A new staged file: in memory until it holds more than a journal record can."""
        return self.volume.staging.create(self._threads, memory_limit=MEMORY_FILE_BYTES)

    @grid_boundary
    async def _download_into(self, cap: object, state: LocalFile) -> None:
        """Copy a mutable file's bytes into the state's staged file (to modify it)."""
        assert state.staged is not None
        if not isinstance(cap, MutableWriteCap):
            raise PermissionDenied("this entry cannot be written")
        state.staged.write(0, await self.volume.store.read_mutable(cap))

    async def copy(
        self,
        source: IOpenFile,
        read_offset: int,
        length: int,
        target: WriteHandle,
        write_offset: int,
    ) -> None:
        """Copy ``length`` bytes (0: to the end) from ``source`` into ``target``.

        A whole immutable grid file copied into an empty file is linked, not copied: the
        target's contents become that version, unchanged, and its CLOSE links the same
        capability (nothing is read or stored). Anything else is copied in chunks, as
        OpenSSH's server does.
        """
        cap = getattr(source, "cap", None)
        state = target.state
        await shared(state.ready)
        size = (await source.stat()).size
        whole = read_offset == 0 and (length == 0 or length >= size)
        if (
            isinstance(cap, ImmutableCap)
            and whole
            and write_offset == 0
            and state.size == 0
            and state.since is None
        ):
            state.on_base(Base(cap.to_string(), cap.size, cap))
            state.dirty = True
            state.meta.mtime = self.now()
            return
        end = size if length == 0 else min(size, read_offset + length)
        offset = read_offset
        while offset < end:
            data = await source.read(offset, min(COPY_CHUNK, end - offset))
            if not data:
                break
            await target.write(write_offset + offset - read_offset, data)
            offset += len(data)

    # -- handles call back here ----------------------------------------------------------

    async def apply_local(self, state: LocalFile, changes: SetAttributes) -> None:
        """Attribute changes on a file that lives in the overlay: an open one publishes
        them with its contents; a journaled one has its journal record rewritten."""
        await state.not_copying()
        if changes.size is not None:
            assert state.staged is not None
            state.staged.truncate(changes.size)
            state.truncated(changes.size)
            state.meta.mtime = self.now()  # as truncate(2) sets it
        if changes.mode is not None:
            state.meta.mode = changes.mode & 0o7777
        if changes.mtime is not None:
            state.meta.mtime = changes.mtime
        if changes.atime is not None:
            state.meta.atime = changes.atime
        if state.job_id is None:
            if changes != SetAttributes():
                state.dirty = True  # metadata set on an open file is published with it
        else:
            self.volume.retarget(state)

    async def close(self, state: LocalFile) -> None:
        """One writer closed; the last one publishes (unless the file was removed or unchanged)."""
        state.closed_by_client = True
        await self._release(state)

    async def abort(self, state: LocalFile) -> None:
        """One writer vanished without a CLOSE; see the module docstring for what is kept."""
        await self._release(state)

    async def _release(self, state: LocalFile) -> None:
        state.handles -= 1
        if state.handles > 0:
            return
        assert state.staged is not None
        # (a base with an overlay is stored as a tree once its writers are done: folded)
        folds = state.base is not None and state.base.overlaid
        if state.abandoned or not (state.dirty or folds) or not state.closed_by_client:
            self.overlay.released(state)
            state.drop_under()
            state.staged.discard()
            if self.volume.queue.idle:
                self.volume.spares.idle()  # nothing more is being written (gateway.fs.spares)
            return
        # The bytes reach the disk in a thread first, so publish's own fsync finds little left
        # to write and the reactor is not held meanwhile. The file stays visible while that
        # runs (a rename re-targets it, a remove abandons it); a new OPEN of the path waits.
        closed = self.overlay.closing(state)
        try:
            await copy_under(state, self._threads)  # it stands on its own from now on
            if state.unchanged_base is None and not state.journaled_inline():
                await state.staged.presync()
            if state.abandoned:
                state.staged.discard()
                return
            await self.volume.publish(state, wait=False)
            await self._journaled(state)
        except BaseException:
            self.overlay.unsaved(state)
            state.drop_under()
            state.staged.discard()  # not acknowledged: nothing stays (publish discards too)
            raise
        finally:
            closed.callback(None)
        if self.volume.close_waits_for_grid:
            assert state.job_id is not None
            await self.volume.queue.wait_for(state.job_id)

    async def fsync(self, state: LocalFile) -> None:
        """Store a snapshot of the open file and return once it is in the grid.

        The snapshot holds the changes (its staged copy costs what changed, never the
        base). Once stored, the version it made becomes the file's base, and what was
        written meanwhile its changes: the next fsync stores only those.
        """
        await state.syncing.acquire()  # one snapshot at a time: each rebases the next
        try:
            await wait_over(state, self.volume.queue)
            if state.phase is not Phase.OPEN:
                await self._closed_meanwhile(state)
                return
            if not state.dirty:
                return
            await copy_under(state, self._threads)  # (a version not stored as one)
            assert state.staged is not None
            meta = state.meta
            snapshot = self.overlay.snapshot(
                state, LocalMeta(meta.mode, meta.mtime, meta.atime, meta.ctime)
            )
            # Writes wait while the changes are copied (in a thread when large): the snapshot
            # is one state of the file, and what is written after it counts in ``since``.
            async with state.writes_held():
                # A snapshot no record names is only read by its upload: up to 1 MiB of it
                # is copied into memory (Contents.copy).
                in_memory = not self.volume.needs_record(snapshot)
                snapshot.staged = await self.volume.contents.copy(
                    state, self._threads, in_memory=in_memory
                )
                snapshot.base, snapshot.limit = state.base, state.limit
                snapshot.changed = state.changed.copy()
                state.dirty = False
                state.since = Changes.from_now(state.size)
            uploaded: Deferred[None] | None = None
            try:
                # No record unless a recorded version of the path is pending (see
                # Volume.needs_record): the fsync is acknowledged once in the grid.
                record = self.volume.needs_record(snapshot)
                await self.volume.publish(snapshot, wait=False, record=record)
                assert snapshot.job_id is not None
                # Its objects are stored while the record is flushed; nothing is linked
                # before it is durable (UploadQueue.recorded).
                uploaded = self.volume.queue.wait_for(snapshot.job_id)
                if record:
                    await self._journaled(snapshot)
                else:
                    self.overlay.journaled(snapshot)
            except BaseException:
                if uploaded is not None:
                    uploaded.addErrback(lambda _: None)  # the job is dropped with the record
                self.overlay.unsaved(snapshot)
                snapshot.staged.discard()
                state.dirty = True
                raise
            await uploaded
            self._rebase(state, snapshot)
        finally:
            state.since = None
            state.syncing.release()

    async def _closed_meanwhile(self, state: LocalFile) -> None:
        """An fsync that waited behind another while the file's last handle closed: the
        CLOSE's version holds every write made before this fsync, so that is what it waits
        for; a file removed meanwhile has nothing to make durable, one dropped unchanged
        neither. (Its staged bytes may be gone: nothing is copied.)"""
        if state.abandoned:
            return
        if state.closed is not None:
            await shared(state.closed)  # the CLOSE's journaling, however it ends
        if state.job_id is not None and not state.abandoned:
            await self.volume.queue.wait_for(state.job_id)

    def _rebase(self, state: LocalFile, snapshot: LocalFile) -> None:
        """The snapshot is in the grid: make its version the open file's base."""
        stored = snapshot.stored
        since = state.since
        if stored is None or since is None or state.phase is not Phase.OPEN:
            return  # not stored as a version (a mutable file), or closed meanwhile
        old = state.rebase(stored, since)
        state.over = state.since_open = None  # (the snapshot's version is newer)
        if old is not None:
            self.volume.contents.forget(old)  # its segments are the new base's now

    async def _journaled(self, state: LocalFile) -> None:
        """Wait until a published file's journal record is durable (flushed in a thread,
        with other files' records), and the directory changes answered before it. If it
        cannot be, the error is raised: the caller withdraws the file, whose CLOSE was not
        acknowledged."""
        assert state.job_id is not None
        try:
            await self.volume.queue.durable(state.job_id)
            await self.volume.directories_durable()  # the directories it is made in
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace("the gateway's disk is full; the file was not saved") from None
            raise
        self.overlay.journaled(state)


@implementer(IOpenFile)
@define(eq=False)
class WriteHandle:
    """A handle on a path open for writing; all such handles share the path's LocalFile."""

    writers: Writers
    state: LocalFile
    readable: bool
    append: bool
    closed: bool = False

    @property
    def path(self) -> str:
        """Where the file is now (renames re-target it)."""
        return join(self.state.path)

    _reader: Reader | None = None

    def _staged(self) -> StagedFile:
        assert self.state.staged is not None, "state not ready"
        return self.state.staged

    async def read(self, offset: int, length: int) -> bytes:
        """Read the contents as written so far (over the grid version they change)."""
        if not self.readable:
            raise PermissionDenied("file was not opened for reading")
        ready = self.read_ready(offset, length)
        if ready is not None:  # no grid version under the staged bytes
            return ready
        if self._reader is None:
            self._reader = self.writers.volume.contents.reader(self.state)
        return await self._reader(offset, length)

    def read_ready(self, offset: int, length: int) -> bytes | None:
        """The contents as written so far, when they are all in the staged file (no grid
        version under them)."""
        if not self.readable or self.state.over_grid:
            return None
        return self._staged().read(offset, length)

    async def write(self, offset: int, data: bytes) -> None:
        """Write into the staged file (at the end, for an appending handle)."""
        await self.state.not_copying()
        staged = self._staged()
        if self.append:
            offset = staged.size
        staged.write(offset, data)
        self.state.wrote(offset, offset + len(data))
        self.state.dirty = True
        self.state.meta.mtime = self.writers.now()  # as a write(2) sets it

    async def stat(self) -> FileAttributes:
        """The file as written so far."""
        return self.state.attributes(self.writers.now())

    async def setattr(self, changes: SetAttributes) -> None:
        """Truncate/extend, or set mode and times, on the open file."""
        await self.writers.apply_local(self.state, changes)

    async def fsync(self) -> None:
        """Return once these contents are durable in the grid."""
        await self.writers.fsync(self.state)

    async def close(self) -> None:
        """Close; the last handle's close publishes the file."""
        if self.closed:
            return
        self.closed = True
        await self.writers.close(self.state)

    async def abort(self) -> None:
        """The client went away without closing: this handle's writes alone publish nothing."""
        if self.closed:
            return
        self.closed = True
        await self.writers.abort(self.state)


def as_fs_error(error: BaseException) -> Exception:
    """The error a handle sharing a failed open gets."""
    if isinstance(error, FSError):
        return error
    return NoSuchFile("the file could not be opened")
