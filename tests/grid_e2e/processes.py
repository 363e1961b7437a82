"""Storage nodes run as real processes on loopback: ours (``gateway``) and Tahoe-LAFS 1.20's.

Used by the end-to-end tests in this package and by ``misc/bench_objects.py``;
no pytest here. Every node is stopped by its own pid (SIGTERM, then SIGKILL),
never by name.
"""

from __future__ import annotations

import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from storage import wire
from storage.tls import load_tls_credentials

ROOT = Path(__file__).resolve().parents[2]
TAHOE = ROOT / ".venv-tahoe" / "bin" / "tahoe"

START_TIMEOUT = 90.0
N = TypeVar("N", "OurStorageNode", "TahoeStorageNode")


def readable(fd: Any, timeout: float) -> bool:
    """Whether ``fd`` (a descriptor or a socket; a pidfd once its process exited) is
    readable within ``timeout`` seconds. ``poll``, not ``select``: a test process may hold
    more than 1,024 descriptors, which ``select`` refuses."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_KEPT: set[int] = set()
_KEPT_LOCK = threading.Lock()
"""Held while a port is picked: a grid's nodes are started from several threads at once
(:func:`_start_all`), and two picking together could both find the same port free."""


def kept_port() -> int:
    """A port for a storage node that must come back on it after a kill (its NURL names
    it): below the range the kernel hands out for port 0 and for outgoing connections, so
    nothing takes it while the node is down; each xdist worker picks in a slice of its own.
    Where that range starts too low to leave room, any free port (the old behaviour)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    slice_start = 20000 + (int(worker) % 8 if worker.isdigit() else 0) * 1000
    if low < slice_start + 1000:
        return free_port()
    first = random.randrange(1000)
    with _KEPT_LOCK:
        for step in range(1000):
            port = slice_start + (first + step) % 1000
            if port in _KEPT:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _KEPT.add(port)
            return port
    raise RuntimeError(f"no free port in {slice_start}-{slice_start + 999}")


def pid_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except (FileNotFoundError, IndexError):
        return True
    return state == "Z"


def stop_pid(pid: int, timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to ``pid`` (SIGKILL after ``timeout`` s) and wait until it is gone.

    The wait is on a pidfd, which becomes readable when the process exits
    (whether or not its parent has reaped it yet).
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        for s in (sig, signal.SIGKILL):
            try:
                os.kill(pid, s)
            except ProcessLookupError:
                return
            if readable(pidfd, timeout):
                return
    finally:
        os.close(pidfd)


def _wait_listening(port: int, alive: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what} exited while starting")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not start listening on port {port} in time")


class OurStorageNode:
    """One of our storage nodes: ``gateway create-storage DIR`` and ``gateway start DIR``."""

    def __init__(self, node_dir: Path, nickname: str, reserved_space: str = "10M") -> None:
        self.node_dir = node_dir
        self.nickname = nickname
        created = self._gateway(
            "create-storage", str(node_dir), "--nickname", nickname,
            "--reserved-space", reserved_space, "--port", str(kept_port()),
        )  # fmt: skip
        self.nurl = created.strip().splitlines()[-1].strip()
        wire.parse_nurl(self.nurl)  # the last line of the output is the NURL
        self.pid: int | None = None

    @staticmethod
    def _gateway(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            capture_output=True, text=True, timeout=START_TIMEOUT, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"gateway {args[0]} failed: {proc.stdout}{proc.stderr}")
        return proc.stdout

    @property
    def shares_dir(self) -> Path:
        """Where complete shares live: ``shares/<prefix>/<si>/<shnum>``."""
        return self.node_dir / "storage" / "shares"

    def start(self) -> None:
        """``gateway start`` (it daemonizes); remember the pid it wrote."""
        self._gateway("start", str(self.node_dir))
        text = (self.node_dir / "node.pid").read_text().strip()
        self.pid = int(text)
        port = wire.parse_nurl(self.nurl).port
        pid = self.pid
        _wait_listening(port, lambda: not pid_gone(pid), f"storage node {self.nickname}")

    def kill(self) -> None:
        """SIGKILL the node by pid (a crash) and wait until it is gone."""
        if self.pid is not None:
            stop_pid(self.pid, sig=signal.SIGKILL)
            self.pid = None

    def stop(self) -> None:
        """SIGTERM the node by pid (SIGKILL if it lingers)."""
        if self.pid is not None:
            stop_pid(self.pid)
            self.pid = None


def tahoe_nurl(node_dir: Path, port: int) -> str:
    """The HTTP storage NURL of a Tahoe 1.20 node: pin of node.pem, swissnum of storage.furl."""
    pem = (node_dir / "private" / "node.pem").read_bytes()
    furl = (node_dir / "private" / "storage.furl").read_text().strip()
    swissnum = furl.rsplit("/", 1)[1].encode("ascii")
    spki_hash = load_tls_credentials(pem, pem).spki_hash
    return wire.format_nurl(spki_hash, "127.0.0.1", port, swissnum)


class TahoeStorageNode:
    """An unmodified Tahoe-LAFS 1.20 storage node (``tahoe create-node`` + ``tahoe run``)."""

    def __init__(self, node_dir: Path, nickname: str) -> None:
        self.node_dir = node_dir
        self.nickname = nickname
        self.port = free_port()
        node_dir.parent.mkdir(parents=True, exist_ok=True)
        created = subprocess.run(
            [
                str(TAHOE), "create-node",
                f"--port=tcp:{self.port}:interface=127.0.0.1",
                f"--location=tcp:127.0.0.1:{self.port}",
                "--webport=none", f"--nickname={nickname}", str(node_dir),
            ],
            capture_output=True, text=True, timeout=START_TIMEOUT,
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(f"tahoe create-node failed: {created.stdout}{created.stderr}")
        config = node_dir / "tahoe.cfg"
        config.write_text(config.read_text().replace("reserved_space = 1G", "reserved_space = 0"))
        self.process: subprocess.Popen[bytes] | None = None
        self.nurl = ""

    @property
    def pid(self) -> int | None:
        """The ``tahoe run`` process id while it runs."""
        return self.process.pid if self.process is not None else None

    @property
    def shares_dir(self) -> Path:
        """Where Tahoe keeps complete shares: ``storage/shares/<prefix>/<si>/<shnum>``."""
        return self.node_dir / "storage" / "shares"

    def start(self) -> None:
        """``tahoe run`` as a child process; returns once it listens and its NURL is known."""
        with open(self.node_dir / "run.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(TAHOE), "run", "--allow-stdin-close", str(self.node_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        process = self.process
        furl = self.node_dir / "private" / "storage.furl"
        _wait_listening(
            self.port, lambda: process.poll() is None, f"tahoe storage node {self.nickname}"
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not furl.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the Tahoe node wrote no storage.furl")
            time.sleep(0.1)
        self.nurl = tahoe_nurl(self.node_dir, self.port)

    def kill(self) -> None:
        """SIGKILL the node by pid."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM the node by pid (SIGKILL if it lingers)."""
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        if self.process is not None:
            stop_pid(self.process.pid, sig=sig)
            self.process.wait(timeout=30)
            self.process = None


StorageNode = OurStorageNode | TahoeStorageNode


def start_our_grid(root: Path, count: int, reserved_space: str = "10M") -> list[OurStorageNode]:
    """Create and start ``count`` of our storage nodes under ``root`` (in parallel)."""

    def make(i: int) -> OurStorageNode:
        node = OurStorageNode(root / f"ours-{i}", f"ours-{i}", reserved_space)
        node.start()
        return node

    return _start_all(make, count)


def start_tahoe_grid(root: Path, count: int) -> list[TahoeStorageNode]:
    """Create and start ``count`` Tahoe-LAFS 1.20 storage nodes under ``root`` (in parallel)."""

    def make(i: int) -> TahoeStorageNode:
        node = TahoeStorageNode(root / f"tahoe-{i}", f"tahoe-{i}")
        node.start()
        return node

    return _start_all(make, count)


def _start_all(make: Callable[[int], N], count: int) -> list[N]:
    nodes: list[N] = []
    errors: list[BaseException] = []
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(make, i) for i in range(count)]
        for f in futures:
            try:
                nodes.append(f.result())
            except BaseException as e:  # keep the others so they can be stopped
                errors.append(e)
    if errors:
        stop_all(nodes)
        raise errors[0]
    return nodes


def stop_all(nodes: Sequence[StorageNode]) -> None:
    """Stop every node (by pid), ignoring ones already gone."""
    for node in nodes:
        node.stop()
