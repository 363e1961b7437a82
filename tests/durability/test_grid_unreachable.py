"""The grid unreachable, and the gateway's own disk full.

Grid: two storage node processes, shares 1/2/2 (either server alone holds a
readable copy, but an upload needs both). Staging quota 4 MiB, files 1 MiB.
The full disk is a 3 MiB tmpfs mounted on the gateway's staging directory
(this sandbox lets root mount tmpfs; skipped where it cannot).
"""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.durability.cluster import (
    Grid,
    MiB,
    Session,
    grid_gateway,
    put_bytes,
    read_all,
    restart,
    stop_gateway,
    upload_queue,
    wait_drained,
)
from tests.nodes import NodeReaper
from tests.sftp.gateway_node import Int64, RawSFTP, start_gateway, status_text


def test_writes_go_to_staging_until_the_quota_then_the_queue_drains(
    tmp_path: Path, reaper: NodeReaper, make_grid: type[Grid]
) -> None:
    """Both servers killed: writes are accepted into staging up to the quota, then refused with
    FX_FAILURE saying the staging quota is full; an uploaded file reads again once one server
    holding it is back; when both are back the queue drains within seconds, unprompted."""
    grid = make_grid(2)
    gw = grid_gateway(
        tmp_path, reaper, grid, "1/2/2", settings={"uploads": {"staging_quota": "4MiB"}}
    )
    rng = random.Random(4)
    old = rng.randbytes(MiB)
    with Session(gw) as sftp:
        put_bytes(sftp, "/old.bin", old)
        wait_drained(gw)
        sftp.listdir("/")
    grid.kill(0)
    grid.kill(1)
    accepted: dict[str, bytes] = {}
    refusal = ""
    with Session(gw) as sftp:
        for i in range(6):
            data = rng.randbytes(MiB)
            try:
                put_bytes(sftp, f"/new{i}.bin", data, pipelined=False)
            except OSError as e:
                refusal = str(e)
                break
            accepted[f"/new{i}.bin"] = data
        old_unreadable = False
        try:
            read_all(sftp, "/old.bin")
        except OSError:
            old_unreadable = True
    raw_transport, _ = gw.sftp()
    try:
        raw = RawSFTP(raw_transport)
        handle = raw.open("/refused.bin", 0x1A)  # WRITE|CREAT|TRUNC
        # The largest WRITE the gateway announces (limits@openssh.com); a longer packet
        # ends the session, as with OpenSSH's sftp-server.
        reply = raw.call(paramiko.sftp.CMD_WRITE, handle, Int64(0), b"x" * (255 * 1024))
        status = status_text(reply)
    finally:
        raw_transport.close()
    print(
        f"grid down: {len(accepted)} files (of 1 MiB) accepted into a 4 MiB staging quota, "
        f"then refused: {refusal!r}; raw status: {status!r}"
    )
    assert len(accepted) == 4
    assert "staging quota" in refusal and "full" in refusal
    assert status.startswith("4 ") and "staging quota" in status  # FX_FAILURE
    assert old_unreadable
    grid.restart(0)
    with Session(gw) as sftp:
        ok = read_all(sftp, "/old.bin") == old
    print(f"one server back: uploaded file readable {int(ok)}/1; queue {len(upload_queue(gw))}")
    # The refused file's CLOSE was answered too (as sftp-server does), so its bytes up to the
    # refused WRITE may be queued as well.
    assert ok and len(accepted) <= len(upload_queue(gw)) <= len(accepted) + 1
    grid.restart(1)
    started = time.monotonic()
    wait_drained(gw, timeout=60)
    took = time.monotonic() - started
    with Session(gw) as sftp:
        intact = sum(read_all(sftp, n) == d for n, d in accepted.items())
    print(f"both back: queue drained in {took:.1f}s; {intact}/{len(accepted)} files intact")
    assert intact == len(accepted)
    assert took < 30
    stop_gateway(gw)


@pytest.fixture
def small_disk() -> Iterator[list[Path]]:
    """Mount points to unmount after the test (a tmpfs is mounted on each path appended)."""
    mounted: list[Path] = []
    yield mounted
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_full_gateway_disk_fails_the_write_and_damages_nothing(
    tmp_path: Path, reaper: NodeReaper, small_disk: list[Path]
) -> None:
    """Staging on a 3 MiB disk: a 4 MiB write fails with 'disk is full'; the files already
    saved, the journal and the node are unharmed (restart, every earlier file intact)."""

    def mount(node_dir: Path) -> None:
        point = node_dir / "staging"
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(point)],
            capture_output=True,
        )
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        small_disk.append(point)

    gw = start_gateway(tmp_path, reaper, configure=mount)
    rng = random.Random(6)
    earlier = {f"/e{i}.bin": rng.randbytes(300_000) for i in range(3)}
    with Session(gw) as sftp:
        for name, data in earlier.items():
            put_bytes(sftp, name, data)
        wait_drained(gw)
        error = ""
        try:
            put_bytes(sftp, "/huge.bin", rng.randbytes(4 * MiB), pipelined=False)
        except OSError as e:
            error = str(e)
    stop_gateway(gw)
    gw = restart(gw)
    with Session(gw) as sftp:
        intact = sum(read_all(sftp, n) == d for n, d in earlier.items())
    print(f"disk full: write refused with {error!r}; {intact}/{len(earlier)} earlier intact")
    assert "disk is full" in error
    assert intact == len(earlier)
    stop_gateway(gw)
