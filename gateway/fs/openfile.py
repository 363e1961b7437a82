"""Files being written and files waiting for upload: the local state the grid does not have yet.

A :class:`WriteState` exists while at least one handle has a path open for
writing; every handle on that path shares it and its staged file, so writes
through one are seen by the others (sshfs opens several). When the last handle
closes, the state becomes a :class:`Pending` upload: the staged bytes plus a
journaled job. Both are keyed by path in the :class:`Overlay`, which is what
stat, readdir, rename and remove consult before the grid — so a file is
visible with its current size from the moment OPEN starts, and a rename or
remove of a file still open or still uploading re-targets or abandons it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, DeferredLock

from gateway.fs.interfaces import FileAttributes
from gateway.fs.paths import Path
from gateway.fs.staging import StagedFile


@define(eq=False)
class LocalMeta:
    """What the client set on a file that is not (yet) in the grid."""

    mode: int | None = None
    mtime: float | None = None
    atime: float | None = None
    ctime: float = 0.0


@frozen
class Clone:
    """Contents that are exactly an immutable grid file's: a server-side copy, or a file
    opened for writing and not written yet. Its bytes are read from the grid; the first
    change copies them into the staged file (and the clone is gone)."""

    cap: str = field(repr=False)  # a read capability: a secret
    size: int


@define(eq=False)
class WriteState:
    """A path open for writing by one or more handles."""

    path: Path
    meta: LocalMeta
    staged: StagedFile | None = None
    handles: int = 0
    dirty: bool = False
    abandoned: bool = False
    #: Fires once the staged file holds the starting contents (a reopened file's bytes).
    ready: Deferred[None] = field(factory=Deferred)
    failure: BaseException | None = None
    generation: int = 0
    #: Whether any handle was closed by its client (rather than lost with its session).
    closed_by_client: bool = False
    #: Set while the last handle's CLOSE syncs and publishes the file: an OPEN of the path
    #: waits for it, then finds the file pending.
    closing: Deferred[None] | None = None
    #: The contents are a grid file's, not the (empty) staged file's.
    clone: Clone | None = None
    #: Held while a clone's bytes are copied into the staged file.
    copying: DeferredLock = field(factory=DeferredLock)

    @property
    def size(self) -> int:
        """The file's size now."""
        if self.clone is not None:
            return self.clone.size
        return self.staged.size if self.staged is not None else 0

    def attributes(self, now: float) -> FileAttributes:
        """What stat says about the file while it is open."""
        size = self.size
        mtime = self.meta.mtime if self.meta.mtime is not None else now
        return FileAttributes(
            kind="file",
            size=size,
            mode=self.meta.mode if self.meta.mode is not None else 0o644,
            mtime=mtime,
            atime=mtime,
            ctime=self.meta.ctime or now,
        )


@define(eq=False)
class Pending:
    """A closed file whose upload is journaled but not yet linked into the grid."""

    path: Path
    job_id: str
    staged: StagedFile
    meta: LocalMeta
    generation: int
    abandoned: bool = False
    #: Held while the upload links the file and while a rename/remove changes the pending entry.
    lock: DeferredLock = field(factory=DeferredLock)
    #: The file is a grid file's copy: linking it uploads nothing.
    clone: Clone | None = None

    @property
    def size(self) -> int:
        """The file's size."""
        return self.clone.size if self.clone is not None else self.staged.size

    def attributes(self) -> FileAttributes:
        """What stat says about the file while its upload is pending."""
        mtime = self.meta.mtime if self.meta.mtime is not None else self.meta.ctime
        return FileAttributes(
            kind="file",
            size=self.size,
            mode=self.meta.mode if self.meta.mode is not None else 0o644,
            mtime=mtime,
            atime=mtime,
            ctime=self.meta.ctime,
        )


class Overlay:
    """Open-for-write and pending files of one root, by path."""

    def __init__(self) -> None:
        self.writing: dict[Path, WriteState] = {}
        self.pending: dict[Path, Pending] = {}
        self.by_job: dict[str, Pending] = {}
        self._generation = 0
        #: The newest generation linked into the grid per path (an older upload never wins).
        self.linked: dict[Path, int] = {}

    def next_generation(self) -> int:
        """A number ordering the versions of files as they were closed."""
        self._generation += 1
        return self._generation

    def local(self, path: Path) -> WriteState | Pending | None:
        """The local state of a path, writing first."""
        return self.writing.get(path) or self.pending.get(path)

    def children(self, directory: Path) -> Iterator[tuple[str, WriteState | Pending]]:
        """Local files directly inside ``directory``."""
        depth = len(directory)
        for table in (self.pending, self.writing):
            for path, state in table.items():
                if len(path) == depth + 1 and path[:depth] == directory:
                    yield path[-1], state

    def has_under(self, directory: Path) -> bool:
        """Whether any local file lies inside ``directory`` (at any depth)."""
        depth = len(directory)
        return any(
            len(path) > depth and path[:depth] == directory
            for table in (self.pending, self.writing)
            for path in table
        )

    def move(self, old: Path, new: Path) -> None:
        """Re-target every local file at or under ``old`` to the same place under ``new``."""
        depth = len(old)

        def moved(path: Path) -> Path | None:
            if path[:depth] == old:
                return new + path[depth:]
            return None

        _move_keys(self.writing, moved)
        _move_keys(self.pending, moved)
        for path in [p for p in self.linked if p[: len(new)] == new]:
            del self.linked[path]  # whatever was at the target is replaced
        for path in list(self.linked):
            target = moved(path)
            if target is not None:
                self.linked[target] = self.linked.pop(path)


StateT = TypeVar("StateT", WriteState, Pending)


def _move_keys(table: dict[Path, StateT], moved: Callable[[Path], Path | None]) -> None:
    for path in list(table):
        target = moved(path)
        if target is not None:
            state = table.pop(path)
            state.path = target
            table[target] = state
