"""What the CLI can do on a running gateway: put, get, ls, mkdir, rm, mv and check.

This core knows no HTTP: the control server is an adapter onto it. Paths under
a root go through the filesystem layer (the same shared :class:`Volume` the SFTP
sessions use), so files being written or uploaded over SFTP are seen, and a
change made here is seen by every session at once. Bare capabilities go
straight to the object store. Results are JSON-able dicts; only ``put`` without
a target, ``mkdir`` without a path and ``ls`` with ``caps`` return capabilities,
because the user asked for them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, BinaryIO

from attrs import frozen

from gateway.accounts import AccountStore
from gateway.control.targets import BadTarget, Target, resolve
from gateway.fs.boundary import fs_error
from gateway.fs.errors import (
    FileExists,
    IsADirectory,
    NoSuchFile,
    PermissionDenied,
)
from gateway.fs.gridfs import GridFilesystem
from gateway.fs.interfaces import FileAttributes, OpenFlags, SetAttributes
from gateway.fs.part import FilesystemPart
from gateway.fs.paths import join, parent_and_name, split
from gateway.metrics import CheckHistory
from gateway.objects import checker, deepcheck, repairer
from gateway.objects.caps import (
    Capability,
    ChunkedCap,
    ChunkedVerifyCap,
    DirectoryReadCap,
    DirectoryWriteCap,
    ImmutableCap,
    ImmutableReadCap,
    LiteralCap,
    MutableReadCap,
    MutableWriteCap,
    b32encode,
)
from gateway.objects.dirnode import ChildCap
from gateway.objects.errors import ObjectError
from gateway.objects.store import ObjectStore

COPY_CHUNK = 1 << 20
"""Bytes moved per read or write while copying a file."""

Progress = Callable[[int, int], None]


@frozen
class Readable:
    """An open file for ``get``: its size, a range reader and what to call when done."""

    size: int
    read: Callable[[int, int], Awaitable[bytes]]
    close: Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


def _entry_json(name: str, attrs: FileAttributes) -> dict[str, Any]:
    return {
        "name": name,
        "kind": attrs.kind,
        "size": attrs.size,
        "mode": attrs.mode,
        "mtime": attrs.mtime,
    }


class FileOperations:
    """The CLI's operations on one gateway's filesystem part and accounts."""

    def __init__(
        self,
        fs: FilesystemPart,
        accounts: AccountStore,
        check_history: CheckHistory | None = None,
    ):
        self._fs = fs
        self._accounts = accounts
        self.check_history = check_history

    @property
    def store(self) -> ObjectStore:
        """The gateway's object store (the filesystem part must be started)."""
        assert self._fs.store is not None, "filesystem not started"
        return self._fs.store

    def uploads(self, retry_now: bool = False) -> dict[str, Any]:
        """The upload queue: every pending upload (no capabilities); retried at once if asked."""
        queue = self._fs.queue
        if retry_now:
            queue.retry_now()
        status = queue.status()
        staging = self._fs.status()
        return {
            "pending": [
                {k: v for k, v in job.items() if k != "progress"} for job in status["pending"]
            ],
            "retried": retry_now,
            "staging_used": staging.get("staging_used"),
            "staging_quota": staging.get("staging_quota"),
        }

    def target(self, text: str, account: str | None) -> Target:
        """Resolve an argument (see :mod:`gateway.control.targets`)."""
        return resolve(text, self._accounts, account)

    def _filesystem(self, target: Target) -> GridFilesystem:
        assert target.root is not None
        return self._fs.filesystem(target.root, read_only=target.read_only)

    def _tree(self, target: Target, what: str) -> GridFilesystem:
        if not target.in_tree:
            raise BadTarget(f"{what} needs a path or a directory capability, not a file capability")
        return self._filesystem(target)

    async def _is_dir(self, fs: GridFilesystem, path: str) -> bool:
        try:
            return (await fs.stat(path)).kind == "dir"
        except NoSuchFile:
            return False

    # -- put and get ------------------------------------------------------------------

    async def put(
        self,
        source: BinaryIO,
        target_text: str | None,
        account: str | None,
        name: str | None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """Store ``source``'s bytes: as a new immutable object, or at a path.

        Into a directory (an existing one, or a path ending in '/') the file
        keeps ``name``. With ``wait`` the answer comes once the file is in the
        grid; otherwise once it is staged and its upload journaled.
        """
        if target_text is None:
            cap = await self._store_new(source)
            return {"cap": cap.to_string(), "size": cap.size}
        target = self.target(target_text, account)
        fs = self._tree(target, "put")
        path = target.path
        if path.endswith("/") or await self._is_dir(fs, path):
            if not name:
                raise BadTarget(f"{target.label} is a directory; name the file to create in it")
            path = path.rstrip("/") + "/" + name
        path = join(split(path))
        handle = await fs.open(
            path, OpenFlags(write=True, create=True, truncate=True), SetAttributes()
        )
        size = 0
        try:
            while chunk := source.read(COPY_CHUNK):
                await handle.write(size, chunk)
                size += len(chunk)
            if wait:
                await handle.fsync()
        except BaseException:
            await handle.abort()  # publish nothing half-written
            raise
        await handle.close()
        return {"path": path, "size": size}

    async def _store_new(self, source: BinaryIO) -> ImmutableCap:
        """Store a file as a new object (a chunk tree when larger than a chunk)."""
        start_at = source.tell()
        size = source.seek(0, 2) - start_at

        async def read(offset: int, length: int) -> bytes:
            source.seek(start_at + offset)
            return source.read(length)

        return await self.store.update_file(None, size, [(0, size)], read)

    async def open_for_get(self, target_text: str, account: str | None) -> Readable:
        """Open a file (by path or capability) for streaming its bytes."""
        target = self.target(target_text, account)
        if not target.in_tree:
            assert target.cap is not None
            return await self._open_cap(target.cap)
        fs = self._filesystem(target)
        handle = await fs.open(target.path, OpenFlags(read=True), SetAttributes())
        attrs = await handle.stat()
        return Readable(attrs.size, handle.read, handle.close)

    async def _open_cap(self, cap: Capability) -> Readable:
        if isinstance(cap, LiteralCap | ImmutableReadCap | ChunkedCap):
            reader = self.store.reader(cap)
            return Readable(reader.size, reader.read, _nothing)
        if isinstance(cap, MutableWriteCap | MutableReadCap):
            try:
                data = await self.store.read_mutable(cap)
            except ObjectError as e:
                raise fs_error(e) from None

            async def read(offset: int, length: int) -> bytes:
                return data[offset : offset + length]

            return Readable(len(data), read, _nothing)
        raise BadTarget("a verify capability cannot be read; it can only be checked")

    # -- directories ------------------------------------------------------------------

    async def ls(self, target_text: str, account: str | None, caps: bool) -> dict[str, Any]:
        """A directory's entries (or one file's), with read caps when ``caps``."""
        target = self.target(target_text, account)
        if not target.in_tree:
            cap = target.cap
            size = cap.size if isinstance(cap, LiteralCap | ImmutableReadCap | ChunkedCap) else None
            entry: dict[str, Any] = {"name": "", "kind": "file", "size": size}
            return {"directory": False, "entries": [entry]}
        fs = self._filesystem(target)
        attrs = await fs.stat(target.path)
        if attrs.kind != "dir":
            parts = split(target.path)
            entry = _entry_json(parts[-1] if parts else "", attrs)
            if caps:
                entry["cap"] = await self._entry_cap(fs, target.path)
            return {"directory": False, "entries": [entry]}
        listing = await fs.list(target.path)
        entries = [_entry_json(name, a) for name, a in listing]
        if caps:
            linked = await fs.linked_capabilities(target.path)
            for entry in entries:
                found = linked.get(entry["name"])
                read_cap = found.get_read_cap() if isinstance(found, ChildCap) else None
                entry["cap"] = read_cap.to_string() if read_cap is not None else None
        return {"directory": True, "entries": entries}

    async def _entry_cap(self, fs: GridFilesystem, path: str) -> str | None:
        cap = await self._cap_at(fs, path)
        if not isinstance(cap, ChildCap):
            return None
        return cap.get_read_cap().to_string()

    async def mkdir(self, target_text: str | None, account: str | None) -> dict[str, Any]:
        """Create a directory at a path, or without a path an unlinked one (returning its cap)."""
        if target_text is None:
            node = await self.store.create_directory()
            return {"cap": node.cap.to_string()}
        target = self.target(target_text, account)
        await self._tree(target, "mkdir").mkdir(target.path, SetAttributes())
        return {"path": join(split(target.path))}

    async def rm(self, target_text: str, account: str | None, recursive: bool) -> dict[str, Any]:
        """Remove a file or an empty directory; with ``recursive``, a whole tree."""
        target = self.target(target_text, account)
        fs = self._tree(target, "rm")
        if not split(target.path):
            raise PermissionDenied("the root directory cannot be removed")
        attrs = await fs.stat(target.path, follow_symlinks=False)
        if attrs.kind != "dir":
            await fs.remove(target.path)
            return {"removed": 1}
        if not recursive:
            await fs.rmdir(target.path)
            return {"removed": 1}
        return {"removed": await self._remove_tree(fs, join(split(target.path)))}

    async def _remove_tree(self, fs: GridFilesystem, path: str) -> int:
        removed = 0
        for name, attrs in await fs.list(path):
            child = f"{path.rstrip('/')}/{name}"
            if attrs.kind == "dir":
                removed += await self._remove_tree(fs, child)
            else:
                await fs.remove(child)
                removed += 1
        await fs.rmdir(path)
        return removed + 1

    async def mv(
        self, source_text: str, dest_text: str, account: str | None, force: bool
    ) -> dict[str, Any]:
        """Rename or move within one tree; into an existing directory the name is kept."""
        source = self.target(source_text, account)
        dest = self.target(dest_text, account)
        fs = self._tree(source, "mv")
        self._tree(dest, "mv")
        if source.root != dest.root:
            raise BadTarget("mv moves within one account's (or one directory's) tree")
        old = join(split(source.path))
        new = dest.path
        if new.endswith("/") or await self._is_dir(fs, new):
            new = new.rstrip("/") + "/" + parent_and_name(split(old))[1]
        new = join(split(new))
        try:
            await fs.rename(old, new, overwrite=force)
        except FileExists as e:
            if force:
                raise
            raise FileExists(f"{e} (use --force to replace it)") from None
        return {"from": old, "to": new}

    # -- check --------------------------------------------------------------------------

    async def _cap_at(self, fs: GridFilesystem, path: str) -> Capability | None:
        """The capability linked at a path (the root's own for '/'); None for a symlink."""
        return await fs.capability(path)

    async def check_cap(self, target_text: str, account: str | None) -> Capability:
        """The capability a check of this argument looks at."""
        target = self.target(target_text, account)
        if not target.in_tree:
            assert target.cap is not None
            return target.cap
        cap = await self._cap_at(self._filesystem(target), target.path)
        if cap is None:
            raise IsADirectory(f"{target.label} is a symbolic link; it has nothing to check")
        return cap

    async def check(
        self,
        target_text: str,
        account: str | None,
        *,
        verify: bool,
        repair: bool,
        deep: bool,
        on_progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Check (verify, repair) one object, or with ``deep`` every object under a directory."""
        cap = await self.check_cap(target_text, account)
        # What the Health page may show: the path asked about, never a capability.
        index = cap.storage_index
        label = target_text
        if target_text.startswith("GG:"):
            label = f"storage index {b32encode(index)}" if index else "a literal file"
        kind = "repair" if repair else ("verify" if verify else "check")
        store = self.store
        servers = store.servers
        happy = store.params.happy

        async def fix(cap: Capability, before: checker.CheckResult) -> repairer.RepairResult:
            return await repairer.repair(
                cap, store.servers, store.secrets, store.params, before=before
            )

        # A chunked file is many objects (its nodes and extents): checked as a tree.
        whole_tree = isinstance(cap, ChunkedCap | ChunkedVerifyCap)
        if whole_tree or (deep and isinstance(cap, DirectoryWriteCap | DirectoryReadCap)):
            result = await deepcheck.deep_check(
                cap,
                self._children,
                servers,
                verify=verify,
                happy=happy,
                repair=fix if repair else None,
                on_progress=on_progress,
                nodes=store.nodes,
            )
            self._record(
                f"deep {kind}",
                label,
                result.unhealthy == 0,
                f"{result.objects_checked} objects, {result.unhealthy} not healthy, "
                f"{result.unrecoverable} not recoverable",
            )
            return {"deep": True, **result.to_json()}
        found = await checker.check(cap, servers, verify=verify, happy=happy)
        fixed = None
        if repair and (not found.healthy or found.corrupt_shares):
            fixed = await fix(cap, found)
        if on_progress is not None:
            on_progress(1, 1)
        final = fixed.after if fixed is not None else found
        self._record(kind, label, final.healthy, final.summary())
        return {
            "deep": False,
            "check": found.to_json(),
            "repair": fixed.to_json() if fixed is not None else None,
        }

    def _record(self, kind: str, label: str, healthy: bool, summary: str) -> None:
        if self.check_history is not None:
            self.check_history.record(kind, label, healthy, summary)

    async def _children(self, cap: Capability) -> AsyncIterator[Capability]:
        assert isinstance(cap, DirectoryWriteCap | DirectoryReadCap)
        for entry in (await self.store.directory(cap).list()).values():
            if entry.cap is not None:
                yield entry.cap
