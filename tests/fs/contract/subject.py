"""What the contract needs from an implementation, and the shorthands its tests use.

A :class:`Subject` is one account's filesystem plus three hooks: run a call to its end,
let time pass, and let every upload land. An implementation subclasses it and provides
those (see :mod:`tests.fs.contract.grid_subject`); the tests use only the hooks and
the interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Coroutine
from typing import Any, TypeVar

from gateway.fs.errors import NoSuchFile
from gateway.fs.interfaces import (
    FileAttributes,
    IFilesystem,
    IOpenFile,
    OpenFlags,
    SetAttributes,
)

T = TypeVar("T")

CREATE = OpenFlags(write=True, create=True, truncate=True)
"""What ``open(path, "wb")`` sends."""
READ = OpenFlags(read=True)
WRITE = OpenFlags(write=True)
READ_WRITE = OpenFlags(read=True, write=True)
APPEND = OpenFlags(write=True, append=True)
EXCLUSIVE = OpenFlags(write=True, create=True, exclusive=True)
NO_ATTRS = SetAttributes()


def flag_names(value: object) -> str | None:
    """A test id for OpenFlags: the flags set, joined by '+' (None: pytest's own id)."""
    if not isinstance(value, OpenFlags):
        return None
    names = ("read", "write", "append", "create", "truncate", "exclusive")
    return "+".join(n for n in names if getattr(value, n)) or "none"


PENDING = "pending"
"""Closed, acknowledged, its upload not yet started."""
UPLOADING = "uploading"
"""Closed, its upload under way: a moment (10 ms) has passed, not enough for it to land."""
UPLOADED = "uploaded"
"""Closed, and its upload has landed."""


class Subject(ABC):
    """One account's filesystem under test, and how to drive it."""

    @property
    @abstractmethod
    def fs(self) -> IFilesystem:
        """The session the tests act through."""

    @abstractmethod
    def session(self, read_only: bool = False) -> IFilesystem:
        """Another session of the same account (sharing its files still being written or
        uploaded), read-only if asked: what a second connection or a read-only account on
        the same root gets."""

    @abstractmethod
    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run one call to its end (letting time pass if it waits for time) and return
        its result, or raise its error."""

    @abstractmethod
    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on the filesystem's clock."""

    @abstractmethod
    def settle(self) -> None:
        """Let every pending upload land (minutes pass)."""

    @abstractmethod
    def now(self) -> float:
        """The filesystem clock's time."""

    # -- shorthands ---------------------------------------------------------------------

    def reach(self, when: str) -> None:
        """Leave closed files pending (:data:`PENDING`), let their uploads start
        (:data:`UPLOADING`) or let them land (:data:`UPLOADED`)."""
        assert when in (PENDING, UPLOADING, UPLOADED)
        if when == UPLOADING:
            self.advance(0.01)
        elif when == UPLOADED:
            self.settle()

    def open(
        self, path: str, flags: OpenFlags, attrs: SetAttributes = NO_ATTRS,
        fs: IFilesystem | None = None,
    ) -> IOpenFile:  # fmt: skip
        """OPEN."""
        return self.run((fs or self.fs).open(path, flags, attrs))

    def write(self, path: str, data: bytes, flags: OpenFlags = CREATE) -> None:
        """OPEN, one WRITE at 0, CLOSE."""
        handle = self.open(path, flags)
        self.run(handle.write(0, data))
        self.run(handle.close())

    def read(self, path: str, fs: IFilesystem | None = None) -> bytes:
        """A whole file's bytes through a new read handle."""
        handle = self.open(path, READ, fs=fs)
        try:
            return self.read_handle(handle)
        finally:
            self.run(handle.close())

    def read_handle(self, handle: IOpenFile, offset: int = 0) -> bytes:
        """Everything from ``offset`` to the end through an open handle (each read also
        asked of ``read_ready``, which must answer the same bytes or None)."""
        chunks = []
        while True:
            ready = handle.read_ready(offset, 1 << 20)
            chunk = self.run(handle.read(offset, 1 << 20))
            assert ready is None or ready == chunk, "read_ready and read disagree"
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            offset += len(chunk)

    def stat(self, path: str, fs: IFilesystem | None = None) -> FileAttributes:
        """STAT (following symbolic links)."""
        return self.run((fs or self.fs).stat(path))

    def lstat(self, path: str) -> FileAttributes:
        """LSTAT (not following a last symbolic link)."""
        return self.run(self.fs.stat(path, follow_symlinks=False))

    def listing(self, path: str, fs: IFilesystem | None = None) -> dict[str, FileAttributes]:
        """A directory's entries, by name (in the order listed)."""
        return dict(self.run((fs or self.fs).list(path)))

    def names(self, path: str, fs: IFilesystem | None = None) -> list[str]:
        """A directory's names, in the order listed."""
        return [name for name, _ in self.run((fs or self.fs).list(path))]

    def mkdir(self, path: str, attrs: SetAttributes = NO_ATTRS) -> None:
        """MKDIR."""
        self.run(self.fs.mkdir(path, attrs))

    def setattr(self, path: str, **changes: Any) -> None:
        """SETSTAT."""
        self.run(self.fs.setattr(path, SetAttributes(**changes)))

    def exists(self, path: str) -> bool:
        """Whether LSTAT finds anything at ``path``."""
        try:
            self.lstat(path)
        except NoSuchFile:
            return False
        return True
