"""A real gateway node process with one password account, for end-to-end SFTP tests."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import paramiko
import paramiko.sftp
import paramiko.sftp_attr
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
    web_url: str = ""

    def sftp(self) -> tuple[paramiko.Transport, paramiko.SFTPClient]:
        """A logged-in paramiko SFTP session (close the transport when done)."""
        transport = paramiko.Transport((self.host, self.port))
        transport.connect(username=self.user, password=self.password)
        client = paramiko.SFTPClient.from_transport(transport)
        assert client is not None
        return transport, client


def sshfs_mount(gw: RunningGateway, point: Path) -> None:
    """Mount the gateway's root at ``point`` with sshfs, logging in with the password (the
    caller unmounts: ``fusermount3 -u -z``)."""
    subprocess.run(
        [
            "sshfs",
            f"{gw.user}@{gw.host}:/",
            str(point),
            "-p",
            str(gw.port),
            "-o",
            "password_stdin,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null",
        ],
        input=gw.password + "\n",
        text=True,
        check=True,
        timeout=30,
    )


def start_gateway(
    tmp_path: Path,
    reaper: NodeReaper,
    *create_args: str,
    name: str = "gw",
    user: str = "alice",
    configure: Callable[[Path], None] | None = None,
) -> RunningGateway:
    """Create and start a gateway (embedded grid unless told otherwise) with one account.

    ``configure`` may change the node directory (node.cfg, keys) before the first start.
    """
    node_dir = reaper.track(tmp_path / name)
    created = gateway("create", node_dir, "--sftp-port", "0", "--web-port", "0", *create_args)
    assert created.code == 0, created.err
    added = gateway("account", "add", node_dir, user, "--password-stdin", stdin=PASSWORD + "\n")
    assert added.code == 0, added.err
    if configure is not None:
        configure(node_dir)
    return restart_gateway(node_dir, user)


def restart_gateway(
    node_dir: Path, user: str = "alice", open_files: int | None = None
) -> RunningGateway:
    """Start a created gateway and learn where its SFTP server listens (``open_files``: its
    descriptor limit, soft and hard)."""
    started = gateway("start", node_dir, open_files=open_files)
    assert started.code == 0, started.err
    match = re.search(r"SFTP: sftp -P (\d+) [^@ ]+@(\S+)", started.out)
    assert match, started.out
    web = re.search(r"Status page: (\S+)", started.out)
    return RunningGateway(
        node_dir, match.group(2), int(match.group(1)), user, PASSWORD, web.group(1) if web else ""
    )


@pytest.fixture
def running_gateway(tmp_path: Path, reaper: NodeReaper) -> Iterator[RunningGateway]:
    """A started gateway on the embedded grid, stopped (and checked to stop cleanly) after."""
    gw = start_gateway(tmp_path, reaper)
    yield gw
    stopped = gateway("stop", gw.node_dir)
    assert stopped.code == 0, stopped.err


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """One gateway for a whole test module (tests work in their own directories)."""
    reaper = NodeReaper()
    try:
        gw = start_gateway(tmp_path_factory.mktemp("shared"), reaper)
        yield gw
        stopped = gateway("stop", gw.node_dir)
        assert stopped.code == 0, stopped.err
    finally:
        reaper.reap()


class RawSFTP(paramiko.sftp.BaseSFTP):
    """SFTP at the packet level: send requests without waiting, read each reply by id.

    paramiko's client hides status codes behind exceptions and never pipelines
    on its own; this speaks the same version 3 protocol but lets a test send
    OPEN and STAT back to back, or a bogus handle, and see the exact status.
    """

    def __init__(self, transport: paramiko.Transport) -> None:
        super().__init__()
        channel = transport.open_session()
        channel.invoke_subsystem("sftp")
        self.sock = channel
        self._next = 1
        self._replies: dict[int, tuple[int, paramiko.Message]] = {}
        init = paramiko.Message()
        init.add_int(3)
        self._send_packet(paramiko.sftp.CMD_INIT, init)
        kind, data = self._read_packet()
        assert kind == paramiko.sftp.CMD_VERSION
        version = paramiko.Message(data)
        self.version = version.get_int()
        self.extensions: dict[bytes, bytes] = {}
        while version.get_remainder():
            name = version.get_string()
            self.extensions[name] = version.get_string()

    def send(self, kind: int, *fields: object) -> int:
        """Send one request; its id (read the reply with :meth:`reply`)."""
        number = self._next
        self._next += 1
        message = paramiko.Message()
        message.add_int(number)
        for item in fields:
            if isinstance(item, paramiko.sftp_attr.SFTPAttributes):
                item._pack(message)
            elif isinstance(item, Int64):
                message.add_int64(item.value)
            elif isinstance(item, int):
                message.add_int(item)
            else:
                assert isinstance(item, bytes | str)
                message.add_string(item)
        self._send_packet(kind, message)
        return number

    def reply(self, number: int) -> tuple[int, paramiko.Message]:
        """The reply to request ``number`` (replies to others are kept for later)."""
        while number not in self._replies:
            kind, data = self._read_packet()
            message = paramiko.Message(data)
            self._replies[message.get_int()] = (kind, message)
        return self._replies.pop(number)

    def call(self, kind: int, *fields: object) -> tuple[int, paramiko.Message]:
        """Send a request and wait for its reply."""
        return self.reply(self.send(kind, *fields))

    def status(self, kind: int, *fields: object) -> int:
        """Send a request whose reply is a STATUS; the status code."""
        return status_code(self.call(kind, *fields))

    def open(self, path: str | bytes, flags: int, attrs: dict[str, int] | None = None) -> bytes:
        """OPEN that must succeed: the handle."""
        kind, message = self.call(paramiko.sftp.CMD_OPEN, path, flags, attributes(attrs))
        assert kind == paramiko.sftp.CMD_HANDLE, status_text((kind, message))
        return message.get_binary()

    def stat(self, path: str | bytes) -> paramiko.SFTPAttributes:
        """STAT that must succeed."""
        kind, message = self.call(paramiko.sftp.CMD_STAT, path)
        assert kind == paramiko.sftp.CMD_ATTRS, status_text((kind, message))
        return paramiko.SFTPAttributes._from_msg(message)


@attrs.frozen
class Int64:
    """A uint64 field (offsets), told apart from the uint32 fields."""

    value: int


def attributes(values: dict[str, int] | None = None) -> paramiko.SFTPAttributes:
    """An ATTRS structure with the given fields (size, permissions, atime+mtime)."""
    attrs = paramiko.SFTPAttributes()
    for name, value in (values or {}).items():
        setattr(attrs, "st_" + name, value)
    return attrs


def status_code(reply: tuple[int, paramiko.Message]) -> int:
    """The code of a STATUS reply (fails on any other reply)."""
    kind, message = reply
    assert kind == paramiko.sftp.CMD_STATUS, f"expected STATUS, got packet type {kind}"
    return message.get_int()


def status_text(reply: tuple[int, paramiko.Message]) -> str:
    """A STATUS reply as 'code message' (for assertion messages)."""
    kind, message = reply
    if kind != paramiko.sftp.CMD_STATUS:
        return f"packet type {kind}"
    code = message.get_int()
    return f"{code} {message.get_text()}"
