"""The SFTP protocol as clients speak it, against a real gateway process.

paramiko's high-level client for the ordinary calls, and :class:`RawSFTP`
(packets sent without waiting, status codes read exactly) for flag
combinations, bogus handles, malformed names and extensions. Every status code
asserted here is the one OpenSSH's sftp-server sends for the same request.
"""

from __future__ import annotations

import stat
import struct
import time
import unicodedata
from collections.abc import Iterator

import paramiko
import pytest
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_FSETSTAT,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_LSTAT,
    CMD_MKDIR,
    CMD_NAME,
    CMD_OPEN,
    CMD_OPENDIR,
    CMD_READ,
    CMD_READDIR,
    CMD_READLINK,
    CMD_REALPATH,
    CMD_REMOVE,
    CMD_RENAME,
    CMD_RMDIR,
    CMD_SETSTAT,
    CMD_STAT,
    CMD_WRITE,
    SFTP_BAD_MESSAGE,
    SFTP_EOF,
    SFTP_FAILURE,
    SFTP_FLAG_APPEND,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_EXCL,
    SFTP_FLAG_READ,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    SFTP_OP_UNSUPPORTED,
    SFTP_PERMISSION_DENIED,
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
RW = SFTP_FLAG_READ | SFTP_FLAG_WRITE


class Session:
    """A logged-in client: paramiko's SFTPClient and a raw channel, working in ``base``."""

    def __init__(self, gw: RunningGateway, base: str) -> None:
        self.transport, self.sftp = gw.sftp()
        self.raw = RawSFTP(self.transport)
        self.base = base

    def path(self, name: str) -> str:
        """A path inside this test's directory."""
        return f"{self.base}/{name}"

    def put(self, name: str, data: bytes) -> str:
        """Write a whole file; its path."""
        path = self.path(name)
        with self.sftp.open(path, "wb") as f:
            f.write(data)
        return path

    def get(self, path: str) -> bytes:
        """Read a whole file."""
        with self.sftp.open(path, "rb") as f:
            return f.read()

    def write(self, handle: bytes, offset: int, data: bytes) -> int:
        """WRITE through the raw channel; the status code."""
        return self.raw.status(CMD_WRITE, handle, Int64(offset), data)

    def read(self, handle: bytes, offset: int, length: int) -> bytes | int:
        """READ through the raw channel: the data, or the status code."""
        kind, message = self.raw.call(CMD_READ, handle, Int64(offset), length)
        if kind == CMD_DATA:
            return message.get_binary()
        return status_code((kind, message))

    def close(self, handle: bytes) -> int:
        """CLOSE through the raw channel; the status code."""
        return self.raw.status(CMD_CLOSE, handle)


@pytest.fixture
def session(
    shared_gateway: RunningGateway,  # noqa: F811
    request: pytest.FixtureRequest,
) -> Iterator[Session]:
    """A session working in a fresh directory named after the test."""
    base = "/" + request.node.name.replace("[", "_").replace("]", "")
    s = Session(shared_gateway, base)
    s.sftp.mkdir(base)
    try:
        yield s
    finally:
        s.transport.close()


def test_open_flag_combinations(session: Session) -> None:
    """CREAT, EXCL, TRUNC, APPEND and plain WRITE/READ behave as open(2) does."""
    raw, path = session.raw, session.path("f")
    assert raw.status(CMD_OPEN, path, SFTP_FLAG_READ, attributes()) == SFTP_NO_SUCH_FILE
    assert raw.status(CMD_OPEN, path, SFTP_FLAG_WRITE, attributes()) == SFTP_NO_SUCH_FILE
    handle = raw.open(path, CREATE | SFTP_FLAG_EXCL)
    assert session.write(handle, 0, b"hello world") == SFTP_OK
    assert session.close(handle) == SFTP_OK
    # EXCL on an existing name: FX_FAILURE (gvfs relies on it).
    assert raw.status(CMD_OPEN, path, CREATE | SFTP_FLAG_EXCL, attributes()) == SFTP_FAILURE
    # WRITE without TRUNC keeps the rest of the file.
    handle = raw.open(path, SFTP_FLAG_WRITE)
    assert session.write(handle, 0, b"HELLO") == SFTP_OK
    assert session.close(handle) == SFTP_OK
    assert session.get(path) == b"HELLO world"
    # APPEND writes at the end whatever the offset says.
    handle = raw.open(path, SFTP_FLAG_WRITE | SFTP_FLAG_APPEND)
    assert session.write(handle, 0, b"!") == SFTP_OK
    assert session.close(handle) == SFTP_OK
    assert session.get(path) == b"HELLO world!"
    # READ|WRITE reads back what it wrote; READ-only refuses writes.
    handle = raw.open(path, RW)
    assert session.write(handle, 6, b"WORLD") == SFTP_OK
    assert session.read(handle, 0, 100) == b"HELLO WORLD!"
    assert session.close(handle) == SFTP_OK
    handle = raw.open(path, SFTP_FLAG_READ)
    assert session.write(handle, 0, b"x") == SFTP_PERMISSION_DENIED
    assert session.read(handle, 0, 5) == b"HELLO"
    assert session.read(handle, 100, 5) == SFTP_EOF
    assert session.close(handle) == SFTP_OK
    # CREAT|TRUNC empties an existing file.
    handle = raw.open(path, CREATE | SFTP_FLAG_TRUNC)
    assert session.close(handle) == SFTP_OK
    assert session.sftp.stat(path).st_size == 0
    # CREAT without WRITE makes an empty file.
    other = session.path("created")
    handle = raw.open(other, SFTP_FLAG_CREATE | SFTP_FLAG_READ)
    assert session.close(handle) == SFTP_OK
    assert session.sftp.stat(other).st_size == 0


def test_writes_at_any_offset_in_any_order(session: Session) -> None:
    """Pipelined writes out of order, with a hole, read back in place (the hole as zeros)."""
    raw, path = session.raw, session.path("sparse")
    handle = raw.open(path, CREATE | SFTP_FLAG_READ)
    chunks = [(offset, bytes([65 + offset // 1000]) * 1000) for offset in range(0, 10_000, 1000)]
    numbers = [
        raw.send(CMD_WRITE, handle, Int64(offset), data)
        for offset, data in reversed(chunks)
        if offset != 3000
    ]
    assert [status_code(raw.reply(n)) for n in numbers] == [SFTP_OK] * 9
    expected = b"".join(b"\0" * 1000 if offset == 3000 else data for offset, data in chunks)
    assert session.read(handle, 0, 20_000) == expected
    assert session.close(handle) == SFTP_OK
    assert session.get(path) == expected


def test_stat_lstat_fstat(session: Session) -> None:
    """STAT follows symlinks, LSTAT does not, FSTAT sees unclosed writes."""
    path = session.put("file", b"x" * 1234)
    session.sftp.symlink("file", session.path("link"))
    assert stat.S_ISREG(session.sftp.stat(path).st_mode)
    assert session.sftp.stat(path).st_size == 1234
    assert stat.S_ISREG(session.sftp.stat(session.path("link")).st_mode)
    assert stat.S_ISLNK(session.sftp.lstat(session.path("link")).st_mode)
    assert stat.S_ISDIR(session.sftp.stat(session.base).st_mode)
    assert stat.S_ISDIR(session.sftp.stat("/").st_mode)
    raw = session.raw
    handle = raw.open(path, RW)
    assert session.write(handle, 1234, b"yy") == SFTP_OK
    kind, message = raw.call(CMD_FSTAT, handle)
    assert kind == CMD_ATTRS
    assert paramiko.SFTPAttributes._from_msg(message).st_size == 1236
    assert session.close(handle) == SFTP_OK
    assert raw.status(CMD_STAT, session.path("missing")) == SFTP_NO_SUCH_FILE
    assert raw.status(CMD_LSTAT, session.path("file/below")) == SFTP_NO_SUCH_FILE


def test_setstat_size_times_and_mode(session: Session) -> None:
    """SETSTAT/FSETSTAT truncate and extend, and set mtime, atime and mode that come back."""
    path = session.put("f", b"0123456789")
    session.sftp.truncate(path, 4)
    assert session.get(path) == b"0123"
    session.sftp.truncate(path, 8)
    assert session.get(path) == b"0123\0\0\0\0"
    session.sftp.utime(path, (1_500_000_000, 1_600_000_000))
    st = session.sftp.stat(path)
    # The grid keeps no access time: atime reads as mtime (as with noatime).
    assert (st.st_atime, st.st_mtime) == (1_600_000_000, 1_600_000_000)
    session.sftp.chmod(path, 0o600)
    assert stat.S_IMODE(session.sftp.stat(path).st_mode) == 0o600
    raw = session.raw
    handle = raw.open(path, SFTP_FLAG_WRITE)
    assert raw.status(CMD_FSETSTAT, handle, attributes({"size": 2})) == SFTP_OK
    assert raw.status(CMD_FSETSTAT, handle, attributes({"mode": 0o640})) == SFTP_OK
    changed = attributes({"atime": 1_400_000_000, "mtime": 1_450_000_000})
    assert raw.status(CMD_FSETSTAT, handle, changed) == SFTP_OK
    assert session.close(handle) == SFTP_OK
    st = session.sftp.stat(path)
    assert st.st_size == 2 and st.st_mtime == 1_450_000_000
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert session.get(path) == b"01"
    missing = session.path("missing")
    assert raw.status(CMD_SETSTAT, missing, attributes({"mode": 0o600})) == SFTP_NO_SUCH_FILE
    session.sftp.mkdir(session.path("d"))
    session.sftp.utime(session.path("d"), (1_300_000_000, 1_300_000_000))
    assert session.sftp.stat(session.path("d")).st_mtime == 1_300_000_000


def test_chmod_a_minus_w_refuses_writes_until_u_plus_w(session: Session) -> None:
    """Clearing every w bit makes the file read-only for writers; adding u+w undoes it."""
    path = session.put("ro", b"keep")
    session.sftp.chmod(path, 0o444)
    assert stat.S_IMODE(session.sftp.stat(path).st_mode) & 0o222 == 0
    raw = session.raw
    assert raw.status(CMD_OPEN, path, SFTP_FLAG_WRITE, attributes()) == SFTP_PERMISSION_DENIED
    assert raw.status(CMD_OPEN, path, CREATE | SFTP_FLAG_TRUNC, attributes()) == (
        SFTP_PERMISSION_DENIED
    )
    assert session.get(path) == b"keep"
    session.sftp.chmod(path, 0o644)
    assert stat.S_IMODE(session.sftp.stat(path).st_mode) == 0o644
    session.put("ro", b"changed")
    assert session.get(path) == b"changed"


def test_readdir_long_names(session: Session) -> None:
    """READDIR gives every entry with attributes and an `ls -l` line."""
    session.put("a.txt", b"12345")
    session.sftp.mkdir(session.path("sub"))
    session.sftp.symlink("a.txt", session.path("ln"))
    entries = {a.filename: a for a in session.sftp.listdir_attr(session.base)}
    assert sorted(entries) == ["a.txt", "ln", "sub"]
    line = entries["a.txt"].longname
    assert line.startswith("-rw-r--r--") and line.endswith(" a.txt")
    assert " 5 " in line
    assert entries["sub"].longname.startswith("drwxr-xr-x")
    assert entries["ln"].longname.startswith("lrwxrwxrwx")
    assert entries["a.txt"].st_size == 5


def test_readdir_batches_then_end_of_file(session: Session) -> None:
    """A listing of 600 entries comes in READDIRs of at most 250, each entry with the
    attributes STAT gives and its `ls -l` line; then FX_EOF, again at every READDIR, until
    CLOSE."""
    raw = session.raw
    for i in range(600):
        session.sftp.open(session.path(f"e{i:03d}"), "wb").close()
    session.put("e000", b"12345")
    kind, message = raw.call(CMD_OPENDIR, session.base)
    assert kind == CMD_HANDLE
    handle = message.get_binary()
    counts: list[int] = []
    seen: dict[str, paramiko.SFTPAttributes] = {}
    while True:
        kind, message = raw.call(CMD_READDIR, handle)
        if kind != CMD_NAME:
            break
        count = message.get_int()
        counts.append(count)
        for _ in range(count):
            name, line = message.get_text(), message.get_text()
            attrs = paramiko.SFTPAttributes._from_msg(message)
            assert line.endswith(f" {name}") and line.startswith("-rw-r--r--")
            seen[name] = attrs
    assert status_code((kind, message)) == SFTP_EOF
    assert raw.status(CMD_READDIR, handle) == SFTP_EOF
    assert raw.status(CMD_CLOSE, handle) == SFTP_OK
    assert sum(counts) == 600 and max(counts) <= 250
    assert sorted(seen) == [f"e{i:03d}" for i in range(600)]
    stat = session.sftp.stat(session.path("e000"))
    first = seen["e000"]
    assert (first.st_size, first.st_mode, first.st_mtime) == (5, stat.st_mode, stat.st_mtime)
    assert (first.st_uid, first.st_gid) == (stat.st_uid, stat.st_gid)


def test_remove_mkdir_rmdir_status_codes(session: Session) -> None:
    """mkdir/rmdir/remove succeed or fail with OpenSSH's codes (rmdir of non-empty fails)."""
    raw, sftp = session.raw, session.sftp
    d = session.path("d")
    assert raw.status(CMD_MKDIR, d, attributes()) == SFTP_OK
    assert raw.status(CMD_MKDIR, d, attributes()) == SFTP_FAILURE
    assert raw.status(CMD_MKDIR, session.path("no/such"), attributes()) == SFTP_NO_SUCH_FILE
    session.put("d/f", b"x")
    assert raw.status(CMD_RMDIR, d) == SFTP_FAILURE
    assert sftp.listdir(d) == ["f"]
    assert raw.status(CMD_REMOVE, d) == SFTP_FAILURE
    assert raw.status(CMD_RMDIR, session.path("d/f")) == SFTP_NO_SUCH_FILE
    assert raw.status(CMD_REMOVE, session.path("d/f")) == SFTP_OK
    assert raw.status(CMD_REMOVE, session.path("d/f")) == SFTP_NO_SUCH_FILE
    assert raw.status(CMD_RMDIR, d) == SFTP_OK
    assert raw.status(CMD_RMDIR, d) == SFTP_NO_SUCH_FILE
    assert sftp.listdir(session.base) == []


def test_realpath_never_escapes_the_root(session: Session) -> None:
    """'..' stops at the account's root, for REALPATH and for every other request."""
    sftp = session.sftp
    assert sftp.normalize(".") == "/"
    assert sftp.normalize("/../../..") == "/"
    assert sftp.normalize("a/../../b") == "/b"
    assert sftp.normalize(session.base + "/x/../y/.") == session.base + "/y"
    session.put("f", b"data")
    escaped = "/../../.." + session.base + "/f"
    assert session.get(escaped) == b"data"
    assert session.raw.status(CMD_STAT, "/../../etc/passwd") == SFTP_NO_SUCH_FILE
    kind, message = session.raw.call(CMD_REALPATH, "../..")
    assert kind == CMD_NAME and message.get_int() == 1 and message.get_text() == "/"


def test_rename_and_posix_rename(session: Session) -> None:
    """RENAME refuses an existing target; posix-rename@openssh.com replaces it atomically."""
    raw, sftp = session.raw, session.sftp
    a, b = session.put("a", b"A"), session.put("b", b"B")
    assert raw.status(CMD_RENAME, a, b) == SFTP_FAILURE
    assert session.get(b) == b"B"
    assert raw.status(CMD_RENAME, session.path("none"), session.path("x")) == SFTP_NO_SUCH_FILE
    assert raw.status(CMD_EXTENDED, "posix-rename@openssh.com", a, b) == SFTP_OK
    assert sorted(sftp.listdir(session.base)) == ["b"]
    assert session.get(b) == b"A"
    sftp.mkdir(session.path("d1"))
    session.put("d1/inner", b"I")
    sftp.rename(session.path("d1"), session.path("d2"))
    assert session.get(session.path("d2/inner")) == b"I"
    sftp.mkdir(session.path("d2/sub"))
    assert raw.status(CMD_RENAME, session.path("d2"), session.path("d2/sub/d3")) != SFTP_OK
    sftp.rename(b, session.path("d2/sub/moved"))
    assert session.get(session.path("d2/sub/moved")) == b"A"


def test_symlink_and_readlink(session: Session) -> None:
    """SYMLINK stores the target as given; READLINK returns it; reading follows it."""
    sftp = session.sftp
    session.put("target", b"T")
    sftp.symlink("target", session.path("rel"))
    sftp.symlink("/nowhere/at/all", session.path("dangling"))
    assert sftp.readlink(session.path("rel")) == "target"
    assert sftp.readlink(session.path("dangling")) == "/nowhere/at/all"
    assert session.get(session.path("rel")) == b"T"
    raw = session.raw
    assert raw.status(CMD_STAT, session.path("dangling")) == SFTP_NO_SUCH_FILE
    assert raw.status(CMD_READLINK, session.path("target")) == SFTP_BAD_MESSAGE
    assert raw.status(CMD_READLINK, session.path("none")) == SFTP_NO_SUCH_FILE
    with pytest.raises(OSError):
        sftp.symlink("x", session.path("target"))
    sftp.remove(session.path("rel"))
    assert session.get(session.path("target")) == b"T"


def test_openssh_extensions(session: Session) -> None:
    """statvfs, fstatvfs, fsync and limits @openssh.com answer as OpenSSH's do."""
    raw = session.raw
    for name in (b"posix-rename@openssh.com", b"statvfs@openssh.com", b"fsync@openssh.com"):
        assert name in raw.extensions
    assert b"limits@openssh.com" in raw.extensions
    assert b"hardlink@openssh.com" not in raw.extensions
    kind, message = raw.call(CMD_EXTENDED, "statvfs@openssh.com", session.base)
    assert kind == CMD_EXTENDED_REPLY
    fields = struct.unpack("!11Q", message.get_remainder())
    bsize, frsize, blocks, bfree, bavail, files, ffree, favail, fsid, flag, namemax = fields
    assert bsize > 0 and frsize > 0 and blocks >= bfree >= bavail and namemax == 255
    status = raw.status(CMD_EXTENDED, "statvfs@openssh.com", session.path("none"))
    assert status == SFTP_NO_SUCH_FILE
    handle = raw.open(session.path("f"), CREATE)
    assert session.write(handle, 0, b"synced") == SFTP_OK
    kind, _ = raw.call(CMD_EXTENDED, "fstatvfs@openssh.com", handle)
    assert kind == CMD_EXTENDED_REPLY
    assert raw.status(CMD_EXTENDED, "fsync@openssh.com", handle) == SFTP_OK
    assert session.close(handle) == SFTP_OK
    kind, message = raw.call(CMD_EXTENDED, "limits@openssh.com")
    assert kind == CMD_EXTENDED_REPLY
    packet, read, write, handles = struct.unpack("!4Q", message.get_remainder())
    assert packet >= 34000 and read >= 32768 and write >= 32768 and handles > 0
    assert raw.status(CMD_EXTENDED, "hardlink@openssh.com", "a", "b") == SFTP_OP_UNSUPPORTED
    assert raw.status(CMD_EXTENDED, "no-such@example.com") == SFTP_OP_UNSUPPORTED


def test_bogus_and_closed_handles_fail_at_once(session: Session) -> None:
    """Requests on a handle that was never opened, or is closed, fail immediately."""
    raw = session.raw
    handle = raw.open(session.path("f"), CREATE)
    assert session.close(handle) == SFTP_OK
    for bogus in (b"no such handle", handle):
        started = time.monotonic()
        assert raw.status(CMD_FSTAT, bogus) == SFTP_FAILURE
        assert raw.status(CMD_FSETSTAT, bogus, attributes({"size": 0})) == SFTP_FAILURE
        assert raw.status(CMD_EXTENDED, "fsync@openssh.com", bogus) == SFTP_NO_SUCH_FILE
        assert raw.status(CMD_CLOSE, bogus) == SFTP_NO_SUCH_FILE
        assert time.monotonic() - started < 5


def test_read_write_on_a_bogus_handle_fail_at_once(session: Session) -> None:
    """READ and WRITE on a handle that is not open get FX_FAILURE at once."""
    session.raw.sock.settimeout(5)
    handle = session.raw.open(session.path("f"), CREATE)
    assert session.close(handle) == SFTP_OK
    for bogus in (b"no such handle", handle):
        assert session.read(bogus, 0, 10) == SFTP_FAILURE
        assert session.write(bogus, 0, b"x") == SFTP_FAILURE


def test_invalid_utf8_name_is_refused_clearly(session: Session) -> None:
    """A name that is not UTF-8 gets FX_BAD_MESSAGE saying so; nothing is created."""
    raw = session.raw
    bad = session.base.encode() + b"/caf\xe9"
    reply = raw.call(CMD_OPEN, bad, CREATE, attributes())
    kind, message = reply
    assert kind != CMD_HANDLE
    assert message.get_int() == SFTP_BAD_MESSAGE
    assert "UTF-8" in message.get_text()
    assert raw.status(CMD_MKDIR, bad, attributes()) == SFTP_BAD_MESSAGE
    assert session.sftp.listdir(session.base) == []


@pytest.mark.parametrize("char", ["a", "é", "😀"])
def test_names_up_to_255_bytes(session: Session, char: str) -> None:
    """A 255-byte name works (in one- to four-byte characters); 256 bytes is refused."""
    size = len(char.encode())
    name = char * (255 // size) + "b" * (255 % size)
    assert len(name.encode()) == 255
    session.put(name, b"long")
    assert session.sftp.listdir(session.base) == [name]
    assert session.get(session.path(name)) == b"long"
    too_long = name + "c"
    status = session.raw.status(CMD_OPEN, session.path(too_long), CREATE, attributes())
    assert status == SFTP_BAD_MESSAGE


def test_names_are_nfc_both_ways(session: Session) -> None:
    """A name sent in NFD is stored and listed in NFC, and found by either form."""
    nfd = unicodedata.normalize("NFD", "Café-Ångström")
    nfc = unicodedata.normalize("NFC", nfd)
    assert nfd != nfc
    session.put(nfd, b"unicode")
    assert session.sftp.listdir(session.base) == [nfc]
    assert session.get(session.path(nfc)) == b"unicode"
    assert session.get(session.path(nfd)) == b"unicode"
    session.sftp.mkdir(session.path(unicodedata.normalize("NFD", "Répertoire")))
    assert "Répertoire" in session.sftp.listdir(session.base)
    status = session.raw.status(CMD_OPEN, session.path(nfc), CREATE | SFTP_FLAG_EXCL, attributes())
    assert status == SFTP_FAILURE


def test_openssh_9_extensions(session: Session, shared_gateway: RunningGateway) -> None:  # noqa: F811
    """expand-path and home-directory answer with a NAME; users-groups-by-id names the
    account; lsetstat sets a link's own times; copy-data copies between two handles."""
    raw = session.raw
    for name in (
        b"expand-path@openssh.com",
        b"home-directory",
        b"users-groups-by-id@openssh.com",
        b"lsetstat@openssh.com",
        b"copy-data",
    ):
        assert name in raw.extensions
    user = shared_gateway.user
    for asked, expected in (
        ("~", "/"),
        (f"~/{session.base[1:]}/x", f"{session.base}/x"),
        (f"~{user}", "/"),
        ("/a/../b", "/b"),
    ):
        kind, message = raw.call(CMD_EXTENDED, "expand-path@openssh.com", asked)
        assert kind == CMD_NAME and message.get_int() == 1
        assert message.get_text() == expected
    assert raw.status(CMD_EXTENDED, "expand-path@openssh.com", "~nobody/x") == SFTP_NO_SUCH_FILE
    kind, message = raw.call(CMD_EXTENDED, "home-directory", user)
    assert kind == CMD_NAME and message.get_int() == 1 and message.get_text() == "/"

    attrs = session.sftp.lstat(session.base)
    uid_gid = struct.pack("!LL", attrs.st_uid, 4_000_000_000)
    kind, message = raw.call(
        CMD_EXTENDED, "users-groups-by-id@openssh.com", uid_gid, struct.pack("!L", attrs.st_gid)
    )
    assert kind == CMD_EXTENDED_REPLY
    users = paramiko.Message(message.get_binary())
    assert users.get_text() == user and users.get_text() == ""
    assert paramiko.Message(message.get_binary()).get_text() == user

    target = session.put("target.txt", b"0123456789")
    session.sftp.symlink("target.txt", session.path("link"))
    assert raw.status(
        CMD_EXTENDED, "lsetstat@openssh.com", session.path("link"),
        attributes({"atime": 1_000_000, "mtime": 1_000_000}),
    ) == SFTP_OK  # fmt: skip
    assert session.sftp.lstat(session.path("link")).st_mtime == 1_000_000
    assert session.sftp.stat(session.path("link")).st_mtime != 1_000_000

    source = raw.open(target, SFTP_FLAG_READ)
    copy = raw.open(session.path("copy.txt"), CREATE | SFTP_FLAG_TRUNC)
    status = raw.status(CMD_EXTENDED, "copy-data", source, Int64(2), Int64(5), copy, Int64(0))
    assert status == SFTP_OK
    assert session.close(source) == SFTP_OK and session.close(copy) == SFTP_OK
    assert session.get(session.path("copy.txt")) == b"23456"
    bogus = raw.status(CMD_EXTENDED, "copy-data", b"nope", Int64(0), Int64(0), b"nope", Int64(0))
    assert bogus == SFTP_FAILURE


def test_symlinked_directories_inside_paths(session: Session) -> None:
    """With ld -> d, ld/x opens, lists and is created in d, as on OpenSSH."""
    session.sftp.mkdir(session.path("d"))
    session.put("d/x", b"in d")
    session.sftp.symlink("d", session.path("ld"))
    assert session.get(session.path("ld/x")) == b"in d"
    assert session.sftp.listdir(session.path("ld")) == ["x"]
    session.put("ld/y", b"through the link")
    assert sorted(session.sftp.listdir(session.path("d"))) == ["x", "y"]
    assert session.sftp.normalize(session.path("ld/y")) == session.path("d/y")
    session.sftp.symlink("loop2", session.path("loop1"))
    session.sftp.symlink("loop1", session.path("loop2"))
    with pytest.raises(OSError, match="too many levels of symbolic links"):
        session.sftp.stat(session.path("loop1/x"))
    session.sftp.symlink("../../../../..", session.path("up"))
    assert session.sftp.normalize(session.path("up")) == "/"


@pytest.mark.parametrize(
    "attrs",
    [
        {"size": 2**40 + 5, "uid": 1000, "gid": 100, "permissions": 0o100644,
         "atime": 1_700_000_000, "mtime": 1_700_000_001},
        {"size": 0, "permissions": 0o40755},
        {"size": 7, "uid": 1, "gid": 2, "permissions": 0o100600, "atime": 3, "mtime": 4,
         "ext_vendor@example.com": b"x"},
        {},
    ],
)  # fmt: skip
def test_attributes_are_packed_as_conch_packs_them(attrs: dict[str, object]) -> None:
    """The gateway packs the six usual attributes of a STAT reply in one call; every
    attribute dict, usual or not, gets the bytes Conch's own packing gives."""
    from twisted.conch.ssh.filetransfer import FileTransferBase

    from gateway.sftp.protocol import GatewayFileTransferServer

    server = object.__new__(GatewayFileTransferServer)
    conch = object.__new__(FileTransferBase)
    assert server._packAttributes(attrs) == conch._packAttributes(attrs)
