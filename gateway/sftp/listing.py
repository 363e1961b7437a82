"""Directory listings as READDIR sends them: each entry packed once, at OPENDIR.

An entry of an FXP_NAME reply is its name, its ``ls -l`` line (formatted as OpenSSH's
sftp-server does) and its attributes. Conch builds each reply entry by entry (an attribute
dict per entry, packed field by field, and the reply grown by concatenation); a listing of
1,000 entries spent more time there than reading the directory. Here each entry is packed
into its wire form when the directory is opened, and READDIR joins a batch of them
(:meth:`DirectoryListing.batch`).
"""

from __future__ import annotations

import functools
import math
import stat as stat_module
import struct
import time
from collections.abc import Callable, Iterator

from attrs import define, field
from twisted.conch.ssh.filetransfer import (
    FILEXFER_ATTR_ACMODTIME,
    FILEXFER_ATTR_OWNERGROUP,
    FILEXFER_ATTR_PERMISSIONS,
    FILEXFER_ATTR_SIZE,
)

from gateway.fs.interfaces import FileAttributes

#: Entries per READDIR reply (Conch's own batch; OpenSSH's sftp-server sends 100).
BATCH = 250

_LENGTH = struct.Struct("!L")
_ATTRIBUTES = struct.Struct("!LQLLLLL")
_FLAGS = (
    FILEXFER_ATTR_SIZE
    | FILEXFER_ATTR_OWNERGROUP
    | FILEXFER_ATTR_PERMISSIONS
    | FILEXFER_ATTR_ACMODTIME
)
_UINT32 = 0xFFFFFFFF


def _line(name: str, mode: int, nlink: int, size: int, mtime: float, user: str, now: float) -> str:
    """An ``ls -l`` line for READDIR, formatted as OpenSSH's sftp-server does."""
    recent = now - 182 * 86400 < mtime <= now + 3600
    date = _listing_date(math.floor(mtime) // 60, recent)
    return f"{_line_start(mode, nlink, user)}{size:8d} {date} {name}"


@functools.lru_cache(maxsize=256)
def _line_start(mode: int, nlink: int, user: str) -> str:
    """The columns before the size: most entries of a listing share them."""
    owner = user[:8]
    return f"{stat_module.filemode(mode)} {nlink:3d} {owner:<8} {owner:<8} "


@functools.lru_cache(maxsize=4096)
def _listing_date(minute: int, recent: bool) -> str:
    """The date column of an ``ls -l`` line, for a time in this minute (its finest unit):
    the files of a directory were mostly changed in the same few minutes."""
    return time.strftime("%b %d %H:%M" if recent else "%b %d  %Y", time.localtime(minute * 60))


def packed_entry(
    name: str, attrs: FileAttributes, user: str, uid: int, gid: int, now: float
) -> bytes:
    """One entry of an FXP_NAME reply: name, ``ls -l`` line, and the attributes STAT
    answers (times as uint32, as OpenSSH's sftp-server truncates them)."""
    encoded = name.encode("utf-8")
    mode = attrs.st_mode
    line = _line(name, mode, attrs.nlink, attrs.size, attrs.mtime, user, now).encode("utf-8")
    return b"".join(
        (
            _LENGTH.pack(len(encoded)),
            encoded,
            _LENGTH.pack(len(line)),
            line,
            _ATTRIBUTES.pack(
                _FLAGS,
                attrs.size,
                uid,
                gid,
                mode,
                int(attrs.atime) & _UINT32,
                int(attrs.mtime) & _UINT32,
            ),
        )
    )


@define(eq=False)
class DirectoryListing:
    """An open directory: its entries packed at OPENDIR, handed out by READDIR."""

    entries: list[bytes]
    on_close: Callable[[], None] = lambda: None
    _next: int = field(default=0, init=False)

    def batch(self) -> tuple[int, bytes]:
        """The next entries (their count, and their wire form); (0, b"") once all are sent."""
        start, end = self._next, min(self._next + BATCH, len(self.entries))
        self._next = end
        return end - start, b"".join(self.entries[start:end])

    def __iter__(self) -> Iterator[bytes]:
        """Conch keeps an iterator of every open directory; READDIR uses :meth:`batch`."""
        return iter(())

    def close(self) -> None:
        """CLOSE of a directory handle."""
        on_close, self.on_close = self.on_close, lambda: None
        on_close()
