"""Real sshfs mounts of a real gateway: the tools people run on a mounted grid.

Every mount is unmounted (``fusermount3 -u``) in a finalizer; the gateway is
stopped after the module. Skipped where sshfs or FUSE is unavailable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.durability.cluster import wait_drained
from tests.sftp.gateway_node import RunningGateway, shared_gateway, sshfs_mount  # noqa: F401

Mount = Callable[[str], Path]


def run(*args: str | Path, cwd: Path | None = None, timeout: float = 60) -> str:
    """Run a command that must succeed; its stdout."""
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args}: {result.stderr}"
    return result.stdout


@pytest.fixture
def mount(
    shared_gateway: RunningGateway,  # noqa: F811
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Mount]:
    """Mounts the gateway (at a directory named after the test) with sshfs; unmounts after."""
    mounted: list[Path] = []
    base = request.node.name

    def mount_one(name: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        sshfs_mount(shared_gateway, point)
        mounted.append(point)
        target = point / base
        target.mkdir(exist_ok=True)
        return target

    yield mount_one
    for point in mounted:
        subprocess.run(["fusermount3", "-u", "-z", str(point)], check=False, timeout=30)


def make_tree(root: Path) -> None:
    """A small source tree: nested directories, text and binary files, an empty file."""
    for d in range(3):
        sub = root / f"pkg{d}" / "inner"
        sub.mkdir(parents=True)
        for f in range(6):
            (sub / f"mod{f}.py").write_text(f"# module {d}.{f}\n" * (50 * f + 1))
        (root / f"pkg{d}" / "data.bin").write_bytes(os.urandom(70_000 * (d + 1)))
    (root / "empty").write_bytes(b"")
    (root / "README").write_text("a tree\n")


def test_cp_r_and_diff(mount: Mount, tmp_path: Path) -> None:
    """cp -r of a source tree onto the mount; diff -r finds no difference."""
    source = tmp_path / "src"
    make_tree(source)
    target = mount("m")
    run("cp", "-r", source, target / "src")
    run("diff", "-r", source, target / "src")


def test_tar_from_a_fresh_mount_right_after_cp(mount: Mount, tmp_path: Path) -> None:
    """cp -r, then at once tar c of the copy through another, fresh mount: no file changes
    while tar reads it, although the uploads land meanwhile."""
    source = tmp_path / "src"
    make_tree(source)
    for extra in range(40):
        (source / f"extra{extra}.txt").write_text(f"file {extra}\n" * 300)
    target = mount("first")
    run("cp", "-r", source, target / "src")
    fresh = mount("second")
    result = subprocess.run(
        ["tar", "-cf", str(tmp_path / "out.tar"), "-C", str(fresh), "src"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "changed as we read it" not in result.stderr, result.stderr
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    run("tar", "-xf", tmp_path / "out.tar", "-C", unpacked)
    run("diff", "-r", source, unpacked / "src")


def test_make_is_clean_after_cp_p_of_a_built_tree(
    mount: Mount,
    tmp_path: Path,
    shared_gateway: RunningGateway,  # noqa: F811
) -> None:
    """A built tree copied with cp -rp stays built: make -q finds nothing to do, also
    after the uploads have landed (times never move)."""
    tree = tmp_path / "proj"
    tree.mkdir()
    (tree / "Makefile").write_text(
        "all: out/a.o out/b.o\nout/%.o: src/%.c\n\tmkdir -p out && cp $< $@\n"
    )
    (tree / "src").mkdir()
    for name in ("a", "b"):
        (tree / "src" / f"{name}.c").write_text(f"int {name};\n")
    run("make", "-s", "-C", tree)
    target = mount("m")
    run("cp", "-rp", tree, target / "proj")
    result = subprocess.run(["make", "-q", "-C", str(target / "proj")], timeout=60)
    assert result.returncode == 0, "make wants to rebuild a copied, built tree"
    wait_drained(shared_gateway)  # the uploads land: nothing may look newer afterwards
    result = subprocess.run(["make", "-q", "-C", str(target / "proj")], timeout=60)
    assert result.returncode == 0, "make wants to rebuild once the uploads have landed"


def test_tar_x_keeps_mtimes(mount: Mount, tmp_path: Path) -> None:
    """Extracting a tar archive on the mount keeps every file's mtime."""
    source = tmp_path / "src"
    make_tree(source)
    for i, path in enumerate(sorted(source.rglob("*"))):
        os.utime(path, (1_500_000_000 + i, 1_500_000_000 + i))
    archive = tmp_path / "src.tar"
    run("tar", "-cf", archive, "-C", tmp_path, "src")
    target = mount("m")
    run("tar", "-xf", archive, "-C", target)
    for path in source.rglob("*"):
        if path.is_file():
            copy = target / path.relative_to(tmp_path)
            assert copy.stat().st_mtime == path.stat().st_mtime, copy
            assert copy.read_bytes() == path.read_bytes()


def test_rsync_twice_copies_nothing_the_second_time(mount: Mount, tmp_path: Path) -> None:
    """rsync -a onto the mount, then again: the second run transfers no file."""
    source = tmp_path / "src"
    make_tree(source)
    target = mount("m")
    run("rsync", "-a", f"{source}/", target / "copy")
    second = run("rsync", "-a", "--itemize-changes", "--stats", f"{source}/", target / "copy")
    assert "Number of regular files transferred: 0" in second, second
    run("diff", "-r", source, target / "copy")


def test_git_on_the_mount(mount: Mount) -> None:
    """git init, add, commit, status and fsck work in a repository on the mount."""
    repo = mount("m") / "repo"
    repo.mkdir()
    run("git", "init", "-q", cwd=repo)
    for i in range(5):
        (repo / f"file{i}.txt").write_text(f"content {i}\n" * 100)
    run("git", "add", ".", cwd=repo)
    env = ["-c", "user.name=T", "-c", "user.email=t@example.com"]
    run("git", *env, "commit", "-q", "-m", "first", cwd=repo)
    (repo / "file0.txt").write_text("changed\n")
    run("git", *env, "commit", "-q", "-am", "second", cwd=repo)
    assert run("git", "status", "--porcelain", cwd=repo) == ""
    run("git", "fsck", "--strict", cwd=repo)
    assert run("git", "log", "--format=%s", cwd=repo).split() == ["second", "first"]


def test_dd_fsync_truncate_and_df(mount: Mount) -> None:
    """dd conv=fsync writes a file that reads back; truncate shrinks/extends it; df answers."""
    target = mount("m")
    path = target / "dd.bin"
    run("dd", "if=/dev/urandom", f"of={path}", "bs=64k", "count=40", "conv=fsync", "status=none")
    data = path.read_bytes()
    assert len(data) == 40 * 65536
    run("truncate", "-s", "1000", path)
    assert path.read_bytes() == data[:1000]
    run("truncate", "-s", "3000", path)
    assert path.read_bytes() == data[:1000] + b"\0" * 2000
    df = run("df", "-P", target).splitlines()
    assert len(df) == 2 and int(df[1].split()[1]) > 0


def test_vim_edit_and_save(mount: Mount) -> None:
    """An editor's save (write a new file, fsync, rename over the original) replaces it."""
    target = mount("m")
    doc = target / "doc.txt"
    doc.write_text("line one\nline two\n")
    vim = shutil.which("vim") or shutil.which("vim.tiny")
    if vim:
        run(vim, "-es", "-u", "NONE", "-c", "set nobackup writebackup", "-c",
            "%s/two/2/", "-c", "wq", doc)  # fmt: skip
        assert doc.read_text() == "line one\nline 2\n"
    # vim's syscalls with 'backupcopy=no': write a sibling, fsync, rename over the original.
    tmp = target / ".doc.txt.swp-new"
    with open(tmp, "w") as f:
        f.write("rewritten\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, doc)
    assert doc.read_text() == "rewritten\n"
    assert sorted(p.name for p in target.iterdir()) == ["doc.txt"]


def test_a_file_written_twice_then_moved_or_removed_stays_gone(
    mount: Mount,
    shared_gateway: RunningGateway,  # noqa: F811
) -> None:
    """``echo a > x; echo b >> x; mv x y`` and ``...; rm x``: once the uploads have landed,
    ``x`` has not come back (the first version's upload used to link it again)."""
    target = mount("w")
    run("sh", "-c", "echo a > x && echo b >> x && mv x y && echo c > z && echo d >> z && rm z",
        cwd=target)  # fmt: skip
    wait_drained(shared_gateway)
    assert sorted(p.name for p in target.iterdir()) == ["y"]
    assert (target / "y").read_text() == "a\nb\n"
    fresh = mount("w2").parent / target.name  # a new mount: nothing cached by sshfs
    assert sorted(p.name for p in fresh.iterdir()) == ["y"]


def test_two_mounts_write_one_directory_at_once(mount: Mount) -> None:
    """Two sshfs mounts creating files in one directory concurrently lose none of them."""
    first, second = mount("m1"), mount("m2")
    script = (
        "import sys, pathlib\n"
        "for i in range(40): pathlib.Path(sys.argv[1], f'{sys.argv[2]}{i}').write_text(str(i))"
    )
    procs = [
        subprocess.Popen(["python3", "-c", script, str(first), "a"]),
        subprocess.Popen(["python3", "-c", script, str(second), "b"]),
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    expected = sorted([f"a{i}" for i in range(40)] + [f"b{i}" for i in range(40)])
    deadline = time.monotonic() + 30
    while sorted(os.listdir(first)) != expected and time.monotonic() < deadline:
        time.sleep(1)  # sshfs caches listings for a while
    assert sorted(os.listdir(first)) == expected
    assert (second / "a7").read_text() == "7"


REKEY_MIB = int(os.environ.get("GATEWAY_REKEY_TEST_MIB", "100"))


def test_openssh_with_rekey_every_megabyte(
    shared_gateway: RunningGateway,  # noqa: F811
    tmp_path: Path,
) -> None:
    """OpenSSH sftp with RekeyLimit=1M moves 100 MiB up and back intact (a rekey per MiB)."""
    source = tmp_path / "big.bin"
    with open(source, "wb") as f:
        for _ in range(REKEY_MIB):
            f.write(os.urandom(1 << 20))
    batch = tmp_path / "batch"
    batch.write_text(f"put {source} /rekey.bin\nget /rekey.bin {tmp_path / 'back.bin'}\n")
    started = time.monotonic()
    result = subprocess.run(
        ["sshpass", "-p", shared_gateway.password, "sftp", "-o", "BatchMode=no", "-b", str(batch),
         "-P", str(shared_gateway.port), "-o", "RekeyLimit=1M",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         f"{shared_gateway.user}@{shared_gateway.host}"],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    print(f"{REKEY_MIB} MiB up and back with RekeyLimit=1M in {elapsed:.1f} s")
