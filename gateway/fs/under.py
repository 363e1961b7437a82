"""The version a file was opened over while it was waiting for the grid, read where it is.

A second OPEN of a file whose last CLOSE is still uploading must not copy that version:
for a disk image copied in and started at once, the copy was the whole image (0.4 s and
as many bytes of staging per GiB). So a version with changes of
:data:`~gateway.fs.reopening.LAZY_OPEN_BYTES` or more is not copied: the new open file
starts empty (its own changes only) and reads what it did not change through
:class:`Under`, a descriptor of its own on that version's staged file and what that
version lay over. When the version's upload has stored it, the open file lies over
what was stored instead (``LocalFile.over_stored``), and the descriptor is closed. If
the open file must stand on its own before that (its CLOSE, or an fsync of a version
not stored as one), the changes it did not overwrite are copied then
(``Writers.copy_under``): the copy an OPEN made before, made only when needed.

The descriptor keeps the bytes readable when that version's staged file is removed
(its upload finished); reads in flight count, and it is closed when the last one ends.
"""

from __future__ import annotations

import os
import weakref

from gateway.fs.sparse import Base, Ranges


class Under:
    """A pending version's contents as a file opened over it reads them (see module)."""

    def __init__(self, fd: int, base: Base | None, held: Ranges, limit: int, size: int) -> None:
        """``fd``: a descriptor of the version's staged file, now this object's; ``held``: the
        ranges that file holds (everything, with no ``base``); ``limit``: the base's bytes
        show below it; ``size``: the version's size."""
        self.fd = fd
        self.base = base
        self.held = held
        self.limit = limit
        self.size = size
        self._reads = 0
        self._dropped = False
        # An open file that forgot to drop it still gives its descriptor back, when collected.
        self._closer = weakref.finalize(self, os.close, fd)

    @property
    def closed(self) -> bool:
        """Whether its descriptor was closed."""
        return not self._closer.alive

    def read_staged(self, offset: int, length: int) -> bytes:
        """Bytes of the version's staged file (holes read as zeros), clamped at its size."""
        if offset >= self.size:
            return b""
        return os.pread(self.fd, min(length, self.size - offset), offset)

    def reading(self) -> None:
        """A read through it starts: the descriptor stays open until it ends."""
        self._reads += 1

    def read_done(self) -> None:
        """A read through it ended."""
        self._reads -= 1
        if self._dropped and not self._reads:
            self._closer()

    def drop(self) -> None:
        """Nobody lies over it any more: close the descriptor once no read uses it."""
        self._dropped = True
        if not self._reads:
            self._closer()
