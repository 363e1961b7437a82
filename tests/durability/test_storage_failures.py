"""Storage servers dying and shares damaged, on a 5-server loopback grid of storage node processes.

Files are 2–6 MiB (scaled for time); each test starts its own five nodes.
"""

from __future__ import annotations

import json
import random
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
from tests.sftp.gateway_node import RunningGateway


def _close_during_upload(gw: RunningGateway, grid: Grid, name: str, data: bytes) -> None:
    """Write a file with node 4 frozen (its upload hangs there), then SIGKILL node 4."""
    with Session(gw) as sftp:
        f = sftp.open(name, "wb")
        f.write(data)
        grid.freeze(4)
        f.close()
    wait_for(lambda: any(j["uploading"] for j in upload_queue(gw)), 10, "the upload to start")
    grid.kill(4)


def test_server_killed_mid_upload_waits_when_happiness_cannot_be_met(
    tmp_path: Path, reaper: NodeReaper, make_grid: type[Grid]
) -> None:
    """3/5/5: a server killed during an upload leaves it queued (status JSON and ``gateway
    uploads`` show it with its error); when the server is back it completes by itself."""
    grid = make_grid(5)
    gw = grid_gateway(tmp_path, reaper, grid, "3/5/5")
    data = random.Random(1).randbytes(6 * MiB)
    with Session(gw) as sftp:
        sftp.mkdir("/d")
    _close_during_upload(gw, grid, "/d/big.bin", data)
    failed = wait_for(
        lambda: [j for j in upload_queue(gw) if j["attempts"] >= 1], 90, "a failed attempt"
    )
    listed = gateway("uploads", gw.node_dir)
    assert listed.code == 0, listed.err
    as_json = json.loads(gateway("uploads", gw.node_dir, "--json").out)
    print(f"queued after the kill: {failed[0]['file']} ({failed[0]['last_error']})")
    print(listed.out)
    assert "/d/big.bin" in listed.out and as_json["pending"][0]["attempts"] >= 1
    grid.restart(4)
    retried = gateway("uploads", gw.node_dir, "--retry-now")
    assert retried.code == 0, retried.err
    wait_drained(gw, timeout=90)
    with Session(gw) as sftp:
        ok = read_all(sftp, "/d/big.bin") == data
    print(f"after the server returned: {int(ok)}/1 files uploaded and intact")
    assert ok
    stop_gateway(gw)


def test_server_killed_mid_upload_completes_when_happiness_is_met(
    tmp_path: Path, reaper: NodeReaper, make_grid: type[Grid]
) -> None:
    """3/4/5: a server killed during an upload; the upload completes on the other four, and
    with N−k = 2 servers down every file is readable."""
    grid = make_grid(5)
    gw = grid_gateway(tmp_path, reaper, grid, "3/4/5")
    rng = random.Random(2)
    contents = {f"/f{i}.bin": rng.randbytes(rng.randrange(MiB, 3 * MiB)) for i in range(4)}
    with Session(gw) as sftp:
        for name, data in list(contents.items())[:3]:
            put_bytes(sftp, name, data)
    wait_drained(gw)
    name, data = list(contents.items())[3]
    _close_during_upload(gw, grid, name, data)
    wait_drained(gw, timeout=90)
    grid.kill(3)  # now N−k = 2 servers are down
    with Session(gw) as sftp:
        readable = sum(read_all(sftp, n) == d for n, d in contents.items())
    print(f"upload completed on 4 servers; with 2 of 5 down {readable}/{len(contents)} readable")
    assert readable == len(contents)
    stop_gateway(gw)


def _share_files(grid: Grid, gw: RunningGateway, path: str) -> list[Path]:
    """Every share file of the immutable file at ``path``, one per server, server order."""
    check = gateway("check", gw.node_dir, path, "--json")
    si = json.loads(check.out)["check"]["storage_index"]
    found = []
    for node in grid.nodes:
        found += sorted(
            p for p in node.shares_dir.glob(f"*/{si}/*") if p.is_file() and p.name.isdigit()
        )
    return found


def _advisories(grid: Grid) -> int:
    total = 0
    for node in grid.nodes:
        log = node.node_dir / "storage" / "corruption-advisories.log"
        total += len(log.read_text().splitlines()) if log.exists() else 0
    return total


def test_damaged_shares_are_read_around_reported_and_repaired(
    tmp_path: Path, reaper: NodeReaper, make_grid: type[Grid]
) -> None:
    """Bytes flipped in two of five shares: reads are correct, corruption advisories reach the
    servers, ``check --verify --repair`` restores full health. Then one share truncated and
    another deleted: the same."""
    grid = make_grid(5)
    gw = grid_gateway(tmp_path, reaper, grid, "3/5/5")
    data = random.Random(3).randbytes(MiB - 5)  # one object (a larger file is a chunk tree)
    with Session(gw) as sftp:
        put_bytes(sftp, "/c.bin", data)
    wait_drained(gw)
    shares = _share_files(grid, gw, "/c.bin")
    assert len(shares) == 5
    for share in shares[:2]:
        raw = bytearray(share.read_bytes())
        for offset in range(len(raw) // 3, len(raw) // 3 + 64):
            raw[offset] ^= 0xFF
        share.write_bytes(bytes(raw))
    results = []
    for damage in ("flipped", "truncated+deleted"):
        if damage == "truncated+deleted":
            shares = _share_files(grid, gw, "/c.bin")
            with open(shares[0], "r+b") as f:
                f.truncate(len(shares[0].read_bytes()) // 2)
            shares[1].unlink()
        with Session(gw) as sftp:
            correct = read_all(sftp, "/c.bin") == data
        read_advised = _advisories(grid)
        repaired = gateway("check", gw.node_dir, "/c.bin", "--verify", "--repair")
        advised = _advisories(grid)
        healthy = gateway("check", gw.node_dir, "/c.bin", "--verify")
        results.append((damage, correct, advised, repaired.code, healthy.code))
        print(
            f"{damage}: read correct {int(correct)}/1; advisories after the read {read_advised}, "
            f"after verify {advised}; "
            f"repair exit {repaired.code}; verify after repair exit {healthy.code}"
        )
        assert correct
        assert repaired.code == 0, repaired.out + repaired.err
        assert healthy.code == 0, healthy.out + healthy.err
    # Both corrupt shares reached their servers as advisories. (A read that happens to pick the
    # three intact shares sees no corruption, so the read alone may send none.)
    assert results[0][2] >= 2
    stop_gateway(gw)
