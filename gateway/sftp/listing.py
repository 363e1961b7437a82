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


def _line(
    name: str, mode: int, nlink: int, size: int, mtime: float, user: str, recent: bool
) -> str:
    """An ``ls -l`` line for READDIR, formatted as OpenSSH's sftp-server does (``recent``:
    the date shows the time of day, not the year)."""
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


#: Packed entries kept (by their attributes' identity); all are dropped when there are more.
KEEP_PACKED = 8192

_packed: dict[tuple[int, str, bool], tuple[FileAttributes, str, int, int, bytes]] = {}


def packed_entry(
    name: str, attrs: FileAttributes, user: str, uid: int, gid: int, now: float
) -> bytes:
    """One entry of an FXP_NAME reply: name, ``ls -l`` line, and the attributes STAT
    answers (times as uint32, as OpenSSH's sftp-server truncates them).

    Kept with the attributes it was packed from (by identity: a listing of an unchanged
    directory gets the same ``FileAttributes``, :mod:`gateway.fs.attributes`), so a
    large directory listed again packs only its changed entries."""
    recent = now - 182 * 86400 < attrs.mtime <= now + 3600
    key = (id(attrs), name, recent)
    known = _packed.get(key)
    if known is not None and known[0] is attrs and known[1:4] == (user, uid, gid):
        return known[4]
    packed = _pack(name, attrs, user, uid, gid, recent)
    if len(_packed) >= KEEP_PACKED:
        _packed.clear()
    _packed[key] = (attrs, user, uid, gid, packed)  # (held here, so its id is not reused)
    return packed


def _pack(name: str, attrs: FileAttributes, user: str, uid: int, gid: int, recent: bool) -> bytes:
    encoded = name.encode("utf-8")
    mode = attrs.st_mode
    line = _line(name, mode, attrs.nlink, attrs.size, attrs.mtime, user, recent).encode("utf-8")
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
