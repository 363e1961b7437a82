"""A real gateway node process with one password account, for end-to-end SFTP tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import attrs
import paramiko
import pytest

from tests.nodes import NodeReaper, gateway

PASSWORD = "correct horse battery staple"


@attrs.frozen
class RunningGateway:
    """Where a started gateway listens and how to log in."""

    node_dir: Path
    host: str
    port: int
    user: str
    password: str

    def sftp(self) -> tuple[paramiko.Transport, paramiko.SFTPClient]:
        """A logged-in paramiko SFTP session (close the transport when done)."""
        transport = paramiko.Transport((self.host, self.port))
        transport.connect(username=self.user, password=self.password)
        client = paramiko.SFTPClient.from_transport(transport)
        assert client is not None
        return transport, client


def start_gateway(
    tmp_path: Path, reaper: NodeReaper, *create_args: str, name: str = "gw", user: str = "alice"
) -> RunningGateway:
    """Create and start a gateway (embedded grid unless told otherwise) with one account."""
    node_dir = reaper.track(tmp_path / name)
    created = gateway("create", node_dir, "--sftp-port", "0", "--web-port", "0", *create_args)
    assert created.code == 0, created.err
    added = gateway("account", "add", node_dir, user, "--password-stdin", stdin=PASSWORD + "\n")
    assert added.code == 0, added.err
    started = gateway("start", node_dir)
    assert started.code == 0, started.err
    match = re.search(r"SFTP: sftp -P (\d+) USER@(\S+)", started.out)
    assert match, started.out
    return RunningGateway(node_dir, match.group(2), int(match.group(1)), user, PASSWORD)


@pytest.fixture
def running_gateway(tmp_path: Path, reaper: NodeReaper) -> Iterator[RunningGateway]:
    """A started gateway on the embedded grid, stopped (and checked to stop cleanly) after."""
    gw = start_gateway(tmp_path, reaper)
    yield gw
    stopped = gateway("stop", gw.node_dir)
    assert stopped.code == 0, stopped.err
