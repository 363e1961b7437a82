"""The SFTP servers ``misc/bench.py`` measures, started and stopped on loopback.

OpenSSH's ``sshd`` with ``internal-sftp`` (its own config, host key and
authorized key in the run's temp dir), our gateway on its embedded grid, and
our gateway on five of our storage nodes (3/5/5, "grid5"); ``misc/bench_tahoe.py``
adds Tahoe-LAFS's. Every process started here is stopped by its pid, also when
starting fails half-way or the run is interrupted; ``sshfs_mount`` unmounts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import paramiko

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: tests.grid_e2e is imported
    sys.path.insert(0, str(ROOT))

from bench_probe import Usage, idle_cpu, measuring  # noqa: E402

from tests.grid_e2e.processes import OurStorageNode, pid_gone, stop_pid  # noqa: E402

MiB = 1024 * 1024
SSH_OPTIONS = ["IdentitiesOnly=yes", "StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null",
               "LogLevel=ERROR"]  # fmt: skip


class BenchFailure(Exception):
    """The server under test did something wrong; the message says what."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Target:
    """An SFTP server under test: where it listens, how to log in, which processes it is."""

    def __init__(self, name: str, port: int, user: str, key: Path, root: str):
        self.name = name
        self.port = port
        self.user = user
        self.key = key
        self.root = root  # remote directory the workloads use
        self.pid: int | None = None  # the one process serving every session (gateway, Tahoe)
        self.listener_pid: int | None = None  # OpenSSH: the sshd that forks one per session
        self.env: dict[str, str] | None = None  # the environment of ``sftp`` (None: ours)
        self.web_url: str | None = None  # our gateway's status page
        self.helpers: list[int] = []  # its other processes (grid5's storage nodes)

    def batch(self, commands: str, work: Path) -> float:
        """Run an OpenSSH ``sftp -b`` batch; return its wall time in seconds."""
        script = work / "batch.txt"
        script.write_text(commands)
        options = [arg for option in SSH_OPTIONS for arg in ("-o", option)]
        started = time.perf_counter()
        result = subprocess.run(
            ["sftp", "-q", "-b", str(script), "-P", str(self.port), "-i", str(self.key),
             *options, f"{self.user}@127.0.0.1"],
            capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL, env=self.env,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"{self.name}: sftp batch failed: {result.stderr.strip()[:500]}")
        return elapsed

    @contextmanager
    def paramiko(self) -> Iterator[paramiko.SFTPClient]:
        """A paramiko SFTP session authenticated with the key, over a socket with Nagle's
        algorithm off.

        paramiko leaves Nagle on: once it has read 10 % of its channel window it sends a
        WINDOW_ADJUST, then its next request as a second small segment, which the kernel
        holds until the server's delayed ACK of the first (40 ms on Linux). A listing of
        1,000 entries took 5 ms or 45 ms by that lottery, against either server alike.
        OpenSSH's and PuTTY's clients write such messages together, or with Nagle off.
        """
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock)
        try:
            transport.connect(username=self.user, pkey=paramiko.PKey.from_path(self.key))
            client = paramiko.SFTPClient.from_transport(transport)
            assert client is not None
            yield client
        finally:
            transport.close()

    def measuring(self, settle: bool = True, client: bool = False) -> AbstractContextManager[Usage]:
        """The server's CPU and peak RSS while the block runs, and with ``client`` the
        in-process client's CPU share (``bench_probe.measuring``)."""
        if self.pid is not None:
            return measuring(self.pid, forks=False, client=client)
        return measuring(self.listener_pid, forks=True, settle=settle, client=client)

    def quiesce(self, timeout: float = 600.0) -> None:
        """Wait until the server is idle: our gateway's upload queue drained and every
        directory change published (its status page says), then no CPU used for a quarter
        of a second by it and by each of its other processes (grid5's storage nodes;
        OpenSSH: nothing outlives a session). Background work of earlier
        workloads would otherwise count in the next one, and a download be served from
        staging; the ``idle`` column is measured after this."""
        deadline = time.monotonic() + timeout
        drain(self, timeout)
        for pid in [] if self.pid is None else [self.pid, *self.helpers]:
            if not idle_cpu(pid, deadline - time.monotonic()):
                print(f"bench: {self.name} kept using CPU for {timeout:.0f} s", file=sys.stderr)
                return


def status(target: Target) -> dict[str, Any]:
    """Our gateway's ``/status.json``."""
    assert target.web_url
    with urllib.request.urlopen(target.web_url.rstrip("/") + "/status.json", timeout=60) as r:
        return dict(json.loads(r.read()))


def drain(target: Target, timeout: float = 3600.0, stall: float = 30.0) -> None:
    """Wait until our gateway's upload queue is empty and every directory change published
    (other servers: nothing to wait for). BenchFailure if that takes ``timeout``, or if for
    ``stall`` seconds jobs wait with none uploading and no retry scheduled (stuck: they
    would never drain), with the number of such jobs and their last error."""
    if not target.web_url:
        return
    deadline = time.monotonic() + timeout
    stuck_since: float | None = None
    while time.monotonic() < deadline:
        parts = status(target)["parts"]
        jobs = parts["upload queue"]["pending"]
        if not jobs and not parts["filesystem"].get("directory_changes_pending", 0):
            return
        if jobs and not any(job["uploading"] or job["next_retry"] for job in jobs):
            stuck_since = stuck_since or time.monotonic()
            if time.monotonic() - stuck_since > stall:
                errors = sorted({str(job["last_error"]) for job in jobs})
                raise BenchFailure(
                    f"{target.name}: {len(jobs)} uploads stuck in the queue (none uploading, no "
                    f"retry scheduled) for {stall:.0f} s; last errors: {'; '.join(errors)[:500]}"
                )
        else:
            stuck_since = None
        time.sleep(0.1)  # another process's queue: its status page is all there is to poll
    raise BenchFailure(f"{target.name}: the upload queue did not drain in {timeout:.0f} s")


def _wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("sshd exited; see its log")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)  # an external daemon: nothing to await but the port
    raise RuntimeError("sshd did not start listening")


@contextmanager
def openssh_target(work: Path, key: Path) -> Iterator[Target]:
    """sshd with internal-sftp, chrooted by ``-d`` to a temp directory."""
    home = work / "openssh-root"
    home.mkdir()
    host_key = work / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    authorized = work / "authorized_keys"
    shutil.copy(f"{key}.pub", authorized)
    authorized.chmod(0o600)
    port = free_port()
    config = work / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n"
        f"StrictModes no\nPidFile {work / 'sshd.pid'}\n"
        f"Subsystem sftp internal-sftp -d {home}\nForceCommand internal-sftp -d {home}\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    with open(work / "sshd.log", "w") as log:
        proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=log
        )
    try:
        _wait_for_port(port, proc)
        target = Target("openssh", port, os.environ.get("USER") or "root", key, str(home))
        target.listener_pid = proc.pid
        yield target
    finally:
        stop_pid(proc.pid)  # sshd -D: SIGTERM ends the listener; sessions end with their client
        proc.wait(timeout=30)


def _gateway(*args: str, python: str | None = None) -> subprocess.CompletedProcess[str]:
    """``gateway ARGS`` with ``python`` (this one by default), whose installed package runs,
    not a checkout in the current directory (``-m`` looks there first); RuntimeError if it
    fails."""
    result = subprocess.run(
        [python or sys.executable, "-m", "gateway", *args], capture_output=True, text=True,
        timeout=300, cwd="/",
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"gateway {args[0]} failed: {(result.stdout + result.stderr)[-1000:]}")
    return result


def _stop_node(node: Path, python: str | None = None) -> None:
    """``gateway stop`` a node directory, then make sure by pid (SIGTERM, SIGKILL) that its
    process is gone -- also when ``gateway start`` failed after the process was spawned."""
    pid_file = node / "node.pid"
    pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
    subprocess.run(
        [python or sys.executable, "-m", "gateway", "stop", str(node)], capture_output=True,
        timeout=300, cwd="/",
    )  # fmt: skip
    if pid is not None and not pid_gone(pid):
        stop_pid(pid)


@contextmanager
def gateway_target(
    work: Path,
    key: Path,
    name: str = "gateway",
    storage: list[str] | None = None,
    python: str | None = None,
) -> Iterator[Target]:
    """Our gateway, one account authorized by the key: the embedded grid, or ``storage`` NURLs
    with 3/5/5 encoding; the build installed for ``python`` (this Python's by default)."""
    node = (work / name).resolve()
    port = free_port()
    grid: list[str] = []
    for nurl in storage or []:
        grid += ["--storage", nurl]
    if storage:
        grid += ["--shares", "3/5/5"]
    _gateway("create", str(node), "--sftp-port", str(port), "--web-port", "0", *grid,
             python=python)  # fmt: skip
    _gateway("account", "add", str(node), "bench", "--ssh-key", f"{key.resolve()}.pub",
             python=python)  # fmt: skip
    try:
        started = _gateway("start", str(node), python=python)
        target = Target(name, port, "bench", key, "/")
        web = [w for w in started.stdout.split() if w.startswith("http://")]
        target.web_url = web[0] if web else None
        target.pid = int((node / "node.pid").read_text().split()[0])
        yield target
    finally:
        _stop_node(node, python)


@contextmanager
def grid_gateway_target(work: Path, key: Path) -> Iterator[Target]:
    """A gateway on five of our storage nodes (3/5/5), as separate processes on loopback."""
    root = work / "grid5-nodes"
    nodes: list[OurStorageNode] = []
    try:
        for i in range(5):  # one by one, so that every node spawned is in ``nodes``
            nodes.append(OurStorageNode(root / f"ours-{i}", f"ours-{i}", reserved_space="0"))
            nodes[-1].start()
        with gateway_target(work, key, "grid5", [n.nurl for n in nodes]) as target:
            target.helpers = [n.pid for n in nodes if n.pid is not None]
            yield target
    finally:
        for n in nodes:
            _stop_node(n.node_dir)


@contextmanager
def sshfs_mount(target: Target, mount: Path) -> Iterator[Path]:
    """The target's root mounted with sshfs (run in the foreground, so we hold its pid) at
    ``mount``; unmounted after, and the sshfs process gone."""
    mount.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        ["sshfs", "-f", f"{target.user}@127.0.0.1:{target.root}", str(mount),
         "-p", str(target.port), "-o", ",".join([f"IdentityFile={target.key}", *SSH_OPTIONS])],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not os.path.ismount(mount):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{target.name}: sshfs did not mount")
            time.sleep(0.05)  # another process's mount: nothing to await but the mount table
        yield mount
    finally:
        if os.path.ismount(mount):
            if subprocess.run(["fusermount3", "-u", str(mount)], capture_output=True).returncode:
                subprocess.run(["fusermount3", "-u", "-z", str(mount)], check=False, timeout=60)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stop_pid(proc.pid)
            proc.wait()
