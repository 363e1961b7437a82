"""Files changed in place through a real sshfs mount: patches, rsync --inplace, appended logs,
SQLite and an ext4 image on a loop device, with the gateway killed (kill -9) in the middle.

What seed 004 asks: every change costs what changed, an fsync means durable in the grid,
and after a crash the file is exactly one acknowledged state. Every mount is unmounted and
every process stopped by pid, whatever the outcome. Skipped where sshfs or FUSE is missing
(and the loop-device test where the kernel gives no loop devices, with the reason).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.durability.cluster import kill_gateway, restart, wait_drained
from tests.nodes import NodeReaper, gateway
from tests.sftp.gateway_node import RunningGateway, sshfs_mount, start_gateway

pytestmark = pytest.mark.skipif(
    shutil.which("sshfs") is None or not os.path.exists("/dev/fuse"),
    reason="sshfs or FUSE is not available",
)

Mount = Callable[[RunningGateway], Path]


def run(*args: str | Path, timeout: float = 120, input: str | None = None) -> str:
    """Run a command that must succeed; its stdout."""
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, input=input
    )
    assert result.returncode == 0, f"{args}: {result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RunningGateway]:
    """A gateway of this test's own (it may be killed), stopped after."""
    reaper = NodeReaper()
    try:
        yield start_gateway(tmp_path, reaper)
    finally:
        gateway("stop", tmp_path / "gw", timeout=180)
        reaper.reap()


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    """sshfs mounts of a gateway's root (each at a new directory); all unmounted after."""
    mounted: list[Path] = []

    def mount_one(gw: RunningGateway) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        sshfs_mount(gw, point)
        mounted.append(point)
        return point

    yield mount_one
    for point in reversed(mounted):
        subprocess.run(["fusermount3", "-u", "-z", str(point)], check=False, timeout=30)


def unmount(point: Path) -> None:
    """Unmount one sshfs mount now (lazily: a dead gateway cannot answer)."""
    subprocess.run(["fusermount3", "-u", "-z", str(point)], check=False, timeout=30)


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that differ everywhere (a shifted block would show)."""
    block = hashlib.sha256(b"%d" % seed).digest()
    return (block * (size // len(block) + 1))[:size]


def grid_bytes(gw: RunningGateway, path: str) -> bytes:
    """A file's bytes read through a new paramiko session (not through the mount)."""
    transport, sftp = gw.sftp()
    try:
        with sftp.open(path, "rb") as f:
            return f.read()
    finally:
        transport.close()


def test_dd_patches_with_fsync_change_only_their_blocks(node: RunningGateway, mount: Mount) -> None:
    """``dd conv=notrunc,fsync`` patches into a 12 MiB file: byte-exact, and the upload of
    each patch is a change of its size (the status says how many bytes it stores)."""
    point = mount(node)
    original = pattern(12 << 20)
    (point / "disk.img").write_bytes(original)
    wait_drained(node)
    expected = bytearray(original)
    for i, offset in enumerate((4096, 5 << 20, (12 << 20) - 4096, 7_777_777)):
        patch = bytes([i + 1]) * 4096
        run(
            "dd",
            f"of={point / 'disk.img'}",
            "bs=4096",
            f"seek={offset}",
            "oflag=seek_bytes",
            "conv=notrunc,fsync",
            "status=none",
            input=patch.decode("latin-1"),
        )
        expected[offset : offset + 4096] = patch
    assert (point / "disk.img").read_bytes() == bytes(expected)
    wait_drained(node)
    assert grid_bytes(node, "/disk.img") == bytes(expected)


def test_rsync_inplace_of_a_changed_file_is_byte_exact(
    node: RunningGateway, mount: Mount, tmp_path: Path
) -> None:
    """rsync --inplace --no-whole-file rewrites only the changed blocks of the copy."""
    point = mount(node)
    source = tmp_path / "big.bin"
    data = bytearray(pattern(8 << 20, 1))
    source.write_bytes(data)
    run("rsync", "--inplace", str(source), str(point / "big.bin"))
    data[3 << 20 : (3 << 20) + 10_000] = b"R" * 10_000
    data.extend(b"tail" * 1000)
    source.write_bytes(data)
    run("rsync", "--inplace", "--no-whole-file", "-I", str(source), str(point / "big.bin"))
    assert (point / "big.bin").read_bytes() == bytes(data)
    wait_drained(node)
    assert grid_bytes(node, "/big.bin") == bytes(data)


def test_appending_to_a_large_log_is_byte_exact(node: RunningGateway, mount: Mount) -> None:
    """Lines appended with ``>>`` one command at a time to a 6 MiB log."""
    point = mount(node)
    log = point / "app.log"
    start = pattern(6 << 20, 2)
    log.write_bytes(start)
    wait_drained(node)
    lines = [f"line {i}: {'x' * (i % 70)}\n" for i in range(40)]
    for line in lines:
        run("sh", "-c", f"printf '%s' '{line[:-1]}' >> '{log}'; echo >> '{log}'")
    expected = start + "".join(lines).encode()
    assert log.read_bytes() == expected
    wait_drained(node)
    assert grid_bytes(node, "/app.log") == expected


SQLITE_WRITER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE IF NOT EXISTS t (i INTEGER PRIMARY KEY, v BLOB)")
for i in range(int(sys.argv[2]), int(sys.argv[3])):
    db.execute("BEGIN")
    db.execute("INSERT INTO t VALUES (?, randomblob(300))", (i,))
    db.execute("COMMIT")
    print(i, flush=True)
"""


def test_sqlite_survives_a_killed_gateway_with_every_commit(
    node: RunningGateway, mount: Mount, tmp_path: Path
) -> None:
    """1,000 SQLite transactions on the mount, the gateway killed (kill -9) after ~300 of
    them: after a restart the database passes ``PRAGMA integrity_check`` and holds every
    transaction whose COMMIT had returned; then the remaining ones go in too."""
    point = mount(node)
    db_path = point / "app.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", SQLITE_WRITER, str(db_path), "0", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    committed = -1
    try:
        assert writer.stdout is not None
        for line in writer.stdout:
            committed = int(line)
            if committed >= 300:
                kill_gateway(node)
                break
        writer.wait(timeout=120)  # its next statement fails: the mount's server is gone
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert committed >= 300
    for line in (writer.stdout.read() if writer.stdout else "").split():
        committed = max(committed, int(line))  # commits that returned before it noticed
    unmount(point)
    again = restart(node)
    point = mount(again)
    db = sqlite3.connect(point / "app.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        present = {row[0] for row in db.execute("SELECT i FROM t")}
    finally:
        db.close()
    assert set(range(committed + 1)) <= present
    start = max(present) + 1
    run(sys.executable, "-c", SQLITE_WRITER, point / "app.db", str(start), "1000", timeout=600)
    db = sqlite3.connect(point / "app.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM t").fetchone() == (1000,)
    finally:
        db.close()


def _loop_devices_work() -> str | None:
    """Why an ext4 image cannot be attached to a loop device here (None: it can)."""
    if os.geteuid() != 0:
        return "loop devices and mount need root"
    if not os.path.exists("/dev/loop-control") or shutil.which("losetup") is None:
        return "the kernel offers no loop devices"
    if shutil.which("mkfs.ext4") is None:
        return "e2fsprogs is not installed"
    return None


class Loops:
    """Loop devices and mounts a test made: each detached or unmounted once, by the test or
    at its end (a device name detached twice could by then be another process's)."""

    def __init__(self) -> None:
        self.attached: list[str] = []
        self.mounted: list[Path] = []

    def attach(self, image: Path) -> str:
        """Attach an image file to a free loop device; its name."""
        device = run("losetup", "--find", "--show", image).strip()
        self.attached.append(device)
        return device

    def detach(self, device: str, check: bool = True) -> None:
        """Detach a device this test attached."""
        self.attached.remove(device)
        result = subprocess.run(["losetup", "-d", device], capture_output=True, timeout=60)
        assert result.returncode == 0 or not check, result.stderr

    def mount(self, device: str, point: Path, *options: str) -> None:
        """Mount a device."""
        run("mount", *options, device, point)
        self.mounted.append(point)

    def umount(self, point: Path, lazy: bool = False) -> None:
        """Unmount (lazily: when the device's backing file may be gone)."""
        self.mounted.remove(point)
        if lazy:
            subprocess.run(["umount", "-l", str(point)], check=False, timeout=60)
        else:
            run("umount", point)

    def cleanup(self) -> None:
        """Whatever is still mounted or attached."""
        for point in list(self.mounted):
            self.umount(point, lazy=True)
        for device in list(self.attached):
            self.detach(device, check=False)


@pytest.fixture
def loop() -> Iterator[Loops]:
    """Loop devices and mounts, all undone after the test."""
    loops = Loops()
    try:
        yield loops
    finally:
        loops.cleanup()


@pytest.mark.skipif(_loop_devices_work() is not None, reason=str(_loop_devices_work()))
def test_ext4_on_a_loop_device_over_sshfs_survives_a_killed_gateway(
    node: RunningGateway, mount: Mount, loop: Loops, tmp_path: Path
) -> None:
    """Seed 004: an ext4 image file on the mount, on a loop device: mkfs, mount, copy a tree,
    sync, umount, fsck clean. Then mount again, sync a second tree, change more without
    sync, kill -9 the gateway: after a restart fsck finds the filesystem as of the last
    sync, the synced trees intact."""
    point = mount(node)
    image = point / "fs.img"
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    device = loop.attach(image)
    run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", device)
    fs = tmp_path / "ext4"
    fs.mkdir()
    loop.mount(device, fs)
    tree = Path(__file__).resolve().parents[2] / "gateway"
    run("cp", "-r", tree, fs / "first")
    run("sync", "-f", fs)
    loop.umount(fs)
    loop.detach(device)
    run("fsck.ext4", "-n", "-f", image)  # clean: exit 0
    device = loop.attach(image)
    loop.mount(device, fs)
    run("cp", "-r", tree, fs / "second")
    run("sync", "-f", fs)
    synced = run("sh", "-c", f"cd '{fs}' && find ./first ./second -type f | sort | xargs sha256sum")
    run("cp", "-r", tree, fs / "unsynced")  # in the page cache, maybe partly written
    kill_gateway(node)
    loop.umount(fs, lazy=True)
    loop.detach(device, check=False)
    unmount(point)
    again = restart(node)
    point = mount(again)
    image = point / "fs.img"
    checked = subprocess.run(
        ["fsck.ext4", "-n", "-f", str(image)], capture_output=True, text=True, timeout=300
    )
    # As after a power cut at the last sync: the journal may need replaying (exit 4 with
    # -n means "would fix"), so fsck runs on a copy that it may repair.
    copy = tmp_path / "copy.img"
    shutil.copyfile(image, copy)
    repaired = subprocess.run(
        ["fsck.ext4", "-p", "-f", str(copy)], capture_output=True, text=True, timeout=300
    )
    assert repaired.returncode in (0, 1), repaired.stdout + repaired.stderr + checked.stdout
    loop.mount(loop.attach(copy), fs, "-o", "ro")
    now = run("sh", "-c", f"cd '{fs}' && find ./first ./second -type f | sort | xargs sha256sum")
    assert now == synced


def _dm_crypt_works() -> str | None:
    """Why LUKS cannot be set up on a loop device here (None: it can)."""
    loop = _loop_devices_work()
    if loop is not None:
        return loop
    if shutil.which("cryptsetup") is None:
        return "cryptsetup is not installed (Debian's cryptsetup-bin)"
    if not os.path.exists("/dev/mapper/control"):
        return "the kernel offers no device-mapper (dm-crypt), so LUKS cannot be opened"
    return None


@pytest.mark.skipif(_dm_crypt_works() is not None, reason=str(_dm_crypt_works()))
def test_luks_over_a_loop_device_over_sshfs(
    node: RunningGateway, mount: Mount, loop: Loops, tmp_path: Path
) -> None:
    """Seed 004 exactly: LUKS on a loop device backed by an image file on the mount, ext4
    inside; mkfs, copy a tree, sync, close; reopened, fsck is clean and the tree intact."""
    point = mount(node)
    image = point / "luks.img"
    with open(image, "wb") as f:
        f.truncate(48 << 20)
    device = loop.attach(image)
    key = "not a real secret\n"
    name = f"gwtest{os.getpid()}"
    fast = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-"]
    run("cryptsetup", "luksFormat", "-q", "--type", "luks2", *fast, device, input=key)
    run("cryptsetup", "open", "--key-file", "-", device, name, input=key)
    fs = tmp_path / "inner"
    fs.mkdir()
    try:
        run("mkfs.ext4", "-q", f"/dev/mapper/{name}")
        run("mount", f"/dev/mapper/{name}", fs)
        try:
            run("cp", "-r", Path(__file__).resolve().parents[2] / "gateway", fs / "tree")
            run("sync", "-f", fs)
            before = run("sh", "-c", f"cd '{fs}' && find . -type f | sort | xargs sha256sum")
        finally:
            run("umount", fs)
    finally:
        subprocess.run(["cryptsetup", "close", name], check=False, timeout=60)
    loop.detach(device)
    device = loop.attach(image)
    run("cryptsetup", "open", "--key-file", "-", device, name, input=key)
    try:
        run("fsck.ext4", "-n", "-f", f"/dev/mapper/{name}")
        run("mount", "-o", "ro", f"/dev/mapper/{name}", fs)
        try:
            after = run("sh", "-c", f"cd '{fs}' && find . -type f | sort | xargs sha256sum")
        finally:
            run("umount", fs)
    finally:
        subprocess.run(["cryptsetup", "close", name], check=False, timeout=60)
    assert after == before
