"""``gateway stop`` with uploads under way: finished within the grace period, or left journaled.

The storage node is SIGSTOPped after the files are written and before they are
closed, so their uploads hang; four files of 1 MiB each.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from pathlib import Path

from gateway.uploads.journal import UploadJournal
from tests.durability.cluster import (
    Grid,
    MiB,
    Session,
    grid_gateway,
    read_all,
    restart,
    stop_gateway,
    upload_queue,
    wait_drained,
)
from tests.nodes import NodeReaper
from tests.sftp.gateway_node import RunningGateway

FILES = 4


def _write_then_freeze(gw: RunningGateway, grid: Grid) -> dict[str, bytes]:
    """Write the files, freeze the grid, close them (acknowledged; uploads hang)."""
    rng = random.Random(5)
    contents = {f"/g{i}.bin": rng.randbytes(MiB + i) for i in range(FILES)}
    with Session(gw) as sftp:
        handles = [sftp.open(name, "wb") for name in contents]
        for f, data in zip(handles, contents.values(), strict=True):
            f.write(data)
        grid.freeze(0)
        for f in handles:
            f.close()
    return contents


def _records(gw: RunningGateway) -> int:
    """Uploads the stopped gateway's journal still holds."""
    return len(list(UploadJournal(gw.node_dir / "state" / "uploads").load()))


def _intact(gw: RunningGateway, contents: dict[str, bytes]) -> int:
    with Session(gw) as sftp:
        return sum(read_all(sftp, name) == data for name, data in contents.items())


def test_stop_leaves_unfinished_uploads_journaled_and_start_resumes_them(
    tmp_path: Path, reaper: NodeReaper, make_grid: type[Grid]
) -> None:
    """With the grid frozen, stop returns after the 2 s grace period with every upload still
    journaled; after SIGCONT the next start uploads them all."""
    grid = make_grid(1)
    gw = grid_gateway(tmp_path, reaper, grid, "1/1/1", settings={"uploads": {"grace_period": "2s"}})
    contents = _write_then_freeze(gw, grid)
    assert len(upload_queue(gw)) == FILES
    started = time.monotonic()
    stop_gateway(gw)
    took = time.monotonic() - started
    journaled = _records(gw)
    print(f"stop took {took:.1f}s (grace 2s); {journaled}/{FILES} uploads left journaled")
    assert journaled == FILES
    assert took < 30
    grid.thaw(0)
    gw = restart(gw)
    wait_drained(gw, timeout=60)
    stop_gateway(gw)
    shutil.rmtree(gw.node_dir / "staging")
    gw = restart(gw)
    intact = _intact(gw, contents)
    print(f"after the next start: {intact}/{FILES} files in the grid")
    assert intact == FILES
    stop_gateway(gw)


def test_stop_finishes_uploads_within_the_grace_period(
    tmp_path: Path, reaper: NodeReaper, make_grid: type[Grid]
) -> None:
    """The grid is frozen when stop is asked and continued 2 s later: stop waits (grace 60 s),
    the uploads finish, no record is left, and the files are in the grid."""
    grid = make_grid(1)
    gw = grid_gateway(
        tmp_path, reaper, grid, "1/1/1", settings={"uploads": {"grace_period": "60s"}}
    )
    contents = _write_then_freeze(gw, grid)
    thaw = threading.Timer(2.0, grid.thaw, [0])
    thaw.start()
    started = time.monotonic()
    stop_gateway(gw)
    took = time.monotonic() - started
    thaw.join()
    left = _records(gw)
    print(f"stop took {took:.1f}s; {FILES - left}/{FILES} uploads finished within the grace")
    assert left == 0
    shutil.rmtree(gw.node_dir / "staging")
    gw = restart(gw)
    intact = _intact(gw, contents)
    print(f"{intact}/{FILES} files in the grid")
    assert intact == FILES
    stop_gateway(gw)
