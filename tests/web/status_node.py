"""A real gateway process for the status-page tests: its SFTP login and its status page."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import paramiko
import pytest

from tests.nodes import NodeReaper, gateway
from tests.sftp.gateway_node import PASSWORD, RunningGateway


@attrs.frozen
class StatusGateway:
    """A started gateway and the address of its status page."""

    gw: RunningGateway
    url: str

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body of one request to the status page."""
        request = urllib.request.Request(self.url.rstrip("/") + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, path: str) -> Any:
        """A JSON twin, decoded."""
        status, _, body = self.get(path)
        assert status == 200, body
        return json.loads(body)


def start_status_gateway(tmp_path: Path, reaper: NodeReaper) -> StatusGateway:
    """Create and start a gateway whose CLOSE waits for the grid, with one password account."""
    node_dir = reaper.track(tmp_path / "gw")
    created = gateway("create", node_dir, "--sftp-port", "0", "--web-port", "0", "--nickname", "w1")
    assert created.code == 0, created.err
    config = node_dir / "node.cfg"
    config.write_text(config.read_text().replace("#close = local", "close = grid"))
    added = gateway("account", "add", node_dir, "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert added.code == 0, added.err
    started = gateway("start", node_dir)
    assert started.code == 0, started.err
    sftp = re.search(r"SFTP: sftp -P (\d+) [^@ ]+@(\S+)", started.out)
    web = re.search(r"Status page: (\S+)", started.out)
    assert sftp and web, started.out
    gw = RunningGateway(node_dir, sftp.group(2), int(sftp.group(1)), "alice", PASSWORD)
    return StatusGateway(gw, web.group(1))


@pytest.fixture(scope="module")
def status_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StatusGateway]:
    """One gateway for a test module, stopped (cleanly) after it."""
    reaper = NodeReaper()
    try:
        node = start_status_gateway(tmp_path_factory.mktemp("web"), reaper)
        yield node
        stopped = gateway("stop", node.gw.node_dir)
        assert stopped.code == 0, stopped.err
    finally:
        reaper.reap()


class BackgroundUpload:
    """Writes ``size`` bytes to ``path`` over paramiko in a thread (CLOSE waits for the grid).

    ``pause`` seconds between chunks model a client on a slower link.
    """

    def __init__(
        self, gw: RunningGateway, path: str, size: int, chunk: int = 1 << 20, pause: float = 0.0
    ):
        self.transport, self.client = gw.sftp()
        self._path, self._size, self._chunk, self._pause = path, size, chunk, pause
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        block = os.urandom(self._chunk)  # a new file each time: nothing deduplicated
        try:
            with self.client.open(self._path, "w") as f:
                f.set_pipelined(True)
                written = 0
                while written < self._size:
                    f.write(block[: self._size - written])
                    written += len(block[: self._size - written])
                    time.sleep(self._pause)  # a client on a slower link
        except BaseException as e:  # reported by wait()
            self.error = e
        finally:
            self.done.set()

    def wait(self, timeout: float = 120) -> None:
        """Wait for the upload (CLOSE included) to finish; re-raise its error."""
        assert self.done.wait(timeout), "upload did not finish"
        self.transport.close()
        if self.error is not None:
            raise self.error


def open_session(gw: RunningGateway) -> tuple[paramiko.Transport, paramiko.SFTPClient]:
    """A logged-in paramiko session (close the transport after)."""
    return gw.sftp()
