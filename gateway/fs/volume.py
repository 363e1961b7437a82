"""One root directory as the filesystem layer keeps it: directory nodes, the overlay, publishing.

Every session whose account has the same root shares one :class:`Volume`, so
files being written or uploaded are seen by all of them. The volume turns a
closed file into a journaled upload job and, when the upload queue runs that
job, uploads the staged bytes and links them into the directory the file's
path names *now* (a rename while uploading re-targets it; a remove abandons
it; an older version never replaces a newer one).
"""

from __future__ import annotations

import errno
from pathlib import Path as FilePath
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.fs.adopted import journaled_base, restore_staged
from gateway.fs.boundary import grid_boundary
from gateway.fs.contents import Contents, base_cap
from gateway.fs.errors import (
    GridUnavailable,
    NoSpace,
    NoSuchFile,
    NotADirectory,
    PermissionDenied,
    SymlinkLoop,
)
from gateway.fs.kept import KeptCopies
from gateway.fs.localfile import FINAL, LocalFile, LocalMeta
from gateway.fs.located import MAX_SYMLINK_HOPS, Located, link_target
from gateway.fs.nodes import DirectoryNodes
from gateway.fs.overlay import Overlay
from gateway.fs.paths import Path, join, parent_and_name
from gateway.fs.spares import SpareFiles
from gateway.fs.sparse import Base, Ranges
from gateway.fs.staging import StagingArea
from gateway.grid.interfaces import ServerUnavailable
from gateway.objects.caps import (
    DirectoryWriteCap,
    ImmutableCap,
    LiteralCap,
    MutableWriteCap,
    parse,
)
from gateway.objects.concurrency import start
from gateway.objects.dirformat import Entry, EntryMetadata, NoSuchChild
from gateway.objects.errors import NotEnoughShares, UncoordinatedWriteError
from gateway.objects.interfaces import IDirectory, IObjectStore
from gateway.uploads.journal import UploadJob, new_job_id
from gateway.uploads.queue import UploadQueue

#: Seconds a directory's contents read from the grid are reused for lookups.
DIRECTORY_CACHE_SECONDS = 1.0


class Volume:
    """The shared state of one root directory."""

    log = Logger()

    def __init__(
        self,
        root_cap: str,
        store: IObjectStore,
        staging: StagingArea,
        queue: UploadQueue,
        clock: IReactorTime,
        close_waits_for_grid: bool = False,
        kept: KeptCopies | None = None,
    ):
        """``kept`` keeps the staged copies of new files once uploaded (none: deleted)."""
        self.root_cap = root_cap
        self.store = store
        self.staging = staging
        self.queue = queue
        self.clock = clock
        self.close_waits_for_grid = close_waits_for_grid
        self.kept = kept
        self.overlay = Overlay()
        self.spares = SpareFiles(staging, queue, self.overlay, clock)
        self.contents = Contents(store, staging)
        self._root = store.directory(root_cap)
        self.nodes = DirectoryNodes()
        self._root_ready = False
        self._root_lock = DeferredLock()

    # -- directories -------------------------------------------------------------

    @property
    def read_only_root(self) -> bool:
        """Whether the root itself is read-only (a read cap)."""
        return self._root.read_only

    async def ensure_root(self) -> None:
        """Create the root directory on first use (accounts get a fresh key, not an object)."""
        if self._root_ready:
            return
        await self._root_lock.acquire()
        try:
            if self._root_ready:
                return
            try:
                await self._root.list()
            except NotEnoughShares:
                if not isinstance(self._root.cap, DirectoryWriteCap):
                    raise GridUnavailable("the root directory cannot be read now") from None
                try:
                    await self.store.create_empty_directory(self._root.cap)
                except UncoordinatedWriteError:
                    raise GridUnavailable("the root directory cannot be read now") from None
                self.log.info("created a new root directory")
            self._root_ready = True
        finally:
            self._root_lock.release()

    async def directory(self, parts: Path) -> IDirectory:
        """The directory node at ``parts``, symbolic links among them followed (see
        :meth:`resolve`); NoSuchFile / NotADirectory on the way."""
        return (await self._walk(parts))[1]

    async def resolve(self, parts: Path, follow_last: bool = False) -> Path:
        """The path with no symbolic link left among its directories (nor as its last
        component, with ``follow_last``), as the kernel resolves a path under OpenSSH.

        A link's absolute target is taken from the account's root, a relative one from the
        link's directory; ``..`` stops at the root, so no link leads outside it. The last
        component need not exist. More than :data:`MAX_SYMLINK_HOPS` links raise
        :class:`SymlinkLoop`.
        """
        return (await self.locate(parts, follow_last)).path

    async def locate(self, parts: Path, follow_last: bool = False) -> Located:
        """:meth:`resolve`, with what it found on the way: the directory holding the real
        path's last component and, when it looked it up, that component's entry (so a STAT
        or a listing looks nothing up twice)."""
        if not parts or self.overlay.local(parts) is not None:
            # A file being written or uploaded: its path was resolved when it was opened, and
            # it is served without asking the grid (which may not answer).
            return Located(parts)
        hops = 0
        while True:
            real, node, hops, above = await self._walk(parts[:-1], hops)
            name = parts[-1]
            path = (*real, name)
            if not follow_last or self.overlay.local(path) is not None:
                return Located(path, node, parent_entry=above)
            try:
                entry = await self.lookup(node, name)
            except NoSuchChild:
                return Located(path, node, missing=True, parent_entry=above)
            if entry.kind != "symlink":
                return Located(path, node, entry, parent_entry=above)
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise SymlinkLoop(f"too many levels of symbolic links: {join(path)}")
            parts = link_target(real, entry)
            if not parts:
                return Located(parts)

    async def _walk(self, parts: Path, hops: int = 0) -> tuple[Path, IDirectory, int, Entry | None]:
        """The real path of a directory, its node, the count of symbolic links followed
        (``hops`` included) and the entry naming it (None for the root)."""
        if not self._root_ready:
            await self.ensure_root()
        real: Path = ()
        node, above, todo = self._root, None, list(parts)
        while todo:
            name = todo.pop(0)
            try:
                entry = await self.lookup(node, name)
            except NoSuchChild:
                if self.overlay.local((*real, name)) is not None:  # a file not yet uploaded
                    raise NotADirectory(f"not a directory: {join((*real, name))}") from None
                raise NoSuchFile(f"no such directory: {join((*real, name))}") from None
            if entry.kind == "symlink":
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise SymlinkLoop(f"too many levels of symbolic links: {join((*real, name))}")
                todo[:0] = link_target(real, entry)
                node, real, above = self._root, (), None
                continue
            real = (*real, name)
            node = self.child_directory(node, entry, real)
            above = entry
        return real, node, hops, above

    def child_directory(self, parent: IDirectory, entry: Entry, path: Path) -> IDirectory:
        """The node of a subdirectory's entry (:class:`DirectoryNodes`); NotADirectory when
        the entry at ``path`` names something else."""
        return self.nodes.child(parent, entry, path)

    async def writable_directory(self, parts: Path, found: Located | None = None) -> IDirectory:
        """The directory at ``parts``, to add or remove entries: PermissionDenied when its
        capability is read-only, or a client made it read-only (``chmod a-w``). ``found``:
        the lookup of a path in it, which walked there already (when it did)."""
        if found is not None and found.parent is not None:
            real, node, above = found.path[:-1], found.parent, found.parent_entry
        else:
            real, node, _, above = await self._walk(parts)
        if node.read_only or (above is not None and above.metadata.no_write):
            raise PermissionDenied(f"read-only directory: {join(real)}")
        return node

    async def lookup(self, node: IDirectory, name: str) -> Entry:
        """An entry of a directory, fresh if the grid answers, else as this node last read it.

        When the grid is unreachable, files can still be opened for writing (into staging)
        under directories this node has read before; their uploads wait in the queue.
        """
        try:
            return await node.get(name, max_age=DIRECTORY_CACHE_SECONDS)
        except (ServerUnavailable, NotEnoughShares):
            if not node.listed_before():
                raise
            self.log.info("the grid does not answer; using the last listing of a directory")
            return await node.get(name, max_age=float("inf"))

    # -- closing and publishing ---------------------------------------------------

    async def publish(
        self, state: LocalFile, wait: bool | None = None, record: bool = True
    ) -> None:
        """Journal the upload of a closing file; wait for the grid if configured (or told).

        A file whose contents are exactly its base (a copy of a grid file, or not changed
        since it was opened) is journaled as a link of that version: nothing is uploaded.
        A changed file over a base records its changed ranges: the upload stores those.
        With ``record`` false (an fsync's snapshot that :meth:`needs_record` says may go
        without) nothing is journaled or flushed: the upload is queued at once.
        """
        assert state.staged is not None
        staged = state.staged
        base = state.base
        held = state.held_ranges()
        # A file's bytes held here, when they are few, go into its journal record: one flush
        # makes the CLOSE durable, and the staged copy (not flushed, or in memory) is rebuilt
        # from the record after a crash.
        inline = record and state.journaled_inline()
        if record and not inline:
            staged.move_to_disk()  # the record names the file that holds its bytes
        target = self._target(state)
        job = UploadJob(
            job_id=new_job_id(),
            staged=str(staged.path),
            size=state.size,
            display=join(state.path),
            target=target,
            created=self.clock.seconds(),
            data=b"".join(staged.read(s, e - s) for s, e in held) if inline else None,
            changed=None if base is None else sum(e - s for s, e in state.upload_ranges()),
        )
        try:
            if record and not inline:
                staged.fsync()
                self.staging.sync_directory()
            # The record is appended now and flushed in a thread, shared with other CLOSEs:
            # it is durable once ``queue.durable(job_id)`` fires, which the CLOSE reply awaits.
            self.queue.enqueue(job, record=record, staged=staged)
        except OSError as e:
            # Not acknowledged: the client is told, and nothing half-made stays visible.
            staged.discard()
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace("the gateway's disk is full; the file was not saved") from None
            raise
        except BaseException:
            staged.discard()
            raise
        # The path's pending version from now on (a failed flush withdraws it before the CLOSE
        # is answered).
        self.overlay.appended(state, job.job_id)
        if self.close_waits_for_grid if wait is None else wait:
            await self.queue.wait_for(job.job_id)

    def needs_record(self, file: LocalFile) -> bool:
        """Whether an fsync's snapshot of ``file`` needs an upload record: only when a
        recorded job of the same path is pending. Linking the snapshot drops that job's
        record (:meth:`UploadQueue.superseded`), but its "done" is not flushed: after a
        power cut the older record could come back alone and be replayed over the
        acknowledged snapshot. With a record of its own, later in the journal, the
        snapshot is replayed after it. Otherwise a crash before the snapshot is linked
        loses only an fsync never acknowledged, and once it is linked and published it
        is in the grid."""
        return any(self.queue.recorded_job(job_id) for job_id, _ in self.overlay.jobs_at(file.path))

    def _target(self, file: LocalFile) -> dict[str, Any]:
        """What a file's journal record says of where it goes and what it lies over."""
        meta = file.meta
        target: dict[str, Any] = {
            "root": self.root_cap,
            "path": list(file.path),
            "mode": meta.mode,
            "mtime": meta.mtime,
            "ctime": meta.ctime,
            "generation": file.generation,
        }
        base = file.base
        if base is not None:
            target.update(base=base.cap, base_size=base.size, limit=file.limit)
            target["changed"] = [list(r) for r in file.changed]
        return target

    def retarget(self, file: LocalFile) -> None:
        """A pending file was renamed, truncated or its metadata changed: rewrite its record."""
        assert file.job_id is not None
        self.queue.update_target(file.job_id, self._target(file), file.size)

    def adopt(self, job: UploadJob) -> None:
        """A job journaled by an earlier run: make its file visible again until it is linked."""
        path = tuple(job.target["path"])
        meta = LocalMeta(
            job.target.get("mode"),
            job.target.get("mtime"),
            None,
            job.target.get("ctime") or job.created,
        )
        generation = self.overlay.next_generation()
        base, changed, limit = journaled_base(job)
        held = Ranges(job.held())
        if job.data is not None:  # the staged copy was never flushed: rebuild it
            restore_staged(FilePath(job.staged), job.data, list(held), job.size)
        try:
            staged = self.staging.reopen(FilePath(job.staged), held.copy())
        except FileNotFoundError:
            if base is None or changed:
                # Only a finished upload's staged file is ever removed: the job has nothing
                # left to do, and the queue finishes it without a pending entry.
                self.log.info("{path}: already uploaded before the restart", path=join(path))
                return
            staged = self.staging.create()  # an unchanged base's is a hole, never flushed
            staged.truncate(job.size)
        file = LocalFile(path, meta, generation, staged=staged, base=base, changed=changed)
        file.limit = limit
        self.overlay.adopted(file, job.job_id)

    @grid_boundary
    async def upload(self, job: UploadJob) -> None:
        """Run one upload job: upload the staged bytes, then link them where the file is now."""
        file = self.overlay.by_job.get(job.job_id)
        if file is None or file.phase in FINAL:
            self._finish(job.job_id)
            return
        self.overlay.uploading(file)
        if self.overlay.replaced(file) and not self.queue.awaited(job.job_id):
            self._finish(job.job_id)  # a newer version, journaled, replaces it: not stored
            return
        # An fsync on the embedded core alone: the objects are written, not awaited durable;
        # the publish's flush covers them (architecture, "One flush per fsync").
        ordered = self.queue.awaited(job.job_id) and self.store.ordered
        # Someone waits for the publish (an fsync without a record): the link is journaled
        # only if it must be (gateway.objects.unjournaled).
        at_once = self.queue.awaited(job.job_id) and not self.queue.recorded_job(job.job_id)
        try:
            cap = await self._store(file, job, ordered)
            await self.queue.recorded(job.job_id)  # an fsync's job starts before
            await file.lock.acquire()
        except BaseException:
            self.overlay.retry(file)  # the job is retried; the file stays pending
            raise
        publishing: Deferred[bool] | None = None
        try:
            if self.overlay.may_link(file):
                await self._link(file, cap, journal=not (at_once and self.store.write_back))
                for older in self.overlay.superseded_by(file):
                    self.queue.superseded(older)
                if self.store.write_back is not None and self.queue.awaited(job.job_id):
                    # Someone waits for the file to be in the grid (fsync): so must its
                    # directories be. They are published while the journal is flushed.
                    publishing = start(self._publish_directories(file))
                if not self.queue.recorded_job(job.job_id) and publishing is not None:
                    # No record to drop: the publish makes the link durable (in the grid),
                    # unless the file moved meanwhile; then the journal must.
                    if not await publishing:
                        await self.directories_durable()  # (its barrier: the objects first)
                    elif ordered:
                        await self.store.sync()  # (the publish's flush covered them)
                else:
                    await self.directories_durable()  # before the job's record is dropped
        except NoSuchFile:
            self.log.warn(
                "{path}: its directory was removed before the upload finished; dropped",
                path=join(file.path),
            )
        except BaseException:
            file.lock.release()
            self.overlay.retry(file)
            if publishing is not None:
                publishing.addErrback(lambda _: None)  # the retry publishes again
            raise
        # Forget the pending file *before* releasing the lock: whoever waited for it (a
        # rename, setattr or remove) must then find the file in the grid, not in the overlay.
        self._finish(job.job_id)
        file.lock.release()
        self.overlay.stored(file)  # the file opened over it while pending lies over it now
        if publishing is not None:
            await publishing

    async def _publish_directories(self, file: LocalFile) -> bool:
        """Publish the directories on a linked file's path now (for an fsync); whether
        they were (not when the file moved away meanwhile: it is published wherever it
        is now, later)."""
        write_back = self.store.write_back
        assert write_back is not None
        try:
            chain = [await self.directory(file.path[:i]) for i in range(len(file.path))]
        except (NoSuchFile, NotADirectory):
            return False
        await write_back.flush(reversed([node.storage_index for node in chain]))
        return True

    async def _store(self, file: LocalFile, job: UploadJob, ordered: bool) -> ImmutableCap | None:
        """Put a file's contents in the grid: its capability, or None when it rewrote the
        mutable file the path names. Over a base, only the changed ranges are stored."""
        file.over_stored()  # closed while the version it was opened over was pending
        read = self.contents.reader(file, read_ahead=False)
        mutable = await self._existing_mutable(file)
        if mutable is not None:
            await self.store.replace_mutable(mutable, await read(0, file.size))
            return None
        unchanged = file.unchanged_base
        if unchanged is not None:
            return base_cap(unchanged)  # a copy of a grid file: linked, not uploaded
        base = None if file.base is None else base_cap(file.base)
        changed = file.upload_ranges()  # everything, for a new file
        progress = self.queue.advance(job.job_id)
        # A client waiting (fsync) may have a small change carried in the cap, stored by the
        # directory's publish (gateway.objects.overlay); a background upload stores a tree.
        cap = await self.store.update_file(
            base, file.size, changed, read, progress, zeros=file.zero_ranges(), ordered=ordered,
            overlay=self.queue.awaited(job.job_id),
        )  # fmt: skip
        file.stored = Base(cap.to_string(), file.size, cap)
        return cap

    async def _link(self, file: LocalFile, cap: ImmutableCap | None, journal: bool) -> None:
        """Link a stored file into the directory its path names now (see DirectoryNode.add
        for ``journal``)."""
        parent, name = parent_and_name(file.path)
        directory = await self.directory(parent)
        # The entry says what stat said while the file was pending: linking it is not a change
        # a client made, so no attribute may move (make, rsync, tar rely on it).
        attributes = file.attributes(self.clock.seconds())
        if cap is None:
            await directory.set_metadata(name, mtime=attributes.mtime, size=file.size)
            return
        mode = file.meta.mode
        metadata = EntryMetadata(
            kind="file",
            mtime=attributes.mtime,
            ctime=attributes.ctime,
            mode=mode,
            size=file.size,
            no_write=mode is not None and not mode & 0o222,
        )
        await directory.add(name, cap, metadata, journal=journal)

    async def directories_durable(self) -> None:
        """Wait until the directory changes answered so far are on disk (write-back answers
        a change once written, and flushes it after; raises the flush's OSError)."""
        write_back = self.store.write_back
        if write_back is not None:
            await write_back.durable()

    async def _existing_mutable(self, file: LocalFile) -> MutableWriteCap | None:
        """The mutable file the path names, when the file being replaced is one."""
        parent, name = parent_and_name(file.path)
        try:
            entry = await (await self.directory(parent)).get(name, DIRECTORY_CACHE_SECONDS)
        except (NoSuchFile, NoSuchChild, NotADirectory):
            return None
        return entry.cap if isinstance(entry.cap, MutableWriteCap) else None

    def _finish(self, job_id: str) -> None:
        file = self.overlay.finished(job_id)
        if file is None:
            return
        # The queue removes the journal record once this job returns. A crash in between
        # leaves a record whose staged file is gone: the restart finds its file already
        # uploaded (or, for a record holding the bytes, stores and links the same version
        # again, before any later version of the path: records replay in order).
        if file.staged is not None and not self._kept(file):
            file.staged.discard()

    def _kept(self, file: LocalFile) -> bool:
        """Keep a new file's staged copy once it is uploaded (all its bytes are there)."""
        kept, stored, staged = self.kept, file.stored, file.staged
        if kept is None or stored is None or staged is None or file.base is not None:
            return False
        if isinstance(parse(stored.cap), LiteralCap):
            return False  # the cap holds the bytes
        kept.keep(stored.cap, staged)
        return True
