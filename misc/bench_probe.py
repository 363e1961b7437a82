"""What a server costs while a benchmark workload runs: CPU seconds and peak RSS (Linux /proc).

A server is a process tree: our gateway or Tahoe's client node is one long-lived
process (with its children, if it ever has any); OpenSSH's ``sshd`` listener
forks a process per connection (``sshd [priv]`` and its unprivileged child, in
which ``internal-sftp`` runs), and those exit with the session.

CPU: ``utime + stime + cutime + cstime`` from ``/proc/PID/stat``, summed over
the root process and every live descendant. A session process that exited and
was reaped moves its time into its parent's ``cutime``/``cstime``, so the sum
stays exact across exits, except when a process exits between the reads of one
sum (counted twice or not at all). For a server that forks per session
(``settle``), a reading therefore waits until no session process is left; if
one stays (a session the client holds open), the figure is ``None`` rather
than a guess. A long-lived server is read at once.

Peak RSS: ``VmHWM`` summed over the tree, after writing ``5`` to every
process's ``clear_refs`` (which resets ``VmHWM`` to the current RSS, Linux >=
4.0) when the workload starts. A forking server's sessions are gone when the
workload ends, so their peak is unknown: ``None``.

Steal: the share of the machine's CPU time its host took for others while a
workload ran (``steal`` in ``/proc/stat``). On a virtual machine every figure
moves with it (4 s of 12.7 s in one run, nothing in the next, on the machine
docs/performance.rst was measured on), so the benchmarks report it beside
their figures: a ratio taken while the host took a fifth of the machine says
little.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs

TICK = os.sysconf("SC_CLK_TCK")
SETTLE_TIMEOUT = 10.0
"""How long a reading waits for a forking server's session processes to exit."""


def machine_cpu() -> tuple[float, float] | None:
    """(steal, all) CPU seconds of the whole machine so far, summed over its CPUs, from
    ``/proc/stat`` (all: every state, idle included); None without that figure."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    ticks = [int(field) for field in fields[1:9]]  # user .. steal
    return ticks[7] / TICK, sum(ticks) / TICK


def steal_share(
    before: tuple[float, float] | None, after: tuple[float, float] | None
) -> float | None:
    """The share (0 to 1) of the machine's CPU time the host took between two
    :func:`machine_cpu` readings; None without both (or with no time between them)."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def _stat_fields(pid: int) -> list[str]:
    """``/proc/PID/stat`` from field 3 (state) on: after the ``(comm)``, which may hold spaces."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used itself (not its children)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / TICK


def _cpu_with_reaped(pid: int) -> float:
    """A process's own CPU time plus that of its children it has reaped."""
    fields = _stat_fields(pid)
    return sum(int(f) for f in fields[11:15]) / TICK


def descendants(pid: int) -> list[int]:
    """Every live (not zombie) descendant of ``pid``, found by walking ``/proc``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = _stat_fields(int(stat.parent.name))
        except (OSError, ValueError):
            continue  # exited meanwhile
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children.get(child, [])
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid``, its reaped children and every live descendant."""
    total = 0.0
    for member in [pid, *descendants(pid)]:
        try:
            total += _cpu_with_reaped(member)
        except OSError:
            pass  # exited between the walk and the read: its time is now its parent's
    return total


def vm_hwm_kib(pid: int) -> int:
    """A process's peak resident set size (``VmHWM``) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def reset_hwm(pid: int) -> None:
    """Reset a process's ``VmHWM`` to its current RSS (Linux >= 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _settled(pid: int, timeout: float = SETTLE_TIMEOUT) -> bool:
    """Wait until ``pid`` has no live descendant; whether it came to that in ``timeout``."""
    deadline = time.monotonic() + timeout
    while descendants(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)  # another process's children: /proc is all there is to watch
    return True


@attrs.define
class Usage:
    """What the server used during one measured stretch (None: not known reliably)."""

    cpu: float | None = None  # CPU seconds
    rss: float | None = None  # peak RSS, MiB
    steal: float | None = None  # share of the machine's CPU time its host took meanwhile
    client: float | None = None  # the client's CPU share of the stretch (an in-process one)


@contextmanager
def measuring(
    pid: int | None, forks: bool, settle: bool = True, client: bool = False
) -> Iterator[Usage]:
    """Measure the server rooted at ``pid`` while the block runs; fill the yielded Usage after.

    ``forks``: the server forks a process per session (OpenSSH), so its peak RSS is
    unknown and, with ``settle``, each reading first waits for the sessions to be gone
    (without ``settle`` the sessions must stay open throughout, as an sshfs mount's does).
    ``client``: the block's client runs in this process (paramiko), and its share of the
    block's time is measured too: this process's CPU seconds over the wall seconds. A
    client waits for each answer before its next request, so no server can make an
    operation take less than the client's own CPU time for it."""
    usage = Usage()
    machine = machine_cpu()
    if pid is None:
        with _client_share(usage, client):
            yield usage
        usage.steal = steal_share(machine, machine_cpu())
        return
    reliable = not (forks and settle) or _settled(pid)
    if not forks:
        for member in [pid, *descendants(pid)]:
            reset_hwm(member)
    before = tree_cpu_seconds(pid)
    with _client_share(usage, client):
        yield usage
    usage.steal = steal_share(machine, machine_cpu())
    reliable = reliable and (not (forks and settle) or _settled(pid))
    usage.cpu = tree_cpu_seconds(pid) - before if reliable else None
    if not forks:
        usage.rss = sum(vm_hwm_kib(m) for m in [pid, *descendants(pid)]) / 1024


@contextmanager
def _client_share(usage: Usage, client: bool) -> Iterator[None]:
    """With ``client``, set ``usage.client`` to this process's CPU share of the block."""
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    took = time.perf_counter() - wall
    if client and took > 0:
        usage.client = (time.process_time() - cpu) / took


def idle_cpu(pid: int, timeout: float) -> bool:
    """Wait until a server's process tree uses no CPU (under 20 ms) for a quarter of a
    second; whether it did within ``timeout``."""
    deadline = time.monotonic() + timeout
    before = tree_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)  # sampling another process's state: nothing to await
        now = tree_cpu_seconds(pid)
        if now - before < 0.02:
            return True
        before = now
    return False


def file_create_ms(directory: Path, count: int = 50) -> float:
    """Median milliseconds to create a directory and a small file in it, under ``directory``
    (removed afterwards). The embedded storage creates both for every new object, OpenSSH
    one file per file uploaded; on ext4 it moves between tens of microseconds and over a
    millisecond with the state of the block groups near ``directory``, so every run
    reports it beside its figures."""
    probe = Path(tempfile.mkdtemp(prefix="create-probe-", dir=directory))
    times: list[float] = []
    try:
        for i in range(count):
            started = time.perf_counter()
            sub = probe / str(i)
            sub.mkdir()
            fd = os.open(sub / "f", os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, b"x" * 100)
            os.close(fd)
            times.append(time.perf_counter() - started)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return round(statistics.median(times) * 1e3, 3)


@contextmanager
def profiled(pid: int | None, name: str, directory: Path | None) -> Iterator[None]:
    """``py-spy record -f raw`` of process ``pid`` while the block runs, into
    ``DIR/<name>.txt`` (no-op without a DIR or a pid: OpenSSH is not profiled)."""
    if directory is None or pid is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{''.join(c if c.isalnum() else '-' for c in name)}.txt"
    spy = Path(sys.executable).parent / "py-spy"
    proc = subprocess.Popen(
        [str(spy), "record", "-f", "raw", "--nonblocking", "-r", "250"]
        + ["-p", str(pid), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        proc.wait(timeout=120)
