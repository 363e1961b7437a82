"""The storage HTTP server driven in process for fuzzing: bytes in, responses and checks out.

:class:`SiteUnderTest` is the real twisted.web site of a storage node
(:func:`storage.http_server.make_storage_site`, with its limits) over the real
storage core and disk backend, its connections carried by memory transports and
its deadlines by a ``task.Clock``: the same code as a node, minus sockets and
TLS, so one input takes well under a millisecond. :func:`check_input` sends
one input on a fresh connection and raises :class:`Finding` for anything a
hardened server must never do: raise, log a failure, answer 5xx, change
stored data while refusing, leave a connection or timer behind, or stop
serving a session opened before the input.

What is sent is :mod:`tests.storage.http_fuzz_targets`'s. No pytest here.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from attrs import define, frozen
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.logger import globalLogPublisher

from storage import wire
from storage.disk import DiskBackend
from storage.http_limits import HttpLimits, LimitedChannel
from storage.http_server import make_storage_site
from storage.interfaces import TestWriteVectors, WriteVector
from storage.server import StorageServer
from tests.logged_failures import LoggedFailures

START = 1_700_000_000.0
SWISSNUM = b"fuzzswissnumfuzzswissnumfuzzswissnumfuzzswissnum1234"
RENEW, CANCEL, UPLOAD, WE = b"r" * 32, b"c" * 32, b"u" * 32, b"w" * 32
SI_DONE = bytes(range(16))  # a complete immutable share 0 (1000 bytes)
SI_OPEN = bytes(range(16, 32))  # shares 0-2 allocated (3000 bytes each), share 0 half written
SI_SLOT = bytes(range(32, 48))  # a mutable slot, share 0 (500 bytes), write enabler WE
SI_FREE = bytes(range(48, 64))  # nothing stored
STORAGE_INDEXES = [wire.si_b2a(si) for si in (SI_DONE, SI_OPEN, SI_SLOT, SI_FREE)]
LIMITS = HttpLimits(max_header_size=4096, max_body_size=65536, request_timeout=10)
AUTH = wire.format_authorization(SWISSNUM)


class Finding(AssertionError):
    """The server misbehaved on an input (the message says how)."""


@frozen
class Response:
    """One parsed HTTP response."""

    code: int
    headers: dict[bytes, bytes]
    body: bytes


def parse_responses(data: bytes) -> list[Response]:
    """The responses in a server's output, in order (interim 1xx ones left out)."""
    responses = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        if not sep:
            raise Finding(f"truncated response head: {head[:200]!r}")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit():
            raise Finding(f"bad status line {lines[0][:200]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        code = int(parts[1])
        if 100 <= code < 200:
            continue
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                size_line, _, data = data.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                body, data = body + data[:size], data[size + 2 :]
                if size == 0:
                    break
        else:
            length = int(headers.get(b"content-length", b"0"))
            body, data = data[:length], data[length:]
        responses.append(Response(code, headers, body))
    return responses


@define(eq=False)
class Connection:
    """One client connection to the site over a memory transport."""

    protocol: LimitedChannel
    transport: StringTransportWithDisconnection

    def send(self, data: bytes) -> None:
        """Deliver bytes to the server (as one read)."""
        if self.transport.connected:
            self.protocol.dataReceived(data)

    def take(self) -> list[Response]:
        """The responses written since the last call."""
        data = self.transport.value()
        self.transport.clear()
        return parse_responses(data)

    def close(self) -> None:
        """The client goes away."""
        if self.transport.connected:
            self.transport.loseConnection()


def request(
    method: bytes,
    path: str,
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    body: bytes = b"",
    auth: bool = True,
) -> bytes:
    """A request's bytes: Host, Authorization (unless ``auth`` is false), Content-Length."""
    lines = [method + b" " + path.encode("latin-1") + b" HTTP/1.1", b"Host: storage"]
    if auth:
        lines.append(b"Authorization: " + AUTH)
    lines += [name + b": " + value for name, value in headers]
    if body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def secret(kind: wire.SecretKind, value: bytes) -> tuple[bytes, bytes]:
    """One ``X-Tahoe-Authorization`` header."""
    return (b"X-Tahoe-Authorization", wire.format_secret(kind, value))


VERSION = request(b"GET", "/storage/v1/version")


def snapshot(directory: Path) -> dict[str, object]:
    """Every file under ``directory``: the hash of its contents (size and mtime if over 64 KiB,
    such as the append-only redo log)."""
    result: dict[str, object] = {}
    for parent, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(parent, name)
            status = os.stat(path)
            if status.st_size > 65536:
                result[path] = (status.st_size, status.st_mtime_ns)
            else:
                with open(path, "rb") as f:
                    result[path] = hashlib.blake2b(f.read(), digest_size=16).digest()
    return result


class SiteUnderTest:
    """A storage node's site over a fresh disk store, seeded with shares of each kind."""

    def __init__(self, directory: Path, limits: HttpLimits = LIMITS) -> None:
        self.directory = directory
        self.clock = Clock()
        self.clock.advance(START)
        self.backend = DiskBackend(directory)
        self.core = StorageServer(self.backend, self.clock)
        self.site = make_storage_site(self.core, SWISSNUM, clock=self.clock, limits=limits)
        self.limits = limits
        self._ports = 40000
        self._seed()
        self.stored = snapshot(directory)

    def _seed(self) -> None:
        core = self.core
        core.allocate_buckets(SI_DONE, frozenset({0}), 1000, UPLOAD, RENEW, CANCEL)
        core.write_immutable(SI_DONE, 0, UPLOAD, 0, os.urandom(1000))
        core.allocate_buckets(SI_OPEN, frozenset({0, 1, 2}), 3000, UPLOAD, RENEW, CANCEL)
        core.write_immutable(SI_OPEN, 0, UPLOAD, 0, b"h" * 1500)
        vectors = TestWriteVectors(write=(WriteVector(0, os.urandom(500)),))
        core.read_test_write(SI_SLOT, WE, RENEW, CANCEL, {0: vectors}, ())

    def connect(self) -> Connection:
        """A new client connection from 127.0.0.1."""
        self._ports += 1
        peer = IPv4Address("TCP", "127.0.0.1", self._ports)
        protocol = self.site.buildProtocol(peer)
        assert isinstance(protocol, LimitedChannel)
        transport = StringTransportWithDisconnection(peerAddress=peer)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return Connection(protocol, transport)

    def expect_served(self, connection: Connection) -> None:
        """The connection got exactly one answer, a 200 to GET /version."""
        responses = connection.take()
        if [r.code for r in responses] != [200]:
            raise Finding(f"a valid request was not served: {[r.code for r in responses]}")

    def close(self) -> None:
        """Close the store."""
        self.backend.close()


@contextmanager
def site_under_test(limits: HttpLimits = LIMITS) -> Iterator[SiteUnderTest]:
    """A :class:`SiteUnderTest` in a temporary directory (in memory when /dev/shm exists)."""
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=shm, prefix="storage-fuzz-") as directory:
        site = SiteUnderTest(Path(directory), limits)
        try:
            yield site
        finally:
            site.close()


def check_input(site: SiteUnderTest, data: bytes, pieces: int = 1) -> list[Response]:
    """Send ``data`` on a new connection (in ``pieces`` reads) while another session is open,
    let every deadline pass, and check the server; answer the responses. Raises
    :class:`Finding`."""
    failures = LoggedFailures()
    globalLogPublisher.addObserver(failures)
    try:
        session = site.connect()  # another client's session, open all along
        connection = site.connect()
        step = max(1, -(-len(data) // pieces))
        try:
            for i in range(0, len(data), step):
                connection.send(data[i : i + step])
            responses = connection.take()
            session.send(VERSION)
            site.expect_served(session)
            # Whatever is left unfinished must time out: a client may never finish.
            for _ in range(3):
                site.clock.advance(site.limits.request_timeout * 2)
        except Finding:
            raise
        except Exception as e:
            raise Finding(f"the server raised {type(e).__name__}: {e}") from e
        responses += connection.take()
        if connection.transport.connected or session.transport.connected:
            raise Finding("a connection outlived every deadline")
        fresh = site.connect()
        fresh.send(VERSION)
        site.expect_served(fresh)
        fresh.close()
    finally:
        globalLogPublisher.removeObserver(failures)
    if failures.events:
        raise Finding(f"the server logged a failure: {failures.events[0].get('log_format')}")
    for response in responses:
        # 503 (busy) and 507 (an allocation larger than the free space) are refusals.
        if response.code >= 500 and response.code not in (503, 507):
            raise Finding(f"the server answered {response.code}: {response.body[:200]!r}")
        if SWISSNUM in response.body or base64.b64encode(SWISSNUM) in response.body:
            raise Finding("a response carries the swissnum")
    if site.site.counts.served or site.site.counts.refusing:
        raise Finding(f"closed connections still counted: {site.site.counts}")
    leftover = [c for c in site.clock.getDelayedCalls() if c.active()]
    if leftover:
        raise Finding(f"timers left behind: {leftover}")
    stored = snapshot(site.directory)
    if stored != site.stored:
        if all(r.code >= 400 for r in responses):
            raise Finding(f"a refused request changed stored data: {[r.code for r in responses]}")
        site.stored = stored
    return responses
