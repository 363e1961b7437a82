"""A new file's attributes are the same before and after its upload, after a restart, and
from a second gateway: 30 fresh files, polled through their uploads (real processes)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from tests.durability.cluster import (
    Grid,
    Session,
    grid_gateway,
    restart,
    stop_gateway,
    upload_queue,
    wait_drained,
)
from tests.nodes import NodeReaper

FILES = 30


def _attributes(sftp: object, names: list[str]) -> dict[str, tuple[int, int, int, int]]:
    found = {}
    for name in names:
        a = sftp.lstat(f"/fresh/{name}")  # type: ignore[attr-defined]
        found[name] = (a.st_size, a.st_mtime, a.st_mode, a.st_atime)
    return found


def test_attributes_of_fresh_files_never_change_by_themselves(
    tmp_path: Path, reaper: NodeReaper, make_grid: Callable[[int], Grid]
) -> None:
    """size, mtime, mode (and atime) read right after CLOSE are read while the uploads land,
    after them, after a restart and through another gateway on the same root."""
    grid = make_grid(3)
    first = grid_gateway(tmp_path, reaper, grid, "2/3/3", name="first")
    names = [f"file{i:02d}.bin" for i in range(FILES)]
    with Session(first) as sftp:
        sftp.mkdir("/fresh")
        for name in names:
            with sftp.open(f"/fresh/{name}", "wb") as f:
                f.write(os.urandom(10_000 + 997 * len(name)))
        before = _attributes(sftp, names)
        polls = 0
        deadline = time.monotonic() + 120
        while upload_queue(first) and time.monotonic() < deadline:
            assert _attributes(sftp, names) == before
            polls += 1
        assert polls > 0, "the uploads were over before the first poll"
    wait_drained(first)
    with Session(first) as sftp:
        assert _attributes(sftp, names) == before
    second = grid_gateway(tmp_path, reaper, grid, "2/3/3", name="second", root_from=first.node_dir)
    with Session(second) as sftp:
        assert _attributes(sftp, names) == before
    stop_gateway(first)
    first = restart(first)
    with Session(first) as sftp:
        assert _attributes(sftp, names) == before
    stop_gateway(first)
    stop_gateway(second)
