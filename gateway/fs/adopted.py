"""What an upload journal record says of a file, to adopt the file again after a restart."""

from __future__ import annotations

import os
from pathlib import Path as FilePath

from gateway.fs.sparse import Base, Ranges
from gateway.uploads.journal import UploadJob


def journaled_base(job: UploadJob) -> tuple[Base | None, Ranges, int]:
    """The base version, changed ranges and limit a job's record names (a record of an
    earlier version may name a ``clone``: a base left unchanged)."""
    target = job.target
    if target.get("base"):
        base = Base(str(target["base"]), int(target["base_size"]))
        changed = Ranges((int(s), int(e)) for s, e in target.get("changed", ()))
        return base, changed, int(target["limit"])
    if target.get("clone"):
        return Base(str(target["clone"]), job.size), Ranges(), job.size
    return None, Ranges(), 0


def restore_staged(path: FilePath, data: bytes, held: list[tuple[int, int]], size: int) -> None:
    """Write a journaled file's bytes back to its staged file (0600; flushed later): ``data``
    is the ``held`` ranges' bytes one after another."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        at = 0
        for start, end in held:
            view = memoryview(data)[at : at + end - start]
            at += end - start
            offset = start
            while view:
                written = os.pwrite(fd, view, offset)
                view = view[written:]
                offset += written
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
