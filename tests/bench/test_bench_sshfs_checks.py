"""The sshfs workload of ``misc/bench.py`` fails loudly instead of timing a broken copy:
``tar`` warnings or errors and ``diff`` differences stop it with their message, and its
mount is undone when the workload is interrupted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

MISC = Path(__file__).resolve().parents[2] / "misc"
if str(MISC) not in sys.path:
    sys.path.insert(0, str(MISC))

from bench_targets import BenchFailure, openssh_target, sshfs_mount  # noqa: E402
from bench_workloads import compare_trees, make_tree, tar_tree  # noqa: E402

from tests.grid_e2e.processes import pid_gone  # noqa: E402


def test_tar_of_a_file_growing_while_read_fails_with_tars_warning(tmp_path: Path) -> None:
    """A file that changes while tar reads it ("file changed as we read it", exit 1) is a
    failure whose message is tar's, not a figure."""
    tree = tmp_path / "tree"
    tree.mkdir()
    growing = tree / "log"
    growing.write_bytes(os.urandom(64 << 20))
    stop = threading.Event()

    def append() -> None:
        with open(growing, "ab") as f:
            while not stop.is_set():
                f.write(b"x" * 4096)
                f.flush()

    writer = threading.Thread(target=append)
    writer.start()
    try:
        with pytest.raises(BenchFailure, match="file changed as we read it"):
            tar_tree(tree, 0, "here")
    finally:
        stop.set()
        writer.join()


def test_tar_error_fails_with_its_message(tmp_path: Path) -> None:
    """Any tar error (here: a tree that is not there) is a failure with tar's message."""
    with pytest.raises(BenchFailure, match="exit 2.*Cannot open"):
        tar_tree(tmp_path / "missing", 0, "here")


def test_tar_that_reads_too_little_fails(tmp_path: Path) -> None:
    """An archive smaller than the tree's bytes means tar did not read the files."""
    make_tree(tmp_path / "tree", 3)
    with pytest.raises(BenchFailure, match="archived"):
        tar_tree(tmp_path / "tree", 1 << 30, "here")


def test_diff_difference_fails_with_diffs_output(tmp_path: Path) -> None:
    """A tree that differs from its source stops the run with diff's output."""
    make_tree(tmp_path / "a", 5)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    changed = sorted(p for p in (tmp_path / "b").rglob("*") if p.is_file())[0]
    changed.write_bytes(changed.read_bytes() + b"\n# changed")
    compare_trees(tmp_path / "a", tmp_path / "a", "here")  # the same tree: no failure
    with pytest.raises(BenchFailure, match=f"found differences:\n.*{changed.name}"):
        compare_trees(tmp_path / "a", tmp_path / "b", "here")


@pytest.mark.skipif(
    shutil.which("sshfs") is None or not os.path.exists("/dev/fuse"),
    reason="sshfs or FUSE is not available",
)
def test_sshfs_mount_is_undone_when_the_workload_is_interrupted(tmp_path: Path) -> None:
    """An exception inside the mount (SIGTERM raises SystemExit there) unmounts, ends the
    sshfs process and the sshd it talked to."""
    key = tmp_path / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    mount = tmp_path / "mnt"
    with pytest.raises(SystemExit):
        with openssh_target(tmp_path, key) as target:
            listener = target.listener_pid
            with sshfs_mount(target, mount) as mounted:
                (mounted / "file").write_text("seen by sshd")
                sshfs = [p for p in Path("/proc").glob("[0-9]*/cmdline")
                         if p.read_bytes().startswith(b"sshfs\0") and str(mount).encode()
                         in p.read_bytes()]  # fmt: skip
                assert len(sshfs) == 1
                raise SystemExit(143)
    assert not os.path.ismount(mount)
    assert (tmp_path / "openssh-root" / "file").read_text() == "seen by sshd"
    assert pid_gone(int(sshfs[0].parent.name))
    assert listener is not None and pid_gone(listener)
