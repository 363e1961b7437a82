"""rclone against a real gateway: copy, check, sync, moveto, purge and a FUSE mount, with its
defaults and its usual knobs (Debian's rclone 1.60; skipped where rclone is not installed).

rclone's SFTP library sends WRITE packets as long as its whole 32 KiB buffer whatever
the data field holds; the gateway must read the data field and ignore the rest, as
OpenSSH's sftp-server does (it used to end the session: "connection lost").
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sftp.gateway_node import RunningGateway, shared_gateway  # noqa: F401

pytestmark = pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is not installed")


def make_tree(root: Path, seed: int = 1) -> None:
    """Files of ~300 KB (never a multiple of rclone's chunk), small ones, nested folders."""
    rng = random.Random(seed)
    for d in ("", "sub", "sub/deeper"):
        (root / d).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            (root / d / f"file{i}.bin").write_bytes(rng.randbytes(300_000 + rng.randrange(5000)))
        (root / d / "small.txt").write_text(f"small file in {d or 'the top'}\n")
    (root / "empty").write_bytes(b"")


class Rclone:
    """rclone with an on-the-fly SFTP remote for one gateway account."""

    def __init__(self, gw: RunningGateway, home: Path) -> None:
        self.home = home
        config = home / "rclone.conf"
        config.write_text("")
        self.env = {**os.environ, "RCLONE_CONFIG": str(config), "HOME": str(home)}
        obscured = self.run("obscure", gw.password).stdout.strip()
        self.remote = (
            f":sftp,host={gw.host},port={gw.port},user={gw.user},pass={obscured},"
            "set_modtime=true,shell_type=none:"
        )

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["rclone", *args], capture_output=True, text=True, env=self.env, timeout=300
        )
        if check:
            assert result.returncode == 0, f"rclone {args[0]}: {result.stderr[-3000:]}"
        return result


@pytest.fixture
def rclone(shared_gateway: RunningGateway, tmp_path: Path) -> Rclone:  # noqa: F811
    """rclone with a fresh config pointing at the module's gateway."""
    return Rclone(shared_gateway, tmp_path)


@pytest.mark.parametrize(
    "knobs",
    [
        [],
        ["--transfers", "8", "--sftp-concurrency", "8"],
        ["--sftp-chunk-size", "255k", "--sftp-concurrency", "1"],
        ["--sftp-disable-concurrent-writes"],
    ],
    ids=["defaults", "transfers-8", "chunk-255k", "no-concurrent-writes"],
)
def test_copy_then_check_by_downloading(rclone: Rclone, tmp_path: Path, knobs: list[str]) -> None:
    """rclone copy uploads the tree; check --download finds every byte the same."""
    source = tmp_path / "source"
    make_tree(source)
    target = f"{rclone.remote}copy-{len(knobs)}-{abs(hash(tuple(knobs))) % 1000}"
    rclone.run("copy", str(source), target, *knobs)
    checked = rclone.run("check", str(source), target, "--download")
    assert "0 differences found" in checked.stderr


def test_sync_twice_copies_nothing_the_second_time(rclone: Rclone, tmp_path: Path) -> None:
    """A second sync of an unchanged tree transfers nothing: sizes and times match."""
    source = tmp_path / "source"
    make_tree(source, seed=2)
    target = f"{rclone.remote}synced"
    rclone.run("sync", str(source), target)
    again = rclone.run("sync", str(source), target, "-v", "--stats-one-line")
    assert "Copied" not in again.stderr, again.stderr
    (source / "sub" / "file0.bin").write_bytes(b"changed")
    third = rclone.run("sync", str(source), target, "-v")
    assert "file0.bin: Copied (replaced existing)" in third.stderr
    assert rclone.run("cat", f"{target}/sub/file0.bin").stdout == "changed"


def test_moveto_and_purge(rclone: Rclone, tmp_path: Path) -> None:
    """moveto renames on the server; purge removes a whole tree."""
    source = tmp_path / "source"
    make_tree(source, seed=3)
    target = f"{rclone.remote}moving"
    rclone.run("copy", str(source), target)
    rclone.run("moveto", f"{target}/file1.bin", f"{target}/renamed.bin")
    listed = rclone.run("lsf", target).stdout.split()
    assert "renamed.bin" in listed and "file1.bin" not in listed
    back = tmp_path / "back.bin"
    rclone.run("copyto", f"{target}/renamed.bin", str(back))
    assert back.read_bytes() == (source / "file1.bin").read_bytes()
    rclone.run("purge", target)
    assert "moving/" not in rclone.run("lsf", rclone.remote).stdout.split()


@pytest.fixture
def rclone_mount(rclone: Rclone, tmp_path: Path) -> Iterator[Path]:
    """``rclone mount --vfs-cache-mode writes`` of the account; unmounted and stopped after."""
    if not Path("/dev/fuse").exists() or shutil.which("fusermount3") is None:
        pytest.skip("FUSE is not available here")
    point = tmp_path / "mnt"
    point.mkdir()
    process = subprocess.Popen(
        ["rclone", "mount", rclone.remote, str(point), "--vfs-cache-mode", "writes",
         "--vfs-write-back", "0s", "--cache-dir", str(tmp_path / "cache"), "--dir-cache-time",
         "1s"],
        env=rclone.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(point):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "rclone mount did not come up"
            time.sleep(0.1)
        yield point
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(point)], check=False, timeout=30)
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def test_rclone_mount_with_a_write_cache(
    rclone: Rclone, rclone_mount: Path, tmp_path: Path
) -> None:
    """cp -r into an rclone mount: the files reach the gateway, and read back the same."""
    source = tmp_path / "source"
    make_tree(source, seed=4)
    subprocess.run(["cp", "-r", str(source), str(rclone_mount / "mounted")], check=True)
    deadline = time.monotonic() + 120
    while True:  # rclone uploads each file from its cache after close
        checked = rclone.run("check", str(source), f"{rclone.remote}mounted", check=False)
        if checked.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "0 differences found" in checked.stderr, checked.stderr
    for path in source.rglob("*"):
        if path.is_file():
            assert (rclone_mount / "mounted" / path.relative_to(source)).read_bytes() == (
                path.read_bytes()
            )
