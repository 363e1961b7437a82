"""The SFTP write path under the client behaviours of the seeds, against a real gateway.

Files are visible while written (even before the OPEN reply is read), handles
on one path share one staged file, renames and removes of open files re-target
or abandon them, and the WinSCP and gvfs save sequences work unchanged.
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
    CMD_EXTENDED,
    CMD_FSETSTAT,
    CMD_FSTAT,
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
    SFTP_FLAG_READ,
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


def test_reader_sees_data_while_the_file_is_written(clients: tuple[Client, Client]) -> None:
    """A second handle (another connection) reads what the writer has written so far."""
    a, b = clients
    path = a.path("growing")
    handle = a.raw.open(path, CREATE_TRUNC)
    a.write(handle, 0, b"first part;")
    assert b.get(path) == b"first part;"
    a.write(handle, 11, b"second part")
    assert b.get(path) == b"first part;second part"
    a.close(handle)
    assert b.get(path) == b"first part;second part"


def test_handles_on_one_path_share_the_file_and_the_last_close_publishes(
    clients: tuple[Client, Client],
) -> None:
    """Two writers on one path write one staged file; after both close it holds both writes."""
    a, b = clients
    path = a.path("shared")
    a.put(path, b"." * 20)
    first = a.raw.open(path, SFTP_FLAG_WRITE | SFTP_FLAG_READ)
    second = b.raw.open(path, SFTP_FLAG_WRITE)
    a.write(first, 0, b"AAAAA")
    b.write(second, 10, b"BBBBB")
    kind, message = a.raw.call(CMD_FSTAT, first)
    assert kind == CMD_ATTRS
    a.close(first)
    assert a.get(path) == b"AAAAA.....BBBBB....."
    b.write(second, 15, b"CCCCCC")
    b.close(second)
    expected = b"AAAAA.....BBBBBCCCCCC"
    assert a.get(path) == expected
    assert b.sftp.stat(path).st_size == len(expected)


@pytest.mark.parametrize("how", ["rename", "posix-rename"])
def test_rename_before_close_retargets_the_open_file(
    clients: tuple[Client, Client], how: str
) -> None:
    """Seed 000: RENAME of a file still open for writing, then more writes, then CLOSE."""
    a, b = clients
    tmp, final = a.path("file.tmp"), a.path("file")
    handle = a.raw.open(tmp, CREATE_TRUNC)
    a.write(handle, 0, b"written before the rename, ")
    if how == "rename":
        assert a.raw.status(CMD_RENAME, tmp, final) == SFTP_OK
    else:
        assert a.raw.status(CMD_EXTENDED, "posix-rename@openssh.com", tmp, final) == SFTP_OK
    assert b.sftp.listdir(a.base) == ["file"]
    a.write(handle, 27, b"and after it")
    a.close(handle)
    assert b.get(final) == b"written before the rename, and after it"
    assert b.raw.status(CMD_STAT, tmp) == SFTP_NO_SUCH_FILE
    time.sleep(1.5)  # the upload links the file where it is now, not where it was opened
    assert sorted(b.sftp.listdir(a.base)) == ["file"]
    assert b.get(final) == b"written before the rename, and after it"


def test_rename_of_an_open_file_over_an_existing_one(clients: tuple[Client, Client]) -> None:
    """posix-rename of an open temp file over the original (an editor's save) replaces it."""
    a, b = clients
    original = a.path("doc")
    a.put(original, b"old contents")
    tmp = a.path("doc.swp")
    handle = a.raw.open(tmp, CREATE_TRUNC)
    a.write(handle, 0, b"new contents")
    assert a.raw.status(CMD_RENAME, tmp, original) == SFTP_FAILURE
    assert a.raw.status(CMD_EXTENDED, "posix-rename@openssh.com", tmp, original) == SFTP_OK
    a.close(handle)
    assert b.get(original) == b"new contents"
    time.sleep(1.5)
    assert b.sftp.listdir(a.base) == ["doc"]
    assert b.get(original) == b"new contents"


def test_remove_of_an_open_file_abandons_it(clients: tuple[Client, Client]) -> None:
    """REMOVE of a file still being written: the later CLOSE publishes nothing."""
    a, b = clients
    path = a.path("doomed")
    handle = a.raw.open(path, CREATE_TRUNC)
    a.write(handle, 0, b"never to be seen")
    assert a.raw.status(CMD_REMOVE, path) == SFTP_OK
    assert b.raw.status(CMD_STAT, path) == SFTP_NO_SUCH_FILE
    a.write(handle, 16, b"!")
    a.close(handle)
    time.sleep(1.5)
    assert b.sftp.listdir(a.base) == []


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
