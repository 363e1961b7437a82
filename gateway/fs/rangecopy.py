"""Copying ranges of one file into another at the same offsets, by the kernel where it can.

Used for the staged copy an fsync's snapshot takes (:meth:`gateway.fs.contents.Contents.copy`):
``copy_file_range`` lets the kernel copy (or share the blocks, on filesystems that can)
without the bytes passing through Python; ``pread``/``pwrite`` where the call is missing or
refused (another filesystem, an old kernel).
"""

from __future__ import annotations

import errno
import os

from gateway.fs.errors import NoSpace

#: Bytes one copy call moves at a time.
COPY_STEP = 8 << 20

_kernel_copy = hasattr(os, "copy_file_range")


def copy_ranges(
    source: int, target: int, ranges: list[tuple[int, int]], kernel: bool = True
) -> None:
    """Copy ``ranges`` of the file open as ``source`` to the same offsets of ``target``
    (``copy_file_range``: the kernel copies, or shares the blocks where the filesystem
    can; ``pread``/``pwrite`` where it cannot, or without ``kernel``: between a file and
    memory, which the call refuses). What lies past ``source``'s end stays a hole. A full
    disk raises :class:`NoSpace`."""
    step = _copy_step if kernel else _copy_by_hand
    try:
        for start, end in ranges:
            offset = start
            while offset < end:
                moved = step(source, target, offset, min(COPY_STEP, end - offset))
                if not moved:
                    break
                offset += moved
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpace("the gateway's disk is full") from None
        raise


def copy_and_close(source: int, target: int, ranges: list[tuple[int, int]]) -> None:
    """In a thread: :func:`copy_ranges` between duplicated descriptors, then close them."""
    try:
        copy_ranges(source, target, ranges)
    finally:
        os.close(source)
        os.close(target)


def _copy_step(source: int, target: int, offset: int, length: int) -> int:
    global _kernel_copy
    if _kernel_copy:
        try:
            return os.copy_file_range(source, target, length, offset, offset)
        except OSError as e:
            if e.errno == errno.ENOSYS:
                _kernel_copy = False  # no such call in this kernel: by hand from now on
            elif e.errno not in (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            # Otherwise these two files cannot (another filesystem, or one that does not
            # copy): this step by hand; other files still try the kernel.
    return _copy_by_hand(source, target, offset, length)


def _copy_by_hand(source: int, target: int, offset: int, length: int) -> int:
    data = os.pread(source, length, offset)
    view = memoryview(data)
    at = offset
    while view:
        written = os.pwrite(target, view, at)
        view = view[written:]
        at += written
    return len(data)
