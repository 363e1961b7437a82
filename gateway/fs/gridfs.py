"""The filesystem a session sees: paths under the account's root, on directory objects.

Reads come from the grid, or from the local overlay for files still being
written or uploaded; writes go to staged files and are published by the
volume at the last close. Permissions are approximated from capabilities:
a read-only account, a read-only directory or a no-write entry shows no
``w`` bits and refuses writes; ``chmod a-w`` sets no-write, ``u+w`` clears it.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from gateway.fs.attributes import entry_attributes, read_only_view, root_attributes
from gateway.fs.boundary import GRID_FAILURES, grid_boundary
from gateway.fs.contents import base_cap, grid_read
from gateway.fs.errors import (
    DirectoryNotEmpty,
    FileExists,
    GridUnavailable,
    InvalidArgument,
    IsADirectory,
    NoSuchFile,
    NotADirectory,
    NotSupported,
    PermissionDenied,
)
from gateway.fs.handles import ReadHandle, StagedReader, bytes_reader
from gateway.fs.interfaces import (
    FileAttributes,
    FilesystemStats,
    ICapabilities,
    IFilesystem,
    IOpenFile,
    OpenFlags,
    SetAttributes,
)
from gateway.fs.localfile import LocalFile, Phase
from gateway.fs.located import Located
from gateway.fs.paths import Path, join, parent_and_name, split
from gateway.fs.space import grid_space
from gateway.fs.volume import DIRECTORY_CACHE_SECONDS, Volume
from gateway.fs.writing import WriteHandle, Writers, as_fs_error, creation_mode
from gateway.objects.caps import Capability, ImmutableCap, MutableReadCap, MutableWriteCap, parse
from gateway.objects.concurrency import shared
from gateway.objects.dirformat import ChildExists, Entry, EntryMetadata, NoSuchChild
from gateway.objects.interfaces import IDirectory


@implementer(IFilesystem, ICapabilities)
class GridFilesystem:
    """One session's filesystem over a shared :class:`Volume`."""

    def __init__(self, volume: Volume, read_only: bool = False):
        self.volume = volume
        self.read_only = read_only or volume.read_only_root
        self._overlay = volume.overlay
        self._writers = Writers(volume, volume.clock)

    def now(self) -> float:
        """The volume clock's time."""
        return float(self.volume.clock.seconds())

    # -- lookups ---------------------------------------------------------------------

    async def _entry(self, found: Located) -> tuple[IDirectory, Entry]:
        """The entry at a path :meth:`_locate` found, and its directory (neither looked up
        again when the lookup found them)."""
        parts = found.path
        if found.parent is not None and found.entry is not None:
            return found.parent, found.entry
        if found.missing:
            raise NoSuchFile(f"no such file: {join(parts)}")
        parent, name = parent_and_name(parts)
        directory = found.parent or await self.volume.directory(parent)
        try:
            # As the grid last showed it when the grid does not answer (a kept copy or a
            # staged file still reads): Volume.lookup.
            return directory, await self.volume.lookup(directory, name)
        except NoSuchChild:
            raise NoSuchFile(f"no such file: {join(parts)}") from None

    async def _path(self, path: str, follow_last: bool = False) -> Path:
        """A client's path as the real path it names: symbolic links among its directories
        (and as its last component, with ``follow_last`` or a trailing ``/``, as the kernel
        reads ``link/``) are followed."""
        return (await self._locate(path, follow_last)).path

    async def _locate(self, path: str, follow_last: bool = False) -> Located:
        """:meth:`_path`, with the directory and entry found on the way (``Volume.locate``)."""
        return await self.volume.locate(split(path), follow_last or path.endswith("/"))

    def _attributes(self, entry: Entry, directory: IDirectory) -> FileAttributes:
        return entry_attributes(entry, self.read_only or directory.read_only)

    def _root_attributes(self) -> FileAttributes:
        return root_attributes(self.read_only)

    async def _local_attributes(self, local: LocalFile) -> FileAttributes:
        if local.phase is Phase.OPENING:  # an OPEN being prepared: its contents come next
            await shared(local.ready)
        attrs = local.attributes(self.now())
        return read_only_view(attrs) if self.read_only else attrs

    # -- IFilesystem: reading --------------------------------------------------------

    @grid_boundary
    async def realpath(self, path: str) -> str:
        """Canonical absolute path, symbolic links resolved; the last component need not
        exist (as OpenSSH's sftp-server answers). Textual when the grid cannot answer."""
        parts = split(path)
        if not parts:
            return "/"
        try:
            return join(await self.volume.resolve(parts, follow_last=True))
        except (GridUnavailable, *GRID_FAILURES):
            return join(parts)

    @grid_boundary
    async def stat(self, path: str, follow_symlinks: bool = True) -> FileAttributes:
        """Attributes, from the overlay first."""
        found = await self._locate(path, follow_symlinks)
        parts = found.path
        if not parts:
            return self._root_attributes()
        local = self._overlay.local(parts)
        if local is not None:
            return await self._local_attributes(local)
        directory, entry = await self._entry(found)
        return self._attributes(entry, directory)

    @grid_boundary
    async def list(self, path: str) -> list[tuple[str, FileAttributes]]:
        """Grid entries merged with the overlay's files in this directory."""
        found = await self._locate(path, True)
        parts = found.path
        if found.parent is not None and found.entry is not None:
            directory = self.volume.child_directory(found.parent, found.entry, parts)
        else:
            directory = await self.volume.directory(parts)
        entries = await directory.list(max_age=DIRECTORY_CACHE_SECONDS)
        listing = {name: self._attributes(entry, directory) for name, entry in entries.items()}
        for name, local in list(self._overlay.children(parts)):
            listing[name] = await self._local_attributes(local)
        return sorted(listing.items())

    @grid_boundary
    async def readlink(self, path: str) -> str:
        """A symlink entry's target."""
        found = await self._locate(path)
        if self._overlay.local(found.path) is None:
            _, entry = await self._entry(found)
        if self._overlay.local(found.path) is not None or entry.kind != "symlink":
            raise InvalidArgument(f"not a symbolic link: {join(found.path)}")
        return entry.metadata.symlink or ""

    @grid_boundary
    async def statvfs(self, path: str) -> FilesystemStats:
        """Usable grid space: servers' free space scaled by the encoding's expansion."""
        await self.stat(path)
        return grid_space(self.volume.store)

    # -- IFilesystem: opening ----------------------------------------------------------

    @grid_boundary
    async def open(self, path: str, flags: OpenFlags, attrs: SetAttributes) -> IOpenFile:
        """Open for reading (grid or overlay) or writing (staged, shared per path).

        A symbolic link is followed, as open(2) follows it; an exclusive create refuses one.
        """
        found = await self._locate(path, follow_last=not (flags.create and flags.exclusive))
        parts = found.path
        if not parts:
            raise IsADirectory("the root is a directory")
        writing = flags.write or flags.truncate
        if not writing and flags.create and not await self._exists(found):
            writing = True
        if writing:
            self._require_writable()
            return await self._writers.open(parts, flags, attrs, found)
        return await self._open_for_reading(found)

    async def _exists(self, found: Located) -> bool:
        if self._overlay.local(found.path) is not None:
            return True
        try:
            await self._entry(found)
        except NoSuchFile:
            return False
        return True

    def _require_writable(self) -> None:
        if self.read_only:
            raise PermissionDenied("this account is read-only")

    async def _open_for_reading(self, located: Located) -> ReadHandle:
        parts = located.path
        local = self._overlay.local(parts)
        found = None if local is not None else await self._entry(located)
        if local is not None:
            attrs = await self._local_attributes(local)
            if local.failure is not None:
                raise as_fs_error(local.failure)
            unchanged = local.unchanged_base
            if unchanged is not None:  # the bytes are the grid version's
                return self._grid_reader(parts, base_cap(unchanged), attrs)
            assert local.staged is not None
            staged_reader = StagedReader.of(local.staged)
            if local.over_grid:  # the changes over the grid version (or another), merged
                read = self.volume.contents.reader(local, staged_reader.read_now)
                return ReadHandle(join(parts), read, attrs, staged_reader.close)
            return ReadHandle.local(join(parts), staged_reader, attrs)
        assert found is not None
        directory, entry = found
        if entry.kind == "dir":
            raise IsADirectory(f"{join(parts)} is a directory")
        attrs = self._attributes(entry, directory)
        cap = entry.cap
        if isinstance(cap, MutableWriteCap | MutableReadCap):
            data = await self.volume.store.read_mutable(cap)
            return ReadHandle(join(parts), bytes_reader(data), attrs)
        if not isinstance(cap, ImmutableCap):
            raise PermissionDenied("this entry cannot be read as a file")
        return self._grid_reader(parts, cap, attrs)

    def _grid_reader(self, parts: Path, cap: ImmutableCap, attrs: FileAttributes) -> ReadHandle:
        """A read handle on an immutable grid file (it can be copied by linking ``cap``); it
        reads the file's kept copy when there is one."""
        kept = self.volume.kept
        local = None if kept is None else kept.reader(cap.to_string())
        if local is not None:
            return ReadHandle.local(join(parts), local, attrs, cap)
        return ReadHandle(join(parts), grid_read(self.volume.store, cap), attrs, cap=cap)

    @grid_boundary
    async def copy_data(
        self,
        source: IOpenFile,
        read_offset: int,
        length: int,
        target: IOpenFile,
        write_offset: int,
    ) -> None:
        """Server-side copy between two open handles (SFTP ``copy-data``)."""
        if not isinstance(target, WriteHandle):
            raise PermissionDenied("the target file was not opened for writing")
        if isinstance(source, WriteHandle) and not source.readable:
            raise PermissionDenied("the source file was not opened for reading")
        same = source is target or (
            isinstance(source, WriteHandle) and source.state is target.state
        )
        if (
            same
            and read_offset <= write_offset
            and (length == 0 or write_offset < read_offset + length)
        ):
            raise InvalidArgument("the source and target ranges of the copy overlap")
        await self._writers.copy(source, read_offset, length, target, write_offset)

    # -- ICapabilities ------------------------------------------------------------------

    @grid_boundary
    async def capability(self, path: str) -> Capability | None:
        """The capability linked at a path (the root's own for '/'); None for a symlink."""
        found = await self._locate(path)
        parts = found.path
        if not parts:
            return parse(self.volume.root_cap)
        if self._overlay.local(parts) is not None:
            raise FileExists(f"{join(parts)} is still being written or uploaded; try again later")
        _, entry = await self._entry(found)
        return entry.cap

    @grid_boundary
    async def linked_capabilities(self, path: str) -> dict[str, Capability | None]:
        """The capabilities the entries of a directory link in the grid, by name."""
        directory = await self.volume.directory(await self._path(path, follow_last=True))
        return {name: entry.cap for name, entry in (await directory.list()).items()}

    # -- handles call back here ----------------------------------------------------------

    async def _writable_directory(
        self, found: Located, entries: bool = True
    ) -> tuple[Path, str, IDirectory]:
        """The directory holding a path found by :meth:`_locate`, its path and the last
        component's name, to change: its entries (``entries``: not chmod a-w either) or only
        their metadata (which its mode does not govern, as in POSIX)."""
        self._require_writable()
        parts, name = parent_and_name(found.path)
        if entries:
            return parts, name, await self.volume.writable_directory(parts, found)
        directory = found.parent or await self.volume.directory(parts)
        if directory.read_only:
            raise PermissionDenied(f"read-only directory: {join(parts)}")
        return parts, name, directory

    @grid_boundary
    async def mkdir(self, path: str, attrs: SetAttributes) -> None:
        """Create a directory."""
        found = await self._locate(path)
        parts = found.path
        if not parts:
            raise FileExists("the root directory exists")  # (as mkdir("/") is EEXIST)
        _, name, directory = await self._writable_directory(found)
        if self._overlay.local(parts) is not None:
            raise FileExists(f"{join(parts)} already exists")
        now = self.now()
        metadata = EntryMetadata(kind="dir", mtime=now, ctime=now, mode=creation_mode(attrs.mode))
        try:
            await directory.mkdir(name, metadata)
        except ChildExists:
            raise FileExists(f"{join(parts)} already exists") from None

    @grid_boundary
    async def rmdir(self, path: str) -> None:
        """Remove an empty directory."""
        found = await self._locate(path)
        parts = found.path
        if not parts:
            raise PermissionDenied("the root directory cannot be removed")
        _, name, directory = await self._writable_directory(found)
        if self._overlay.local(parts) is not None:
            raise NotADirectory(f"not a directory: {join(parts)}")
        _, entry = await self._entry(Located(parts, directory))
        if entry.kind != "dir":
            raise NotADirectory(f"not a directory: {join(parts)}")
        child = self.volume.child_directory(directory, entry, parts)
        if await child.list(DIRECTORY_CACHE_SECONDS) or self._overlay.has_under(parts):
            raise DirectoryNotEmpty(f"directory not empty: {join(parts)}")
        try:
            await directory.remove(name)
        except NoSuchChild:
            raise NoSuchFile(f"no such directory: {join(parts)}") from None

    @grid_boundary
    async def remove(self, path: str) -> None:
        """Remove a file or symlink; a file still open or uploading is abandoned."""
        located = await self._locate(path)
        parts = located.path
        _, name, directory = await self._writable_directory(located)
        found = await self._abandon_local(parts)
        try:
            entry = await self.volume.lookup(directory, name)  # as fresh as any lookup's
        except NoSuchChild:
            if not found:
                raise NoSuchFile(f"no such file: {join(parts)}") from None
            return
        if entry.kind == "dir":
            raise IsADirectory(f"{join(parts)} is a directory")
        try:
            await directory.remove(name)
        except NoSuchChild:
            if not found:
                raise NoSuchFile(f"no such file: {join(parts)}") from None

    async def _abandon_local(self, parts: Path) -> bool:
        """Forget the local state of a path (its open handles publish nothing)."""
        found = self._overlay.abandon_writing(parts) is not None
        pending = self._overlay.pending.get(parts)
        if pending is not None:
            versions = [pending, *self._overlay.older_versions([pending])]
            for version in versions:
                await version.lock.acquire()
            try:
                if self._overlay.pending.get(parts) is pending:
                    self._overlay.abandon_pending(parts)
                for older in versions[1:]:  # (their uploads would link them again)
                    self._overlay.abandon_version(older)
            finally:
                for version in versions:
                    version.lock.release()
            found = True
        return found

    @grid_boundary
    async def rename(self, old: str, new: str, overwrite: bool) -> None:
        """Rename files or directories; local files under ``old`` follow."""
        old_found, new_found = await self._locate(old), await self._locate(new)
        old_parts, new_parts = old_found.path, new_found.path
        if old_parts == new_parts:
            await self.stat(old, follow_symlinks=False)
            return
        if new_parts[: len(old_parts)] == old_parts:
            raise InvalidArgument("cannot move a directory into itself")
        old_parent, old_name, source_dir = await self._writable_directory(old_found)
        new_parent, new_name, target_dir = await self._writable_directory(new_found)
        # Hold the files being uploaded under ``old`` first and look at the grid after: a link
        # in flight finishes before we decide what is local and what is in the grid.
        held = self._overlay.versions_at_or_under(old_parts)
        for pending in held:
            await pending.lock.acquire()
        try:
            local_source = self._overlay.local(old_parts) is not None or self._overlay.has_under(
                old_parts
            )
            grid_source = await _maybe(source_dir, old_name)
            if not local_source and grid_source is None:
                raise NoSuchFile(f"no such file: {join(old_parts)}")
            grid_target = await _maybe(target_dir, new_name)
            target_exists = grid_target is not None or self._overlay.local(new_parts) is not None
            if target_exists and not overwrite:
                raise FileExists(f"{join(new_parts)} already exists")
            if grid_target is not None and grid_target.kind == "dir":
                raise FileExists(f"{join(new_parts)} is a directory")
            if target_exists and grid_source is not None and grid_source.kind == "dir":
                raise NotADirectory(f"{join(new_parts)} is not a directory")
            if overwrite:
                await self._abandon_local(new_parts)
            if grid_source is not None:
                try:
                    if old_parent == new_parent:
                        await source_dir.rename(old_name, new_name, overwrite=True)
                    else:
                        await source_dir.move_to(old_name, target_dir, new_name, overwrite=True)
                except NoSuchChild:
                    raise NoSuchFile(f"no such file: {join(old_parts)}") from None
            for pending in self._overlay.move(old_parts, new_parts, held):
                self.volume.retarget(pending)  # (its record names the new place)
        finally:
            for pending in held:
                pending.lock.release()

    @grid_boundary
    async def symlink(self, link_path: str, target: str) -> None:
        """Create a symlink entry."""
        found = await self._locate(link_path)
        parts = found.path
        _, name, directory = await self._writable_directory(found)
        if self._overlay.local(parts) is not None:
            raise FileExists(f"{join(parts)} already exists")
        try:
            await directory.add(
                name, None, EntryMetadata.symlink_to(target, self.now()), overwrite=False
            )
        except ChildExists:
            raise FileExists(f"{join(parts)} already exists") from None

    @grid_boundary
    async def setattr(
        self, path: str, changes: SetAttributes, follow_symlinks: bool = True
    ) -> None:
        """Size, mode and times; on a local file, or on its directory entry.

        Without ``follow_symlinks`` a symbolic link's own times change (lsetstat); its
        mode and size cannot.
        """
        self._require_writable()
        found = await self._locate(path, follow_symlinks)
        parts = found.path
        if not parts:
            return
        if not follow_symlinks and (changes.size is not None or changes.mode is not None):
            if self._overlay.local(parts) is None:
                _, entry = await self._entry(found)
                if entry.kind == "symlink":
                    raise NotSupported("a symbolic link has no mode or size of its own")
        local = self._overlay.local(parts)
        if local is not None and local.job_id is None:  # open for writing
            await shared(local.ready)
            await self._writers.apply_local(local, changes)
            return
        if changes.size is not None:
            handle = await self.open(path, OpenFlags(write=True), SetAttributes())
            try:
                await handle.setattr(changes)
            finally:
                await handle.close()
            changes = SetAttributes(mode=changes.mode, mtime=changes.mtime, atime=changes.atime)
            local = self._overlay.local(parts)
        if local is not None and local.job_id is not None:  # waiting for the grid
            await local.lock.acquire()
            try:
                if self._overlay.pending.get(parts) is local:
                    await self._writers.apply_local(local, changes)
                    return
                # Linked while we waited for it: change the directory entry instead.
            finally:
                local.lock.release()
        fields: dict[str, Any] = {}
        if changes.mode is not None:
            fields["mode"] = changes.mode & 0o7777
            fields["no_write"] = not changes.mode & 0o222
        if changes.mtime is not None:
            fields["mtime"] = changes.mtime
        if not fields:
            return
        _, name, directory = await self._writable_directory(found, entries=False)
        try:
            await directory.set_metadata(name, **fields)
        except NoSuchChild:
            raise NoSuchFile(f"no such file: {join(parts)}") from None


async def _maybe(directory: IDirectory, name: str) -> Entry | None:
    try:
        return await directory.get(name, max_age=DIRECTORY_CACHE_SECONDS)
    except NoSuchChild:
        return None
