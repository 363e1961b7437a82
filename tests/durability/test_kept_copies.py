"""Reading back what was just written stays local: a file uploaded by this gateway reads
from its kept copy, even with every storage server down, while it fits in
``[uploads] keep_uploaded``; past that the oldest copies go, and those files read from the
grid again.

Grid: two storage node processes, shares 1/2/2; ``keep_uploaded`` 3 MiB, files 1 MiB.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from gateway.fs.volume import DIRECTORY_CACHE_SECONDS
from tests.durability.cluster import (
    Grid,
    MiB,
    Session,
    grid_gateway,
    put_bytes,
    read_all,
    stop_gateway,
    wait_drained,
)
from tests.nodes import NodeReaper


def test_files_just_uploaded_read_back_with_the_grid_down(
    tmp_path: Path, reaper: NodeReaper, make_grid: type[Grid]
) -> None:
    """Five files written and uploaded; both servers killed: three of them (3 MiB, the
    limit; the last uploaded, in whatever order the uploads finished) still read back byte
    for byte, also once the directory's listing is older than its cache; the other two
    fail; with the servers back, all five read."""
    grid = make_grid(2)
    gw = grid_gateway(
        tmp_path, reaper, grid, "1/2/2", settings={"uploads": {"keep_uploaded": "3MiB"}}
    )
    rng = random.Random(7)
    written = {f"/f{i}.bin": rng.randbytes(MiB) for i in range(5)}
    with Session(gw) as sftp:
        for name, data in written.items():
            put_bytes(sftp, name, data)
        wait_drained(gw)
        sftp.listdir("/")
    grid.kill(0)
    grid.kill(1)
    # Past the directory listing's cache: every lookup now asks the dead grid, and must
    # fall back to the listing this gateway last read (a STAT, an OPEN for reading).
    time.sleep(DIRECTORY_CACHE_SECONDS + 0.2)
    readable: list[str] = []
    with Session(gw) as sftp:
        for name, data in written.items():
            try:
                if read_all(sftp, name) == data:
                    readable.append(name)
            except OSError:
                pass
    print(f"grid down: {readable} read back")
    assert len(readable) == 3
    grid.restart(0)
    with Session(gw) as sftp:
        assert all(read_all(sftp, name) == data for name, data in written.items())
    stop_gateway(gw)
    assert list((gw.node_dir / "staging").glob("*.staged")) == []
