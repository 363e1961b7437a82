"""Real processes for the durability tests: storage grids, gateways on them, fault injection.

Every storage node and gateway is stopped by its own pid in a finalizer (a
SIGSTOPped node is continued first so it can be stopped); nothing is found or
killed by name. Waiting is done by polling a condition with a deadline.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from tests.grid_e2e.processes import OurStorageNode, pid_gone, start_our_grid, stop_pid
from tests.nodes import NodeReaper, gateway, node_pid
from tests.sftp.gateway_node import RunningGateway, restart_gateway, start_gateway

KiB = 1024
MiB = 1024 * KiB


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something true; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


class Grid:
    """Storage node processes on loopback, with crash, stop and continue by pid."""

    def __init__(self, nodes: list[OurStorageNode]) -> None:
        self.nodes = nodes
        self.stopped: set[int] = set()

    @property
    def nurls(self) -> list[str]:
        """Every node's NURL."""
        return [node.nurl for node in self.nodes]

    def freeze(self, index: int) -> None:
        """SIGSTOP a node: its port still accepts connections, but nothing answers."""
        pid = self.nodes[index].pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        self.stopped.add(index)

    def thaw(self, index: int) -> None:
        """SIGCONT a frozen node."""
        pid = self.nodes[index].pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        self.stopped.discard(index)

    def kill(self, index: int) -> None:
        """SIGKILL a node (a crash)."""
        self.thaw(index)
        self.nodes[index].kill()

    def restart(self, index: int) -> None:
        """Start a killed node again (same directory, port and NURL)."""
        self.nodes[index].start()

    def shutdown(self) -> None:
        """Continue frozen nodes and stop every node by pid."""
        for index in list(self.stopped):
            self.thaw(index)
        for node in self.nodes:
            node.stop()


@pytest.fixture
def make_grid(tmp_path: Path) -> Iterator[Callable[[int], Grid]]:
    """A factory of storage grids (``make_grid(5)``); every node is stopped after the test."""
    grids: list[Grid] = []

    def make(count: int) -> Grid:
        grid = Grid([])
        grids.append(grid)
        grid.nodes = start_our_grid(tmp_path / f"grid{len(grids)}", count, reserved_space="1M")
        return grid

    yield make
    for grid in grids:
        grid.shutdown()


def grid_gateway(
    tmp_path: Path,
    reaper: NodeReaper,
    grid: Grid,
    shares: str,
    name: str = "gw",
    settings: dict[str, dict[str, str]] | None = None,
    root_from: Path | None = None,
) -> RunningGateway:
    """A gateway on ``grid`` with erasure coding ``shares`` (``k/happy/N``).

    ``settings`` are written into node.cfg before the first start; ``root_from``
    gives the account the root capability of the same account on another gateway.
    """
    storage = [arg for nurl in grid.nurls for arg in ("--storage", nurl)]

    def configure(node_dir: Path) -> None:
        if settings:
            set_config(node_dir, settings)
        if root_from is not None:
            share_root(root_from, node_dir)

    return start_gateway(
        tmp_path, reaper, *storage, "--shares", shares, name=name, configure=configure
    )


def set_config(node_dir: Path, settings: dict[str, dict[str, str]]) -> None:
    """Set keys in node.cfg (sections are created when missing)."""
    import configparser

    path = node_dir / "node.cfg"
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    for section, values in settings.items():
        if not parser.has_section(section):
            parser.add_section(section)
        for key, value in values.items():
            parser.set(section, key, value)
    with open(path, "w") as f:
        parser.write(f)


def share_root(source: Path, target: Path, user: str = "alice") -> None:
    """Give ``user`` on node ``target`` the root directory of ``user`` on node ``source``."""
    accounts = json.loads((source / "private" / "accounts.json").read_text())
    root = accounts["accounts"][user]["root_cap"]
    path = target / "private" / "accounts.json"
    mine = json.loads(path.read_text())
    mine["accounts"][user]["root_cap"] = root
    path.write_text(json.dumps(mine))


def kill_gateway(gw: RunningGateway | Path) -> None:
    """SIGKILL a gateway by the pid in its node directory and wait until it is gone."""
    node_dir = gw if isinstance(gw, Path) else gw.node_dir
    pid = node_pid(node_dir)
    assert pid is not None
    stop_pid(pid, sig=signal.SIGKILL)
    assert pid_gone(pid)


def stop_gateway(gw: RunningGateway) -> None:
    """``gateway stop`` (must succeed)."""
    stopped = gateway("stop", gw.node_dir, timeout=180)
    assert stopped.code == 0, stopped.err


def restart(gw: RunningGateway) -> RunningGateway:
    """Start a stopped or killed gateway again."""
    return restart_gateway(gw.node_dir, gw.user)


def status(gw: RunningGateway) -> dict[str, Any]:
    """The gateway's ``/status.json``."""
    with urllib.request.urlopen(gw.web_url.rstrip("/") + "/status.json", timeout=30) as r:
        return dict(json.loads(r.read()))


def upload_queue(gw: RunningGateway) -> list[dict[str, Any]]:
    """The 'upload queue' part of ``/status.json``: the pending uploads."""
    return list(status(gw)["parts"]["upload queue"]["pending"])


def directory_changes(gw: RunningGateway) -> int:
    """Directory changes journaled and not yet published (``/status.json``)."""
    return int(status(gw)["parts"]["filesystem"].get("directory_changes_pending", 0))


def wait_drained(gw: RunningGateway, timeout: float = 120.0) -> None:
    """Poll the status JSON until the upload queue is empty and every directory change is
    published."""
    wait_for(
        lambda: not upload_queue(gw) and not directory_changes(gw),
        timeout,
        "the upload queue to drain",
        every=0.25,
    )


class Session:
    """A paramiko SFTP session that closes its transport when done."""

    def __init__(self, gw: RunningGateway) -> None:
        self.transport, self.sftp = gw.sftp()

    def __enter__(self) -> paramiko.SFTPClient:
        return self.sftp

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the SSH transport (safe twice, safe after the server died)."""
        try:
            self.transport.close()
        except Exception:
            pass


def sha(data: bytes) -> str:
    """SHA-256 (hex)."""
    return hashlib.sha256(data).hexdigest()


def read_all(sftp: paramiko.SFTPClient, path: str) -> bytes:
    """A whole file over SFTP (prefetched)."""
    with sftp.open(path, "rb") as f:
        f.prefetch()
        return f.read()


def put_bytes(
    sftp: paramiko.SFTPClient,
    path: str,
    data: bytes,
    mtime: int | None = None,
    pipelined: bool = True,
) -> None:
    """Write a file and close it; set its mtime afterwards when given.

    paramiko drops the errors of pipelined writes at close, so a test that needs to see a
    refused WRITE passes ``pipelined=False``.
    """
    with sftp.open(path, "wb") as f:
        f.set_pipelined(pipelined)
        f.write(data)
    if mtime is not None:
        sftp.utime(path, (mtime, mtime))
