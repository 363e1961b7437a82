"""The SFTP write path under the client behaviours of the seeds, against a real gateway.

Files are visible while written (even before the OPEN reply is read), a file reopened
while its previous CLOSE uploads has the newest contents, the WinSCP and gvfs save
sequences work unchanged, and a client killed mid-write leaves no torn file. What the
filesystem does with shared handles, and with renames and removes of open files (seed
000 among them), is the filesystem's contract, checked in memory in tests/fs/contract/.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator

import paramiko
import pytest
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_FSETSTAT,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_REMOVE,
    CMD_RENAME,
    CMD_SETSTAT,
    CMD_STAT,
    CMD_WRITE,
    SFTP_FAILURE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_EXCL,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
)

from tests.sftp.gateway_node import (
    Int64,
    RawSFTP,
    RunningGateway,
    attributes,
    shared_gateway,  # noqa: F401
    status_code,
)

CREATE = SFTP_FLAG_CREATE | SFTP_FLAG_WRITE
CREATE_TRUNC = CREATE | SFTP_FLAG_TRUNC


class Client:
    """One SSH connection: a paramiko SFTPClient and a raw channel, in directory ``base``."""

    def __init__(self, gw: RunningGateway, base: str) -> None:
        self.transport, self.sftp = gw.sftp()
        self.raw = RawSFTP(self.transport)
        self.base = base

    def path(self, name: str) -> str:
        """A path inside the test's directory."""
        return f"{self.base}/{name}"

    def get(self, path: str) -> bytes:
        """A whole file's contents."""
        with self.sftp.open(path, "rb") as f:
            return f.read()

    def put(self, path: str, data: bytes) -> None:
        """Write a whole file."""
        with self.sftp.open(path, "wb") as f:
            f.write(data)

    def write(self, handle: bytes, offset: int, data: bytes) -> None:
        """WRITE that must succeed."""
        assert self.raw.status(CMD_WRITE, handle, Int64(offset), data) == SFTP_OK

    def close(self, handle: bytes) -> None:
        """CLOSE that must succeed."""
        assert self.raw.status(CMD_CLOSE, handle) == SFTP_OK


@pytest.fixture
def clients(
    shared_gateway: RunningGateway,  # noqa: F811
    request: pytest.FixtureRequest,
) -> Iterator[tuple[Client, Client]]:
    """Two independent connections working in a fresh directory named after the test."""
    base = "/" + request.node.name
    first, second = Client(shared_gateway, base), Client(shared_gateway, base)
    first.sftp.mkdir(base)
    try:
        yield first, second
    finally:
        first.transport.close()
        second.transport.close()


def test_file_is_visible_before_the_open_reply_is_read(clients: tuple[Client, Client]) -> None:
    """OPEN and STAT pipelined (as sshfs sends them): the STAT sees the new file."""
    a, b = clients
    path = a.path("new")
    opening = a.raw.send(CMD_OPEN, path, CREATE_TRUNC, attributes())
    stating = a.raw.send(CMD_STAT, path)
    kind, message = a.raw.reply(opening)
    assert kind == CMD_HANDLE
    handle = message.get_binary()
    kind, message = a.raw.reply(stating)
    assert kind == CMD_ATTRS
    assert paramiko.SFTPAttributes._from_msg(message).st_size == 0
    writes = [a.raw.send(CMD_WRITE, handle, Int64(i * 1000), b"x" * 1000) for i in range(5)]
    stating = a.raw.send(CMD_STAT, path)
    assert [status_code(a.raw.reply(n)) for n in writes] == [SFTP_OK] * 5
    kind, message = a.raw.reply(stating)
    assert paramiko.SFTPAttributes._from_msg(message).st_size == 5000
    # Another connection sees it too, in stat and in the listing, with its current size.
    assert b.sftp.stat(path).st_size == 5000
    assert {e.filename: e.st_size for e in b.sftp.listdir_attr(a.base)} == {"new": 5000}
    a.close(handle)
    assert b.get(path) == b"x" * 5000


def test_reopen_while_the_previous_close_uploads(clients: tuple[Client, Client]) -> None:
    """Closing and at once reopening a file (read or write) sees the newest contents."""
    a, b = clients
    path = a.path("churn")
    for version in range(5):
        data = f"version {version} ".encode() * (20_000 + version)
        a.put(path, data)
        assert b.get(path) == data
        assert a.sftp.stat(path).st_size == len(data)
    handle = a.raw.open(path, SFTP_FLAG_WRITE)
    a.write(handle, 0, b"EDITED")
    a.close(handle)
    assert b.get(path)[:20] == b"EDITEDn 4 version 4 "
    time.sleep(2)
    assert b.get(path)[:20] == b"EDITEDn 4 version 4 "


def test_winscp_upload_sequence(clients: tuple[Client, Client]) -> None:
    """WinSCP: write name.filepart, close, remove the target, rename, set mtime and mode."""
    a, b = clients
    target, part = a.path("report.pdf"), a.path("report.pdf.filepart")
    a.put(target, b"previous version")
    handle = a.raw.open(part, CREATE_TRUNC)
    payload = bytes(range(256)) * 400
    for offset in range(0, len(payload), 32768):
        a.write(handle, offset, payload[offset : offset + 32768])
    a.close(handle)
    assert a.raw.status(CMD_REMOVE, target) == SFTP_OK
    assert a.raw.status(CMD_RENAME, part, target) == SFTP_OK
    when = attributes({"atime": 1_234_567_890, "mtime": 1_234_567_890})
    assert a.raw.status(CMD_SETSTAT, target, when) == SFTP_OK
    assert a.raw.status(CMD_SETSTAT, target, attributes({"mode": 0o100640})) == SFTP_OK
    for _ in range(2):  # while the upload may be pending, and after it has landed
        st = b.sftp.stat(target)
        assert st.st_mtime == 1_234_567_890 and st.st_size == len(payload)
        assert stat.S_IMODE(st.st_mode) == 0o640
        assert b.get(target) == payload
        assert b.sftp.listdir(a.base) == ["report.pdf"]
        time.sleep(1.5)


def test_gvfs_save_sequence(clients: tuple[Client, Client]) -> None:
    """gvfs replace: EXCL-create a temp name, write, copy the mode, delete, rename over."""
    a, b = clients
    target = a.path("notes.txt")
    a.put(target, b"draft 1")
    a.sftp.chmod(target, 0o600)
    assert a.raw.status(CMD_OPEN, target, CREATE | SFTP_FLAG_EXCL, attributes()) == SFTP_FAILURE
    tmp = a.path(".goutputstream-ABC123")
    handle = a.raw.open(tmp, CREATE | SFTP_FLAG_EXCL, {"mode": 0o644})
    a.write(handle, 0, b"draft 2, longer than the first")
    mode = stat.S_IMODE(a.sftp.stat(target).st_mode)
    assert a.raw.status(CMD_FSETSTAT, handle, attributes({"mode": mode})) == SFTP_OK
    a.close(handle)
    assert a.raw.status(CMD_REMOVE, target) == SFTP_OK
    assert a.raw.status(CMD_RENAME, tmp, target) == SFTP_OK
    assert b.get(target) == b"draft 2, longer than the first"
    assert stat.S_IMODE(b.sftp.stat(target).st_mode) == 0o600
    assert b.sftp.listdir(a.base) == ["notes.txt"]


@pytest.mark.parametrize("existing", [True, False])
def test_client_killed_mid_upload_leaves_old_contents_or_nothing(
    shared_gateway: RunningGateway,  # noqa: F811
    request: pytest.FixtureRequest,
    existing: bool,
) -> None:
    """A client that dies without CLOSE leaves the previous file (or none), never a torn one."""
    base = "/" + request.node.name.replace("[", "_").replace("]", "")
    a = Client(shared_gateway, base)
    a.sftp.mkdir(base)
    path = a.path("victim")
    if existing:
        a.put(path, b"old contents")
    handle = a.raw.open(path, CREATE_TRUNC)
    a.write(handle, 0, b"half of the new")
    a.transport.sock.close()  # no CLOSE: the connection just dies
    a.transport.close()
    time.sleep(1)
    b = Client(shared_gateway, base)
    try:
        if existing:
            assert b.get(path) == b"old contents"
        else:
            assert b.raw.status(CMD_STAT, path) == SFTP_NO_SUCH_FILE
    finally:
        b.transport.close()
