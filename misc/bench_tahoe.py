"""Tahoe-LAFS 1.20's own SFTP frontend as a target of ``misc/bench.py --with-tahoe``.

Five unmodified Tahoe-LAFS 1.20 storage nodes and one Tahoe client node, all
from ``.venv-tahoe`` and all on 127.0.0.1: encoding 3/5/5, the storage servers
listed in the client's ``private/servers.yaml`` with their NURLs so the client
speaks the HTTP storage protocol. The client runs Tahoe's SFTP frontend
(``[sftpd]``) with an ed25519 host key and one account, ``bench``, authorized by
the benchmark's client key (Tahoe 1.20 accepts ssh-ed25519 keys there), whose
root is a fresh directory made with ``tahoe mkdir``. Tahoe reads its accounts
file only at startup and only a running node can make a directory, so the
client node is started once to make it, then stopped and started again with
the frontend enabled.

Every process is stopped by its pid (SIGTERM, then SIGKILL), also on errors.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench_targets import Target, free_port

from tests.grid_e2e.processes import TAHOE, TahoeStorageNode, stop_all, stop_pid
from tests.interop.tahoe_static import write_servers_yaml

SERVERS = 5
NEEDED, HAPPY, TOTAL = 3, 5, 5
START_TIMEOUT = 120.0
USER = "bench"
SFTP_ENV = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "USER", "LOGNAME")}
"""The environment ``sftp`` gets against Tahoe: none of the variables ssh_config's ``SendEnv``
sends (Debian: ``LANG LC_*``). In the Twisted that Tahoe runs on (26.10 in ``.venv-tahoe``) an
SSH ``env`` request adapts the avatar to ``ISession`` (Tahoe's ``ShellSession``), which then
gets the channel's EOF and ignores it: the channel is never closed and ``sftp`` hangs on exit
after its last command (twisted/twisted#10308 and PR #1701 changed how EOF reaches a session)."""


def tahoe_available() -> bool:
    """Whether ``.venv-tahoe`` holds a runnable ``tahoe`` (``misc/test`` installs it)."""
    return os.access(TAHOE, os.X_OK)


class TahoeClientNode:
    """A client-only Tahoe 1.20 node (``tahoe create-client``), run with ``tahoe run``."""

    def __init__(self, node_dir: Path, storage: list[TahoeStorageNode]) -> None:
        self.node_dir = node_dir
        self.servers = {node.nickname: node.nurl for node in storage}
        self.web_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.run(
            "create-client",
            f"--webport=tcp:{self.web_port}:interface=127.0.0.1",
            f"--shares-needed={NEEDED}",
            f"--shares-happy={HAPPY}",
            f"--shares-total={TOTAL}",
            "--nickname=bench-sftp",
            str(node_dir),
            node=False,
        )
        write_servers_yaml(node_dir, self.servers)

    def run(self, *args: str, node: bool = True) -> str:
        """``tahoe [-d NODE_DIR] ARGS``; its stdout (RuntimeError if it fails)."""
        argv = [str(TAHOE), *(("-d", str(self.node_dir)) if node else ()), *args]
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=START_TIMEOUT, stdin=subprocess.DEVNULL
        )
        if proc.returncode != 0:
            raise RuntimeError(f"tahoe {args[0]} failed: {proc.stdout}{proc.stderr}")
        return proc.stdout

    @property
    def pid(self) -> int | None:
        """The ``tahoe run`` process id while it runs."""
        return self.process.pid if self.process is not None else None

    def enable_sftp(self, port: int, host_key: Path, accounts: Path) -> None:
        """Add an ``[sftpd]`` section: the frontend on 127.0.0.1:``port``."""
        with open(self.node_dir / "tahoe.cfg", "a") as config:
            config.write(
                "\n[sftpd]\nenabled = true\n"
                f"port = tcp:{port}:interface=127.0.0.1\n"
                f"host_pubkey_file = {host_key}.pub\n"
                f"host_privkey_file = {host_key}\n"
                f"accounts.file = {accounts}\n"
            )

    def start(self, log: Path) -> None:
        """``tahoe run`` as a child process; returns once every storage server is connected."""
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [str(TAHOE), "run", "--allow-stdin-close", str(self.node_dir)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while self.connected() != set(self.servers):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Tahoe client did not connect to its servers; see {log}")
            time.sleep(0.2)  # an external daemon: nothing to await but its web API

    def connected(self) -> set[str]:
        """Nicknames of the storage servers the node calls connected (empty while it starts)."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"tahoe run exited with {self.process.returncode}")
        try:
            url = f"http://127.0.0.1:{self.web_port}/?t=json"
            with urllib.request.urlopen(url, timeout=5) as response:
                page: dict[str, Any] = json.loads(response.read())
        except OSError:
            return set()
        return {s["nickname"] for s in page["servers"] if s["connection_status"] == "connected"}

    def stop(self) -> None:
        """SIGTERM the node by pid (SIGKILL if it lingers) and reap it."""
        if self.process is not None:
            stop_pid(self.process.pid)
            self.process.wait(timeout=30)
            self.process = None


def _wait_for_port(port: int, node: TahoeClientNode) -> None:
    """Wait until the SFTP frontend accepts connections (RuntimeError if the node exits)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if node.process is None or node.process.poll() is not None:
            raise RuntimeError("the Tahoe client node exited while starting its SFTP frontend")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)  # an external daemon: nothing to await but its port
    raise RuntimeError(f"Tahoe's SFTP frontend did not listen on port {port}")


@contextmanager
def tahoe_target(work: Path, key: Path) -> Iterator[Target]:
    """Tahoe-LAFS 1.20's SFTP frontend on a 5-node 3/5/5 grid of Tahoe storage nodes.

    ``key`` is the benchmark's client key (``key`` and ``key.pub``); its public
    half authorizes the account. The target's ``pid`` is the client node's, so
    the benchmark can wait for it to go idle between workloads."""
    root = work / "tahoe"
    root.mkdir()
    storage: list[TahoeStorageNode] = []
    client: TahoeClientNode | None = None
    try:
        # Not start_tahoe_grid(): a node whose start fails after spawning ``tahoe run`` would be
        # left out of its list, and so left running; here every node spawned is stopped below.
        storage = [
            TahoeStorageNode(root / "storage" / f"tahoe-{i}", f"tahoe-{i}") for i in range(SERVERS)
        ]
        with ThreadPoolExecutor(SERVERS) as pool:
            list(pool.map(TahoeStorageNode.start, storage))
        client = TahoeClientNode(root / "client", storage)
        log = root / "client.log"
        client.start(log)
        rootcap = client.run("mkdir").strip().splitlines()[-1]
        if not rootcap.startswith("URI:DIR2"):
            raise RuntimeError(f"tahoe mkdir gave no directory cap: {rootcap!r}")
        client.stop()

        host_key = root / "sftp_host_ed25519_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True
        )
        key_type, key_data = Path(f"{key}.pub").read_text().split()[:2]
        accounts = root / "accounts"
        accounts.write_text(f"{USER} {key_type} {key_data} {rootcap}\n")
        accounts.chmod(0o600)
        port = free_port()
        client.enable_sftp(port, host_key, accounts)
        client.start(log)
        _wait_for_port(port, client)
        target = Target("tahoe", port, USER, key, "")
        target.pid = client.pid
        target.env = SFTP_ENV
        yield target
    finally:
        if client is not None:
            client.stop()
        stop_all(storage)
