"""The workloads of ``misc/bench.py``: what users do, with the clients they use.

Bulk transfers and the small files go through OpenSSH's ``sftp -b`` (one
session each, as a user's ``put``/``get``); random reads and metadata
operations through paramiko on a session opened beforehand, each operation
timed on its own (connection set-up is no part of an operation's figure:
OpenSSH forks a process per connection, we do not); the source-tree copy
through an sshfs mount, with ``cp -r``, ``tar c`` and ``diff -r`` timed
separately. Each workload returns its figures; a figure may carry the server's
CPU and peak RSS over its own stretch (``bench_probe.Usage``), otherwise the
harness's over the whole workload applies.

A workload that sees the server misbehave (``tar`` reporting a file changed
as it read it or any other error, ``diff`` finding a difference, downloaded
bytes that differ) raises ``BenchFailure``: the run stops with its message.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import paramiko
from bench_probe import Usage
from bench_targets import BenchFailure, MiB, Target, sshfs_mount


@attrs.define
class Figure:
    """One measured figure of one workload run on one target."""

    name: str  # e.g. "upload 64 MiB"
    kind: str  # what the targets are set for: "upload", "metadata", "sshfs part", ...
    value: float
    unit: str  # "ms", "s" and "MiB" are better lower; the rest (rates) higher
    usage: Usage | None = None  # the server's CPU/RSS over this figure's own stretch


def _rate(count: int, seconds: list[float]) -> float:
    """Operations per second from per-operation times."""
    return count / sum(seconds)


def _random_name(target: Target, prefix: str) -> str:
    return f"{target.root}/{prefix}-{random.randrange(10**9)}"


def upload(target: Target, work: Path, size: int) -> list[Figure]:
    """One big file up with ``put``."""
    source = work / "big.bin"
    if not source.exists() or source.stat().st_size != size:
        source.write_bytes(os.urandom(size))
    seconds = target.batch(f"put {source} {target.root}/big.bin\n", work)
    return [Figure(f"upload {size // MiB} MiB", "upload", size / seconds / 1e6, "MB/s")]


def download(target: Target, work: Path, size: int) -> list[Figure]:
    """The same file down with ``get``, right after ``upload``."""
    seconds = target.batch(f"get {target.root}/big.bin {work / 'back.bin'}\n", work)
    if (work / "back.bin").read_bytes() != (work / "big.bin").read_bytes():
        raise BenchFailure(f"{target.name}: downloaded bytes differ from the uploaded ones")
    return [Figure(f"download {size // MiB} MiB", "download", size / seconds / 1e6, "MB/s")]


def random_reads(target: Target, work: Path, count: int) -> list[Figure]:
    """``count`` random 4 KiB reads of the big file with paramiko, one at a time."""
    size = (work / "big.bin").stat().st_size
    rng = random.Random(1)
    with target.paramiko() as sftp, sftp.open(f"{target.root}/big.bin", "rb") as f:
        started = time.perf_counter()
        for _ in range(count):
            f.seek(rng.randrange(0, max(1, size - 4096)))
            f.read(4096)
        seconds = time.perf_counter() - started
    return [Figure(f"random 4 KiB reads x{count}", "reads", count / seconds, "reads/s")]


def small_files(target: Target, work: Path, count: int) -> list[Figure]:
    """``count`` files of 16 KiB with ``put``, in one session."""
    source = work / "small.bin"
    source.write_bytes(os.urandom(16 * 1024))
    directory = _random_name(target, "small")
    commands = f"mkdir {directory}\n" + "".join(
        f"put {source} {directory}/f{i}\n" for i in range(count)
    )
    seconds = target.batch(commands, work)
    return [Figure(f"{count} x 16 KiB files", "small files", count / seconds, "files/s")]


def metadata_ops(target: Target, work: Path, cycles: int) -> list[Figure]:
    """mkdir, rename and rmdir, ``cycles`` times each, every operation timed on its own."""
    base = _random_name(target, "meta")
    times: list[float] = []
    with target.paramiko() as sftp, target.measuring(settle=False, client=True) as usage:
        for i in range(cycles):
            name, renamed = f"{base}-{i}", f"{base}-{i}-r"
            ops: list[tuple[Callable[..., object], tuple[str, ...]]] = [
                (sftp.mkdir, (name,)), (sftp.rename, (name, renamed)), (sftp.rmdir, (renamed,))
            ]  # fmt: skip
            for op, args in ops:
                started = time.perf_counter()
                op(*args)
                times.append(time.perf_counter() - started)
    rate = _rate(len(times), times)
    return [Figure(f"mkdir+rename+rmdir x{cycles}", "metadata", rate, "ops/s", usage)]


def stat_and_list(target: Target, work: Path, count: int) -> list[Figure]:
    """Setup: a directory of 10 files of 1 KiB. Then ``count`` stats of its files and
    ``count // 2`` listings (``ls -l``: OPENDIR, READDIR with attributes, CLOSE), each
    operation timed on its own and each group measured for CPU and RSS on its own."""
    directory = _random_name(target, "stat")
    names = [f"{directory}/f{i}" for i in range(10)]
    figures: list[Figure] = []
    with target.paramiko() as sftp:
        sftp.mkdir(directory)
        for name in names:
            with sftp.open(name, "wb") as f:
                f.write(os.urandom(1024))
        stats: list[float] = []
        with target.measuring(settle=False, client=True) as usage:
            for i in range(count):
                started = time.perf_counter()
                sftp.stat(names[i % len(names)])
                stats.append(time.perf_counter() - started)
        figures.append(Figure(f"stat x{count}", "metadata", _rate(count, stats), "ops/s", usage))
        listings: list[float] = []
        with target.measuring(settle=False, client=True) as usage:
            for _ in range(count // 2):
                started = time.perf_counter()
                if len(sftp.listdir_attr(directory)) != len(names):
                    raise BenchFailure(f"{target.name}: ls -l of {directory} lost entries")
                listings.append(time.perf_counter() - started)
        name = f"ls -l of 10 entries x{count // 2}"
        figures.append(Figure(name, "metadata", _rate(count // 2, listings), "ops/s", usage))
    return figures


def list_many(
    target: Target, work: Path, count: int, repeat: int = 3, cycles: int = 50
) -> list[Figure]:
    """Setup: ``count`` empty files in a new directory. Then ``repeat`` listings of it
    (``ls -l``), and ``cycles`` times a new file created, renamed and removed in it (a
    temporary file beside many others), each operation timed on its own. The creation's
    CLOSE is durable on the gateway (OpenSSH's is not), so no target is set for it."""
    directory = _random_name(target, "many")
    times: list[float] = []
    with target.paramiko() as sftp:
        sftp.mkdir(directory)
        for i in range(count):
            sftp.open(f"{directory}/e{i}", "wb").close()
        with target.measuring(settle=False) as usage:
            for _ in range(repeat):
                started = time.perf_counter()
                found = len(sftp.listdir_attr(directory))
                times.append(time.perf_counter() - started)
                if found != count:
                    raise BenchFailure(f"{target.name}: ls -l found {found} of {count} entries")
        changes: list[float] = []
        with target.measuring(settle=False) as changing:
            for i in range(cycles):
                name, renamed = f"{directory}/new-{i}", f"{directory}/new-{i}.done"
                for op, args in ((_create, (sftp, name)), (sftp.rename, (name, renamed)),
                                 (sftp.remove, (renamed,))):  # fmt: skip
                    started = time.perf_counter()
                    op(*args)
                    changes.append(time.perf_counter() - started)
    rate = _rate(count * repeat, times)
    return [
        Figure(f"ls -l of {count} entries", "metadata", rate, "entries/s", usage),
        Figure(f"create+rename+rm among {count}", "changes", _rate(len(changes), changes),
               "ops/s", changing),
    ]  # fmt: skip


def _create(sftp: paramiko.SFTPClient, name: str) -> None:
    sftp.open(name, "wb").close()


def close_after_large_write(target: Target, work: Path, size: int) -> list[Figure]:
    """Write ``size`` bytes with paramiko (pipelined), then time the CLOSE alone; and the
    server's peak RSS over the write and the CLOSE."""
    block = os.urandom(MiB)
    with target.paramiko() as sftp, target.measuring(settle=False) as usage:
        f = sftp.open(_random_name(target, "large") + ".bin", "wb")
        f.set_pipelined(True)
        for _ in range(size // MiB):
            f.write(block)
        f.flush()
        started = time.perf_counter()
        f.close()
        seconds = time.perf_counter() - started
    figures = [Figure(f"CLOSE after writing {size // MiB} MiB", "close", seconds * 1000, "ms")]
    if usage.rss is not None:
        figures.append(Figure(f"peak RSS writing {size // MiB} MiB", "rss", usage.rss, "MiB"))
    for figure in figures:
        figure.usage = usage
    return figures


def make_tree(path: Path, files: int) -> int:
    """A copy of a real source tree: the first ``files`` files of Twisted, sorted; its bytes."""
    import twisted

    source = Path(twisted.__file__).parent
    chosen = sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    total = 0
    for p in chosen[:files]:
        dest = path / p.relative_to(source.parent)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dest)
        total += p.stat().st_size
    return total


def copy_tree(source: Path, remote: Path, who: str) -> None:
    """``cp -r`` a tree in (BenchFailure with cp's message if it fails)."""
    done = subprocess.run(["cp", "-r", str(source), str(remote)], capture_output=True, text=True,
                          timeout=1800)  # fmt: skip
    if done.returncode != 0:
        raise BenchFailure(f"{who}: cp -r onto sshfs failed: {done.stderr.strip()[-2000:]}")


def tar_tree(remote: Path, least: int, who: str) -> int:
    """``tar c`` a tree into a pipe whose every byte is read (GNU tar reads no file when it
    writes to /dev/null); the archive's size. BenchFailure if tar says anything on stderr
    (such as "file changed as we read it"), exits non-zero, or archives less than ``least``
    bytes."""
    with tempfile.TemporaryFile() as errors:
        with subprocess.Popen(
            ["tar", "cf", "-", "-C", str(remote), "."], stdout=subprocess.PIPE, stderr=errors
        ) as tar:
            assert tar.stdout is not None
            size = 0
            try:
                while chunk := tar.stdout.read(MiB):
                    size += len(chunk)
            except BaseException:
                tar.kill()
                raise
        errors.seek(0)
        said = errors.read().decode(errors="replace").strip()
    if tar.returncode != 0 or said:
        raise BenchFailure(f"{who}: tar c of the sshfs tree (exit {tar.returncode}): {said}")
    if size < least:
        raise BenchFailure(f"{who}: tar c archived {size} bytes of a {least}-byte tree")
    return size


def compare_trees(source: Path, remote: Path, who: str) -> None:
    """``diff -r``; BenchFailure with diff's output when it finds a difference or fails."""
    done = subprocess.run(["diff", "-r", str(source), str(remote)], capture_output=True,
                          text=True, timeout=1800)  # fmt: skip
    if done.returncode != 0:
        what = "found differences" if done.returncode == 1 else f"failed ({done.returncode})"
        output = (done.stdout + done.stderr).strip()
        raise BenchFailure(f"{who}: diff -r of the sshfs tree {what}:\n{output[:3000]}")


def sshfs_tree(target: Target, work: Path, files: int) -> list[Figure]:
    """Through sshfs: ``cp -r`` a source tree in, ``tar c`` it back out, ``diff -r`` it; each
    part timed and measured on its own, and the three together."""
    tree = work / f"tree-{files}"
    if not tree.exists():
        make_tree(tree, files)
    least = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    parts: list[tuple[str, Callable[[Path], object]]] = [
        ("cp", lambda remote: copy_tree(tree, remote, target.name)),
        ("tar", lambda remote: tar_tree(remote, least, target.name)),
        ("diff", lambda remote: compare_trees(tree, remote, target.name)),
    ]
    figures: list[Figure] = []
    with sshfs_mount(target, work / f"mnt-{target.name}") as mount:
        remote = mount / f"tree-{random.randrange(10**9)}"
        for part, run in parts:
            with target.measuring(settle=False) as usage:
                started = time.perf_counter()
                run(remote)
                seconds = time.perf_counter() - started
            name = f"sshfs {part} {files} files"
            figures.append(Figure(name, "sshfs part", seconds, "s", usage))
    cpu = [f.usage.cpu for f in figures if f.usage is not None]
    rss = [f.usage.rss for f in figures if f.usage is not None and f.usage.rss is not None]
    steal = [f.usage.steal for f in figures if f.usage is not None and f.usage.steal is not None]
    total = Usage(
        cpu=None if None in cpu else sum(c for c in cpu if c is not None),
        rss=max(rss) if rss else None,
        steal=max(steal) if steal else None,
    )
    name = f"sshfs cp+tar+diff {files} files"
    return [Figure(name, "sshfs", sum(f.value for f in figures), "s", total), *figures]
