"""The SFTP server driven in process for fuzzing: packets in, replies and checks out.

:class:`GatewayUnderTest` is the SFTP side of a gateway node as users reach it
(the account avatar, its session channel running the ``sftp`` subsystem,
:class:`~gateway.sftp.protocol.GatewayFileTransferServer` over
:class:`~gateway.sftp.server.GatewaySFTPServer`, the filesystem layer, staging,
the upload queue, directory write-back and the object store) over an in-memory
storage server, its SSH connection a memory stand-in and its time a
``task.Clock``: the same code as a node, minus sockets and SSH transport, so
one input takes about a millisecond. :func:`check_input` plays one input on
a fresh session while another session stays open, and raises :class:`Finding`
for anything a hardened server must never do: raise, log a failure, leave a
request unanswered or work pending after every deadline, leak a handle, put
the account's capability in a reply, change what is stored while refusing
every request, or stop serving the other session.

What is sent is :mod:`tests.sftp.sftp_fuzz_targets`'s. No pytest here.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from attrs import define, field, frozen
from twisted.conch.ssh.common import NS
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger, globalLogPublisher
from twisted.python.failure import Failure

from gateway.account_records import Account
from gateway.fs.gridfs import GridFilesystem
from gateway.fs.interfaces import OpenFlags, SetAttributes
from gateway.fs.paths import split
from gateway.fs.staging import StagingArea
from gateway.fs.volume import DIRECTORY_CACHE_SECONDS, Volume
from gateway.grid.local import LocalStorageClient
from gateway.objects.caps import DirectoryWriteCap
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.immutable_format import EncodingParams
from gateway.objects.store import ObjectStore
from gateway.objects.writeback import DirectoryWriteBack
from gateway.sftp.account_limits import AccountSlots
from gateway.sftp.avatar import AccountAvatar, _SFTPOnlySession
from gateway.sftp.protocol import GatewayFileTransferServer
from gateway.sftp.server import GatewaySFTPServer
from gateway.sftp.sessions import SessionRegistry
from gateway.uploads.journal import UploadJob, UploadJournal
from gateway.uploads.queue import UploadQueue
from storage.memory import MemoryBackend
from storage.server import StorageServer
from tests.logged_failures import LoggedFailures

T = TypeVar("T")

START = 1_700_000_000.0
USER = "fuzz"
#: The files the namespace starts with (path: contents); and a directory, a symlink.
FILES = {"/file": bytes(range(256)) * 4, "/dir/inner": b"inner contents", "/empty": b""}
DIRECTORIES = ("/dir", "/dir/sub")
SYMLINKS = {"/link": "/file", "/dangling": "/nowhere"}
#: The bystander's file, read back after every input.
KEEP, KEPT = "/keep/this", b"kept: " + bytes(range(200))
#: Bytes of staging and of the grid's one server (small: running out is a path to test),
#: and the largest file (small: a sparse file costs its whole size to upload).
STAGING_QUOTA = 64 * 1024 * 1024
GRID_CAPACITY = 256 * 1024 * 1024
MAX_FILE_SIZE = 64 * 1024 * 1024
#: Packet types of replies.
FXP_VERSION, FXP_STATUS, FXP_HANDLE, FXP_DATA, FXP_NAME, FXP_ATTRS = 2, 101, 102, 103, 104, 105
FXP_EXTENDED_REPLY = 201
FX_OK = 0
#: Packet types of the requests a reply may answer (INIT is answered by VERSION).
SETTLE_SECONDS = 3600.0


class Finding(AssertionError):
    """The server misbehaved on an input (the message says how)."""


@frozen
class HandleRef:
    """In a request: the wire handle of the session's ``index``-th HANDLE reply (modulo how
    many it got; a made-up handle when it got none)."""

    index: int


@frozen
class Request:
    """One well-framed request: its type, id and fields (bytes, or handles resolved when
    it is sent). A ``setup`` request changes nothing stored (it opens a handle for the
    requests after it): its success does not excuse a change."""

    kind: int
    request_id: int
    fields: tuple[bytes | HandleRef, ...]
    setup: bool = False


#: One step of an input: raw bytes sent as they are, or a request.
Step = bytes | Request


@frozen
class Reply:
    """One reply packet: its type, request id (None for VERSION) and status code."""

    kind: int
    request_id: int | None
    code: int | None
    body: bytes


def parse_replies(data: bytes) -> list[Reply]:
    """The reply packets in what the server sent, checking their framing."""
    replies = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 5:
            raise Finding(f"a truncated reply: {data[offset:]!r}")
        (length,) = struct.unpack_from("!L", data, offset)
        body = data[offset + 4 : offset + 4 + length]
        if length < 1 or len(body) < length:
            raise Finding(f"a reply framed wrong: length {length}, {len(body)} bytes")
        kind = body[0]
        request_id = code = None
        if kind != FXP_VERSION:
            if length < 5:
                raise Finding(f"a reply of type {kind} without a request id")
            (request_id,) = struct.unpack_from("!L", body, 1)
            if kind == FXP_STATUS:
                (code,) = struct.unpack_from("!L", body, 5)
        replies.append(Reply(kind, request_id, code, body))
        offset += 4 + length
    return replies


def packet(kind: int, request_id: int, *fields: bytes) -> bytes:
    """One request packet."""
    payload = bytes([kind]) + struct.pack("!L", request_id) + b"".join(fields)
    return struct.pack("!L", len(payload)) + payload


INIT = struct.pack("!LBL", 5, 1, 3)


class _Connection:
    """The SSH connection of one session channel, as far as the channel uses it: what it
    sends is kept, and the client closes the channel when the server does."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closing = False
        self.transport = None

    def sendData(self, channel: Any, data: bytes) -> None:
        self.sent.append(bytes(data))

    def sendExtendedData(self, channel: Any, kind: int, data: bytes) -> None:
        pass

    def sendEOF(self, channel: Any) -> None:
        pass

    def sendRequest(self, channel: Any, name: bytes, data: bytes, wantReply: bool = False) -> None:
        pass

    def sendClose(self, channel: Any) -> None:
        self.closing = True

    def adjustWindow(self, channel: Any, count: int) -> None:
        channel.localWindowLeft += count


@define(eq=False)
class Session:
    """One SFTP session: an SSH session channel running the ``sftp`` subsystem."""

    channel: _SFTPOnlySession
    connection: _Connection
    handles: list[bytes] = field(factory=list)
    closed: bool = False
    _read: int = 0

    @property
    def server(self) -> GatewayFileTransferServer:
        """The subsystem's protocol."""
        client = self.channel.client
        assert client is not None and client.transport is not None
        proto = client.transport.proto  # type: ignore[attr-defined]
        assert isinstance(proto, GatewayFileTransferServer)
        return proto

    def send(self, data: bytes) -> None:
        """Deliver bytes on the channel, as the SSH connection does (within the window)."""
        if self.closed or self.connection.closing or not data:
            return
        self.channel.localWindowLeft -= len(data)
        self.channel.dataReceived(data)

    def request(self, request: Request) -> None:
        """Send a request, its handle references resolved."""
        fields = []
        for item in request.fields:
            if isinstance(item, HandleRef):
                handle = self.handles[item.index % len(self.handles)] if self.handles else b"9"
                fields.append(NS(handle))
            else:
                fields.append(item)
        self.send(packet(request.kind, request.request_id, *fields))

    def take(self) -> list[Reply]:
        """The replies sent since the last call (HANDLE replies remembered)."""
        data = b"".join(self.connection.sent[self._read :])
        self._read = len(self.connection.sent)
        replies = parse_replies(data)
        for reply in replies:
            if reply.kind == FXP_HANDLE:
                (length,) = struct.unpack_from("!L", reply.body, 5)
                self.handles.append(reply.body[9 : 9 + length])
        return replies

    def close(self) -> None:
        """The client goes away (the channel closes; the subsystem's connection is lost)."""
        if not self.closed:
            self.closed = True
            self.channel.closed()


class GatewayUnderTest:
    """The SFTP side of a gateway over a fresh in-memory grid, its namespace seeded."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.clock = Clock()
        self.clock.advance(START)
        grid = [LocalStorageClient(StorageServer(MemoryBackend(GRID_CAPACITY), self.clock))]
        secrets = GatewaySecrets(convergence=b"c" * 32, lease=b"l" * 32)
        self.store = ObjectStore(lambda: grid, secrets, EncodingParams(1, 1, 1), self.clock)
        journal = UploadJournal(directory / "uploads")
        self.queue = UploadQueue(
            self.clock, journal, self._upload, concurrency=8, settle=0.25, settle_limit=2.0
        )
        self.store.write_back = DirectoryWriteBack(
            directory / "directories",
            self.store.mutable_client,
            self.clock,
            activity=self.queue.activity,
        )
        self.staging = StagingArea(
            directory / "staging", STAGING_QUOTA, spare_files=0, max_file_size=MAX_FILE_SIZE
        )
        self.root_cap = DirectoryWriteCap.generate().to_string()
        self.volume = Volume(self.root_cap, self.store, self.staging, self.queue, self.clock)
        self.queue.startService()
        self.sessions = SessionRegistry(self.clock)
        account = Account(USER, self.root_cap)
        self.avatar = AccountAvatar(account, self._sftp_server, Logger(), AccountSlots())
        self._seed()
        self.bystander = self.connect()
        self.bystander.request(Request(3, 1, (NS(KEEP.encode()), struct.pack("!LL", 1, 0))))
        (opened,) = self.bystander.take()
        assert opened.kind == FXP_HANDLE, opened
        self.stored = self.snapshot()

    async def _upload(self, job: UploadJob) -> None:
        await self.volume.upload(job)

    def _sftp_server(self, avatar: AccountAvatar) -> GatewaySFTPServer:
        """As the node's SFTP part makes a session's server."""
        fs = GridFilesystem(self.volume)
        activity = self.volume.queue.client_active
        session = self.sessions.start(USER, "SSH-2.0-fuzz", "127.0.0.1", activity)
        return GatewaySFTPServer(fs, user=USER, clock=self.clock.seconds, session=session)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine to its end, letting time pass while it waits."""
        outcome: list[Any] = []
        Deferred.fromCoroutine(coroutine).addBoth(outcome.append)
        for _ in range(10_000):
            if outcome:
                break
            self.clock.advance(0.5)
        if not outcome:
            raise Finding("a filesystem call never ended")
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]  # type: ignore[no-any-return]

    def _seed(self) -> None:
        fs = GridFilesystem(self.volume)
        for path in (*DIRECTORIES, os.path.dirname(KEEP)):
            self.run(fs.mkdir(path, SetAttributes()))
        for path, data in {**FILES, KEEP: KEPT}.items():
            handle = self.run(fs.open(path, OpenFlags(write=True, create=True), SetAttributes()))
            self.run(handle.write(0, data))
            self.run(handle.close())
        for link, target in SYMLINKS.items():
            self.run(fs.symlink(link, target))
        self.settle()

    def connect(self) -> Session:
        """A new SFTP session, past INIT."""
        connection = _Connection()
        channel = _SFTPOnlySession(
            remoteWindow=2**31, remoteMaxPacket=32768, conn=connection, avatar=self.avatar
        )
        assert channel.request_subsystem(NS(b"sftp"))
        session = Session(channel, connection)
        session.send(INIT)
        (version,) = session.take()
        assert version.kind == FXP_VERSION, version
        return session

    def settle(self) -> None:
        """Let time pass until nothing is scheduled (every deadline passed), or a day."""
        for _ in range(int(86400 / SETTLE_SECONDS) + 1):
            if not any(call.active() for call in self.clock.getDelayedCalls()):
                return
            self.clock.advance(SETTLE_SECONDS)

    def snapshot(self) -> dict[str, object]:
        """What a new session sees: every path's kind, size, mode and mtime, and each file's
        capability (its contents while it is being written or uploaded) or each symlink's
        target."""
        fs = GridFilesystem(self.volume)
        seen: dict[str, object] = {}

        def walk(directory: str) -> None:
            listing = self.run(fs.list(directory))
            node = self.run(self.volume.directory(split(directory)))
            caps = self.run(node.list(max_age=DIRECTORY_CACHE_SECONDS))
            for name, attrs in listing:
                path = directory.rstrip("/") + "/" + name
                what: tuple[object, ...] = (attrs.kind, attrs.size, attrs.mode, attrs.mtime)
                if attrs.kind == "dir":
                    walk(path)
                elif attrs.kind == "symlink":
                    what += (self.run(fs.readlink(path)),)
                elif self.volume.overlay.local(split(path)) is None:
                    entry = caps.get(name)
                    what += (entry.cap.to_string() if entry and entry.cap else None,)
                else:
                    handle = self.run(fs.open(path, OpenFlags(read=True), SetAttributes()))
                    what += (self.run(handle.read(0, 1 << 20)),)
                    self.run(handle.close())
                seen[path] = what

        walk("/")
        return seen

    def expect_served(self, session: Session) -> None:
        """The bystander's session answers a STAT and a READ of its open file, rightly."""
        session.request(Request(17, 2, (NS(b"/"),)))
        session.request(Request(5, 3, (HandleRef(0), struct.pack("!QL", 0, 4096))))
        replies = session.take()
        kinds = [(r.kind, r.request_id) for r in replies]
        if kinds != [(FXP_ATTRS, 2), (FXP_DATA, 3)] or replies[1].body[9:] != KEPT:
            raise Finding(f"the other session was not served: {kinds}")

    def close(self) -> None:
        """End the bystander's session and stop the queue."""
        self.bystander.close()
        self.queue.stopService()
        self.settle()


@contextmanager
def gateway_under_test() -> Iterator[GatewayUnderTest]:
    """A :class:`GatewayUnderTest` in a temporary directory (in memory when /dev/shm exists)."""
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=shm, prefix="sftp-fuzz-") as directory:
        gateway = GatewayUnderTest(Path(directory))
        try:
            yield gateway
        finally:
            gateway.close()


def _changes(reply: Reply, setup: set[int]) -> bool:
    """Whether a reply says its request may have changed something: OK, or a handle (but
    for a setup request)."""
    if reply.kind == FXP_HANDLE:
        return reply.request_id not in setup
    return reply.kind == FXP_STATUS and reply.code == FX_OK


def check_input(gateway: GatewayUnderTest, steps: Sequence[Step], pieces: int = 1) -> list[Reply]:
    """Play ``steps`` on a new session (raw bytes in ``pieces`` reads) while the bystander's
    session is open, let every deadline pass, end the session and check the server; answer
    the replies. Raises :class:`Finding`."""
    failures = LoggedFailures()
    globalLogPublisher.addObserver(failures)
    replies: list[Reply] = []
    try:
        session = gateway.connect()
        try:
            for step in steps:
                if isinstance(step, Request):
                    session.request(step)
                else:
                    size = max(1, -(-len(step) // pieces))
                    for i in range(0, len(step), size):
                        session.send(step[i : i + size])
                replies += session.take()
            gateway.settle()
            replies += session.take()
            server = session.server
            if server._held and not server._ended:
                raise Finding(f"requests never answered: {sorted(server._held)[:5]}")
            gateway.expect_served(gateway.bystander)
            session.close()
            gateway.settle()
            replies += session.take()
        except Finding:
            raise
        except Exception as e:
            raise Finding(f"the server raised {type(e).__name__}: {e}") from e
        if server.openFiles or server.openDirs:
            raise Finding("handles left open after the session ended")
        sftp = server.client
        assert isinstance(sftp, GatewaySFTPServer)
        if sftp.handles:
            raise Finding(f"{sftp.handles} handles still counted after the session ended")
        if len(gateway.sessions.sessions) != 1:
            raise Finding(f"{len(gateway.sessions.sessions)} sessions registered, not 1")
        leftover = [c for c in gateway.clock.getDelayedCalls() if c.active()]
        if leftover:
            raise Finding(f"timers left behind: {leftover}")
        if gateway.volume.overlay.pending:
            raise Finding("uploads still pending after every deadline")
        gateway.expect_served(gateway.bystander)
    finally:
        globalLogPublisher.removeObserver(failures)
    if failures.events:
        event = failures.events[0]
        failure = event.get("log_failure")
        raise Finding(f"the server logged a failure: {event.get('log_format')} {failure!r}")
    secret = gateway.root_cap.encode()
    for reply in replies:
        if secret in reply.body or secret.split(b":")[-1] in reply.body:
            raise Finding("a reply carries the account's capability")
    stored = gateway.snapshot()
    if stored != gateway.stored:
        requests = [s for s in steps if isinstance(s, Request)]
        setup = {r.request_id for r in requests if r.setup}
        setup -= {r.request_id for r in requests if not r.setup}
        if not any(_changes(r, setup) for r in replies):
            changed = sorted(set(stored.items()) ^ set(gateway.stored.items()), key=str)[:3]
            raise Finding(f"a refused input changed what is stored: {changed}")
        gateway.stored = stored
    return replies
