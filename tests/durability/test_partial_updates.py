"""A change to a large file waits for the grid as a partial update, and says so.

With the only storage server down, a 4 KiB change to a 3 MiB file is journaled like any
CLOSE; the status JSON, the Transfers page and ``gateway uploads`` show it as 4 KiB of a
3 MiB file, the changed bytes are read back from staging while pending, and it lands once the
server is back.
"""

from __future__ import annotations

import json
import random
import urllib.request
from pathlib import Path

from tests.durability.cluster import (
    Grid,
    MiB,
    Session,
    grid_gateway,
    put_bytes,
    read_all,
    stop_gateway,
    upload_queue,
    wait_drained,
    wait_for,
)
from tests.nodes import NodeReaper, gateway


def test_a_pending_change_shows_as_bytes_changed_of_the_file(
    tmp_path: Path, reaper: NodeReaper, make_grid: type[Grid]
) -> None:
    """The queue, the Transfers page and ``gateway uploads`` say "4 KiB of 3 MiB"."""
    grid = make_grid(1)
    gw = grid_gateway(tmp_path, reaper, grid, "1/1/1")
    data = bytearray(random.Random(16).randbytes(3 * MiB))
    with Session(gw) as sftp:
        put_bytes(sftp, "/image.bin", bytes(data))
    wait_drained(gw)
    grid.kill(0)
    with Session(gw) as sftp:
        with sftp.open("/image.bin", "r+") as f:  # read+write, no TRUNC
            f.seek(MiB)
            f.write(b"c" * 4096)
        data[MiB : MiB + 4096] = b"c" * 4096
        with sftp.open("/image.bin", "r") as f:  # pending: the change is read from staging
            f.seek(MiB)
            assert f.read(4096) == b"c" * 4096
    (job,) = upload_queue(gw)
    assert (job["size"], job["changed"]) == (3 * MiB, 4096)
    with urllib.request.urlopen(gw.web_url.rstrip("/") + "/transfers.json", timeout=30) as r:
        (queued,) = json.loads(r.read())["queue"]
    assert queued["changed"] == 4096
    with urllib.request.urlopen(gw.web_url.rstrip("/") + "/transfers", timeout=30) as r:
        page = r.read().decode()
    assert "Changed" in page and "4.0 KiB" in page
    listed = gateway("uploads", gw.node_dir)
    assert listed.code == 0, listed.err
    assert "4.0 KiB of 3.0 MiB" in listed.out and "/image.bin" in listed.out
    grid.restart(0)
    retried = gateway("uploads", gw.node_dir, "--retry-now")  # (not waiting for the backoff)
    assert retried.code == 0, retried.err
    wait_drained(gw, timeout=60)
    with Session(gw) as sftp:
        assert read_all(sftp, "/image.bin") == bytes(data)
    stop_gateway(gw)


def test_a_change_with_a_server_dying_meets_happiness_or_waits(
    tmp_path: Path, reaper: NodeReaper, make_grid: type[Grid]
) -> None:
    """3/4/5, a 4 MiB file (a chunk tree): with one server killed a change is stored on the
    other four (happiness met) and every version reads with two servers down; with two
    killed it cannot be happy and waits, then lands when one is back. ``check --repair``
    then restores the changed chunk's shares on all five."""
    grid = make_grid(5)
    gw = grid_gateway(tmp_path, reaper, grid, "3/4/5")
    data = bytearray(random.Random(17).randbytes(4 * MiB))
    with Session(gw) as sftp:
        put_bytes(sftp, "/tree.bin", bytes(data))
    wait_drained(gw)
    grid.kill(4)
    with Session(gw) as sftp:
        with sftp.open("/tree.bin", "r+") as f:
            f.seek(2 * MiB + 5)
            f.write(b"one down" * 512)
    data[2 * MiB + 5 : 2 * MiB + 5 + 4096] = b"one down" * 512
    wait_drained(gw, timeout=90)
    grid.kill(3)  # two of five down: k = 3 shares of every chunk are still there
    with Session(gw) as sftp:
        assert read_all(sftp, "/tree.bin") == bytes(data)
        with sftp.open("/tree.bin", "r+") as f:
            f.seek(100)
            f.write(b"two down" * 512)
    data[100 : 100 + 4096] = b"two down" * 512
    (job,) = wait_for(
        lambda: [j for j in upload_queue(gw) if j["attempts"] >= 1], 90, "a failed attempt"
    )
    assert job["changed"] == 4096 and "4 are required" in (job["last_error"] or "")
    grid.restart(3)
    retried = gateway("uploads", gw.node_dir, "--retry-now")
    assert retried.code == 0, retried.err
    wait_drained(gw, timeout=90)
    grid.restart(4)
    repaired = gateway("check", gw.node_dir, "/tree.bin", "--repair", "--json", timeout=300)
    assert repaired.code == 0, repaired.err
    result = json.loads(repaired.out)
    assert result["deep"] and result["unrecoverable"] == 0
    again = json.loads(gateway("check", gw.node_dir, "/tree.bin", "--json").out)
    assert again["unhealthy"] == 0, again
    with Session(gw) as sftp:
        assert read_all(sftp, "/tree.bin") == bytes(data)
    stop_gateway(gw)
