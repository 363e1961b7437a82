"""Local copies of files just uploaded, so that reading back what was written stays local.

A client often reads what it has just written: ``tar`` or ``diff -r`` right after ``cp
-r``, a build reading its own outputs, ``rsync`` checking what it sent. Once a new file is
in the grid its staged copy used to be deleted, and each of those reads fetched and decoded
shares from servers busy with the uploads of everything else just written. So the staged
file of a new file (one written whole, not changes over a grid version) is kept after its
upload, under its capability, and a read of that capability reads it instead. An immutable
capability names exactly one content, so a kept copy is never stale.

Kept copies are bounded (least recently read first out): by ``limit`` bytes, and by the
staging quota, which they share with files being written and waiting for upload. Those
always win: when staging needs room, copies are dropped first
(:attr:`gateway.fs.staging.StagingArea.make_room`). They are plaintext on the local disk,
as staged files are (0600, in the node's staging directory), and are not kept across a
restart (the staging area's leftovers are removed at start).

A file that was staged in memory (:mod:`gateway.fs.staging`) is kept as bytes in memory,
and those copies have a bound of their own, :data:`MEMORY_BYTES`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from attrs import frozen

from gateway.fs.handles import MemoryReader, StagedReader
from gateway.fs.staging import StagedFile, StagingArea

#: Most bytes the copies kept in memory hold together.
MEMORY_BYTES = 16 << 20


@frozen
class _Copy:
    path: Path
    size: int  # the bytes the staging quota counts for it (none for a copy in memory)
    area: StagingArea
    data: bytes | None = None  # a copy in memory

    def drop(self) -> None:
        if self.data is None:
            self.path.unlink(missing_ok=True)
            self.area.release(self.size)


class KeptCopies:
    """The kept copies of one gateway, by immutable capability string (closed files: a
    copy costs no descriptor until it is read)."""

    def __init__(self, limit: int, memory_limit: int = MEMORY_BYTES) -> None:
        """``limit``: bytes of copies on disk; ``memory_limit``: bytes of copies in memory."""
        self.limit = limit
        self.used = 0
        self.memory_limit = memory_limit
        self.memory_used = 0
        self._copies: OrderedDict[str, _Copy] = OrderedDict()

    def keep(self, cap: str, staged: StagedFile) -> None:
        """Keep ``staged`` (the whole contents ``cap`` names) instead of deleting it; it is
        deleted at once when it does not fit."""
        if staged.discarded:
            return
        size = staged.written.covered
        if not self.limit or size > self.limit or cap in self._copies:
            staged.discard()
            return
        if staged.in_memory:
            if staged.size <= self.memory_limit:
                data = staged.read(0, staged.size)
                self._copies[cap] = _Copy(staged.path, 0, staged.area, data)
                self.memory_used += len(data)
                self._drop_oldest(self.memory_used - self.memory_limit, memory=True)
            staged.discard()
            return
        staged.close_kept()
        self._copies[cap] = _Copy(staged.path, size, staged.area)
        self.used += size
        self.make_room(self.used - self.limit)

    def reader(self, cap: str) -> StagedReader | MemoryReader | None:
        """A reader of the kept copy of ``cap`` (its own descriptor: dropping the copy does
        not cut it short), or None."""
        copy = self._copies.get(cap)
        if copy is None:
            return None
        if copy.data is not None:
            self._copies.move_to_end(cap)
            return MemoryReader(copy.data)
        try:
            fd = os.open(copy.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # gone from under us (an operator cleaning staging): the grid has it
            self._forget(cap)
            return None
        self._copies.move_to_end(cap)
        return StagedReader(fd)

    def make_room(self, amount: int) -> None:
        """Drop the least recently read copies until ``amount`` bytes are free (or none is
        left)."""
        self._drop_oldest(amount, memory=False)

    def _drop_oldest(self, amount: int, memory: bool) -> None:
        """Drop the least recently read copies on disk (or in memory) until ``amount`` of
        their bytes are free (or none is left)."""
        if amount <= 0:
            return
        for cap in [c for c, copy in self._copies.items() if (copy.data is not None) == memory]:
            if amount <= 0:
                break
            amount -= self._forget(cap)

    def clear(self) -> None:
        """Drop every copy."""
        while self._copies:
            self._forget(next(iter(self._copies)))

    def _forget(self, cap: str) -> int:
        copy = self._copies.pop(cap)
        copy.drop()
        if copy.data is not None:
            self.memory_used -= len(copy.data)
            return len(copy.data)
        self.used -= copy.size
        return copy.size
