"""How many staged files keep a descriptor open: at most a share of the process's limit.

Every file a client writes is staged (:mod:`gateway.fs.staging`) until its upload is
done, and a copy of a tree makes new files faster than the grid takes them while the
client keeps the gateway busy (uploads wait for their turn, :mod:`gateway.intents.turns`).
Each staged file held a descriptor until its upload ended: under Linux's usual limit of
1,024 descriptors per process, the 1,008th new file of a copy failed ("open failed"), and
the embedded storage, out of descriptors too, could no longer open a directory's share.

So the staged files keep at most :attr:`OpenFiles.most` descriptors open (by default a
quarter of the process's limit, :func:`default_most`); past that, the file opened longest
ago that nobody is using (no thread call under way, no reader following it in memory)
gives its descriptor back (:meth:`gateway.fs.staging.StagedFile.park`). A file on the disk
is opened again by its path when next used. A file in memory keeps the bytes written
(:func:`save_ranges`: at most ``MEMORY_FILE_BYTES`` each, and counted in ``memory_bytes``
as before) and goes back into a new memfd (:func:`restore_ranges`). Giving back and opening
again cost a system call or two each, and only once that many files are staged at once.

The node also raises its soft limit to the hard one when it starts (:func:`raise_limit`),
as servers that hold many files do: Debian's hard limit is usually far above the soft one.
"""

from __future__ import annotations

import os
import resource
from typing import Protocol

from gateway.fs.sparse import Ranges
from storage.redolog import pwrite_all

#: The share of the process's descriptor limit that staged files may hold open (1/4).
SHARE = 4

#: Descriptors staged files may hold open whatever the limit.
AT_LEAST = 16

#: The soft limit the node raises itself to at most (the hard limit may be "unlimited").
RAISE_TO = 1 << 16


class Parkable(Protocol):
    """A staged file, as :class:`OpenFiles` sees it."""

    def park(self) -> bool:
        """Give the descriptor back unless it is in use; whether it did."""


def default_most() -> int:
    """How many descriptors staged files may hold open: :data:`SHARE` of the soft limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = RAISE_TO
    return max(AT_LEAST, soft // SHARE)


def raise_limit() -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard one (at most :data:`RAISE_TO`); the soft
    limit before and after. Never lowers it, never fails: a refusal leaves it as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = RAISE_TO if hard == resource.RLIM_INFINITY else min(hard, RAISE_TO)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, wanted
    return soft, soft


class OpenFiles:
    """The staged files with a descriptor open, oldest first, and at most how many."""

    def __init__(self, most: int | None = None) -> None:
        self.most = default_most() if most is None else most
        self._open: dict[Parkable, None] = {}
        #: Descriptors given back so far.
        self.parked = 0

    def __len__(self) -> int:
        return len(self._open)

    def opened(self, staged: Parkable) -> None:
        """``staged`` opened a descriptor: past the most, older ones give theirs back."""
        self._open.pop(staged, None)
        self._open[staged] = None
        if len(self._open) > self.most:
            self._park_oldest()

    def closed(self, staged: Parkable) -> None:
        """``staged`` closed its descriptor."""
        self._open.pop(staged, None)

    def _park_oldest(self) -> None:
        # Each file is looked at once: one in use goes to the end, for the next time.
        for staged in list(self._open)[: len(self._open) - 1]:
            if len(self._open) <= self.most:
                return
            if staged.park():
                self.parked += 1
            elif staged in self._open:
                del self._open[staged]
                self._open[staged] = None


def save_ranges(fd: int, written: Ranges) -> list[tuple[int, bytes]]:
    """The bytes of ``written`` in the file ``fd``, by offset."""
    return [(start, os.pread(fd, end - start, start)) for start, end in written]


def restore_ranges(saved: list[tuple[int, bytes]], size: int) -> int:
    """A new memfd of ``size`` bytes holding ``saved`` (from :func:`save_ranges`)."""
    fd = os.memfd_create("gateway-staged", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        for offset, data in saved:
            pwrite_all(fd, data, offset)
    except BaseException:
        os.close(fd)
        raise
    return fd
