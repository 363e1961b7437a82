"""Raw TCP connections from chosen loopback sources, and what a test reads of a gateway while
they are open (its status page, its log), for the pre-auth and session-limit tests."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko

from gateway.config import update_config
from tests.grid_e2e.processes import readable
from tests.sftp.gateway_node import RunningGateway


def configured(**settings: str) -> Callable[[Path], None]:
    """A ``configure`` for start_gateway that sets ``[sftp]`` keys in node.cfg."""

    def configure(node_dir: Path) -> None:
        update_config(node_dir / "node.cfg", {("sftp", k): v for k, v in settings.items()})

    return configure


@contextmanager
def held_sockets() -> Iterator[list[socket.socket]]:
    """A list of sockets, every one closed at the end."""
    sockets: list[socket.socket] = []
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def connect(gw: RunningGateway, source: str = "127.0.0.1") -> socket.socket:
    """A TCP connection to the gateway's SSH port from loopback address ``source``."""
    return socket.create_connection((gw.host, gw.port), timeout=10, source_address=(source, 0))


def first_line(sock: socket.socket, timeout: float = 10) -> bytes:
    """The first line the server sends (b'' if it closes first)."""
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def closed_by(sock: socket.socket, deadline: float) -> float | None:
    """When (monotonic) the server closed ``sock``, reading and dropping what it sends until
    then; None if it is still open at ``deadline``."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if readable(sock, left):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return time.monotonic()


def status(gw: RunningGateway) -> dict[str, object]:
    """The SFTP part's summary on the status page (``/status.json``)."""
    with urllib.request.urlopen(gw.web_url.rstrip("/") + "/status.json", timeout=10) as reply:
        parts: dict[str, dict[str, object]] = json.load(reply)["parts"]
    return parts["sftp"]


def eventually(check: Callable[[], bool], timeout: float = 20) -> None:
    """Wait until ``check()`` holds (polling another process's state), or fail."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def log_lines(gw: RunningGateway, text: str) -> list[str]:
    """The gateway's log lines that contain ``text``."""
    log = (gw.node_dir / "logs" / "node.log").read_text()
    return [line for line in log.splitlines() if text in line]


def login(gw: RunningGateway, source: str = "127.0.0.1") -> paramiko.Transport:
    """A transport logged in with the account's password, from ``source``."""
    transport = paramiko.Transport(connect(gw, source))
    transport.connect(username=gw.user, password=gw.password)
    return transport


def list_root(gw: RunningGateway, source: str = "127.0.0.1") -> list[str]:
    """Log in from ``source``, list the root over SFTP, log out."""
    transport = login(gw, source)
    try:
        client = paramiko.SFTPClient.from_transport(transport)
        assert client is not None
        return client.listdir("/")
    finally:
        transport.close()
