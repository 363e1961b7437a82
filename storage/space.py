"""Space accounting: free bytes on a filesystem, and what is left for shares after the reserve."""

from __future__ import annotations

import os
from pathlib import Path

#: What a server reports as its space when its store cannot tell (as Tahoe-LAFS does).
UNKNOWN_SPACE = 2**64


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged user may still write on the filesystem holding ``path``."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def available_space(free: int | None, reserved: int, committed: int) -> int:
    """Bytes new shares may take: free space less the reserve and space promised to uploads.

    ``free`` None means the store is unbounded. Never negative.
    """
    if free is None:
        return UNKNOWN_SPACE
    return max(0, free - reserved - committed)
