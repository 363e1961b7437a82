"""What a benchmark run may leave behind: mounts, loop devices and processes naming its dir."""

from __future__ import annotations

import os
from pathlib import Path


def leftovers(tmp_path: Path) -> list[str]:
    """Mounts, loop devices and processes that still name a path under ``tmp_path``."""
    found = [
        line for line in Path("/proc/mounts").read_text().splitlines() if str(tmp_path) in line
    ]
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if str(tmp_path) in backing.read_text():
                found.append(f"{backing.parent.parent.name}: {backing.read_text().strip()}")
        except OSError:
            pass  # detached meanwhile
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        if str(tmp_path) in argv and int(cmdline.parent.name) != os.getpid():
            found.append(f"pid {cmdline.parent.name}: {argv}")
    return found
