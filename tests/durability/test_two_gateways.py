"""Two gateways on one root, an sshfs mount on each, mixed operations at once: nothing lost.

Two gateway processes (separate node directories, the same account root
capability) on a grid of three storage-node processes; each gateway is
mounted with sshfs, and one thread per mount runs 250 operations — create,
rename, remove, mkdir — in one shared directory tree, on names of its own so
the expected end state is well defined. Afterwards the tree, read through a
fresh session of either gateway, equals what the operations imply: no entry
lost, none duplicated, every file's bytes right.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest

from tests.durability.cluster import Grid, grid_gateway, wait_drained, wait_for
from tests.nodes import NodeReaper
from tests.sftp.gateway_node import RunningGateway

OPERATIONS_PER_MOUNT = 250


@pytest.fixture
def sshfs_mount(tmp_path: Path) -> Iterator[Callable[[RunningGateway, str], Path]]:
    """Mount a gateway with sshfs; every mount is unmounted after the test."""
    mounted: list[Path] = []

    def mount(gw: RunningGateway, name: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        subprocess.run(
            ["sshfs", f"{gw.user}@{gw.host}:/", str(point), "-p", str(gw.port), "-o",
             "password_stdin,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null"],
            input=gw.password + "\n", text=True, check=True, timeout=30,
        )  # fmt: skip
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["fusermount3", "-u", "-z", str(point)], check=False, timeout=30)


def _run_operations(base: Path, tag: str, seed: int, expected: dict[str, bytes | None]) -> None:
    """Random create/rename/remove/mkdir on names carrying ``tag``; record the end state.

    ``expected`` maps a path relative to the shared tree to its bytes (None: a directory).
    """
    rng = random.Random(seed)
    files: list[str] = []
    dirs = [""]
    for i in range(OPERATIONS_PER_MOUNT):
        op = rng.choice(["create", "create", "create", "rename", "remove", "mkdir"])
        if op == "mkdir" or (op != "create" and not files):
            name = f"{rng.choice(dirs)}/{tag}-d{i}".lstrip("/")
            (base / name).mkdir()
            dirs.append(name)
            expected[name] = None
        elif op == "create":
            name = f"{rng.choice(dirs)}/{tag}-f{i}".lstrip("/")
            data = os.urandom(rng.randrange(0, 40_000))
            (base / name).write_bytes(data)
            files.append(name)
            expected[name] = data
        elif op == "rename":
            old = files.pop(rng.randrange(len(files)))
            new = f"{rng.choice(dirs)}/{tag}-r{i}".lstrip("/")
            os.rename(base / old, base / new)
            files.append(new)
            expected[new] = expected.pop(old)
        else:
            gone = files.pop(rng.randrange(len(files)))
            (base / gone).unlink()
            del expected[gone]


def _tree(sftp: paramiko.SFTPClient, path: str = "/shared") -> dict[str, bytes | None]:
    """Everything under ``path`` (relative names) with file bytes; directories as None."""
    out: dict[str, bytes | None] = {}
    for attrs in sftp.listdir_attr(path):
        full = f"{path}/{attrs.filename}"
        relative = full[len("/shared/") :]
        if attrs.st_mode is not None and attrs.st_mode & 0o040000:
            out[relative] = None
            out.update(_tree(sftp, full))
        else:
            with sftp.open(full, "rb") as f:
                out[relative] = f.read()
    return out


def test_two_gateways_two_mounts_lose_nothing(
    tmp_path: Path,
    reaper: NodeReaper,
    make_grid: Callable[[int], Grid],
    sshfs_mount: Callable[[RunningGateway, str], Path],
) -> None:
    """500 mixed operations through two sshfs mounts of two gateways end in exactly the
    expected tree, seen identically through both gateways."""
    grid = make_grid(3)
    first = grid_gateway(tmp_path, reaper, grid, "1/2/3", name="gw1")
    second = grid_gateway(tmp_path, reaper, grid, "1/2/3", name="gw2", root_from=first.node_dir)
    mounts = [sshfs_mount(first, "m1"), sshfs_mount(second, "m2")]
    (mounts[0] / "shared").mkdir()
    wait_for(lambda: (mounts[1] / "shared").is_dir(), 30, "the shared directory on mount 2")
    expected: list[dict[str, bytes | None]] = [{}, {}]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            _run_operations(mounts[index] / "shared", f"m{index}", index + 1, expected[index])
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    for gw in (first, second):
        wait_drained(gw)
    want = {**expected[0], **expected[1]}
    for gw in (first, second):
        transport = paramiko.Transport((gw.host, gw.port))
        transport.connect(username=gw.user, password=gw.password)
        try:
            sftp = paramiko.SFTPClient.from_transport(transport)
            assert sftp is not None
            seen = wait_for(
                lambda sftp=sftp: (lambda t: t if t == want else None)(_tree(sftp)),
                30,
                "both mounts' operations in the tree",
            )
        finally:
            transport.close()
        files = sum(1 for v in seen.values() if v is not None)
        print(
            f"{gw.node_dir.name}: {len(seen)}/{len(want)} entries as expected "
            f"({files} files, byte-exact)"
        )
        assert seen == want
