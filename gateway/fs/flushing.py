"""Starting the write-back of a staged file's dirty pages (the flush-behind of
:mod:`gateway.fs.staging`), in a thread."""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Callable
from typing import cast

#: ``SYNC_FILE_RANGE_WRITE`` from ``<fcntl.h>``.
SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range``, where there is one (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


_sync_file_range = _load_sync_file_range()
_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def start_flush(fd: int, offset: int, length: int) -> None:
    """Start writing a range of a file's dirty pages to the disk (blocking: call in a thread).

    ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` queues the writes and returns; where it is
    missing or fails, ``fdatasync`` writes them and waits, and its error (which a later fsync
    of the descriptor may not report again) is the one raised. Neither makes anything
    durable: that is what the final fsync is for.
    """
    global _sync_file_range
    function = _sync_file_range
    if function is not None:
        if function(fd, offset, length, SYNC_FILE_RANGE_WRITE) == 0:
            return
        if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP):
            _sync_file_range = None  # not supported here: the fallback from now on
    _fdatasync(fd)
