"""The SFTP port's TCP connections: replies written while a read is handled leave at the end
of that read, in order and whole, whatever their size, and closes still flush first."""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from gateway.listening import bound_address, listen_tcp
from gateway.sftp.busypoll import BusyPoll
from gateway.sftp.tcpflush import ReplyFlushingPort, ReplyFlushingServer

BIG = 8 * 1024 * 1024  # more than loopback's socket buffers take at once

LOCK_STEP = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for n in range(200):
    line = b"later\\n" if sys.argv[2] == "later" else b"%d\\n" % n
    s.sendall(line)
    got = b""
    while not got.endswith(b"\\n"):
        got += s.recv(100)
    assert got == line, (got, line)
print("answered", n + 1)
"""
"""A client in a process of its own: 200 requests, each sent once the last was answered
(``later``: each answered on the reactor turn after its read)."""


class Answering(Protocol):
    """Answers each request line: ``big`` with BIG bytes, ``later`` on the next reactor
    turn, ``bye`` with a reply and then a close, anything else with itself."""

    made: list[Answering] = []

    def connectionMade(self) -> None:
        Answering.made.append(self)

    def dataReceived(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        for line in data.split(b"\n"):
            if line == b"big":
                transport.write(b"B" * BIG + b"\n")
            elif line == b"later":
                reactor.callLater(0, transport.write, b"later\n")
            elif line == b"bye":
                transport.write(b"bye\n")
                transport.loseConnection()
            elif line:
                transport.write(line + b"\n")


class Collecting(Protocol):
    """Keeps what arrives; fires ``got`` once ``expected`` bytes came, ``ended`` on close."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = bytearray()
        self.got: Deferred[bytes] = Deferred()
        self.ended: Deferred[None] = Deferred()

    def send(self, data: bytes) -> None:
        """Send bytes to the server."""
        assert self.transport is not None
        self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.expected and not self.got.called:
            self.got.callback(bytes(self.received))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.got.called:
            self.got.callback(bytes(self.received))
        self.ended.callback(None)


class ReplyFlushingTests(TestCase):
    """A ReplyFlushingPort on loopback, driven by a plain TCP client."""

    def setUp(self) -> None:
        Answering.made = []
        factory = Factory.forProtocol(Answering)
        self.port = listen_tcp(
            reactor, factory, "127.0.0.1", 0, "test", port_type=ReplyFlushingPort
        )
        self.addCleanup(self.port.stopListening)

    async def _client(self, expected: int) -> Collecting:
        client = Collecting(expected)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", bound_address(self.port)[1])
        await connectProtocol(endpoint, client)
        self.addCleanup(lambda: client.transport.loseConnection() if client.transport else None)
        return client

    async def test_replies_arrive_whole_and_in_order(self) -> None:
        """Small replies, one too big for the socket at once, and one written on a later
        turn: every byte arrives, in the order written."""
        expected = b"a\n" + b"B" * BIG + b"\n" + b"b\n" + b"later\n" + b"c\n"
        client = await self._client(len(expected))
        client.send(b"a\nbig\nb\nlater\n")
        client.send(b"c\n")
        received = await client.got
        # "later" is written a turn after the read that asked for it: "c" may come first
        assert sorted(received.split(b"\n")) == sorted(expected.split(b"\n"))
        assert received.startswith(b"a\n" + b"B" * BIG + b"\nb\n")

    async def test_an_answer_sent_during_the_read_leaves_without_registering_to_write(
        self,
    ) -> None:
        """A reply the kernel takes at once is sent at the end of the read: the connection
        is never left waiting for the reactor to find it writable."""
        client = await self._client(len(b"ping\n"))
        client.send(b"ping\n")
        assert await client.got == b"ping\n"
        [server] = Answering.made
        assert isinstance(server.transport, ReplyFlushingServer)
        assert server.transport not in reactor.getWriters()

    async def test_a_close_after_a_reply_sends_the_reply_first(self) -> None:
        """A protocol that answers and closes in one read: the client gets the answer,
        then the end of the connection."""
        client = await self._client(len(b"x\nbye\n"))
        client.send(b"x\nbye\n")
        await client.ended
        assert bytes(client.received) == b"x\nbye\n"

    async def test_the_cpu_of_each_read_is_told_to_the_port(self) -> None:
        """A port given ``served`` is told the thread's CPU seconds of every read its
        connections handled, the replies' sending included; one without it is not asked."""
        told: list[float] = []
        assert isinstance(self.port, ReplyFlushingPort)
        self.port.served = told.append
        client = await self._client(len(b"a\n" + b"B" * BIG + b"\n"))
        client.send(b"a\nbig\n")
        await client.got
        assert told and all(seconds >= 0 for seconds in told)
        assert sum(told) > 0  # making and sending 8 MiB takes measurable CPU

    async def _lock_step(self, kind: str) -> BusyPoll:
        assert isinstance(self.port, ReplyFlushingPort)
        busy = self.port.busy = BusyPoll(0.05, runnable=None)
        port = str(bound_address(self.port)[1])
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-c", LOCK_STEP, port, kind], env=None
        )
        assert code == 0, err
        assert out.split() == [b"answered", b"200"]
        return busy

    async def test_a_client_in_lock_step_is_polled_for(self) -> None:
        """A port given a busy poll: a client sending each request as soon as the last
        is answered has every one answered, and its requests are found by polling,
        read without going back to the reactor."""
        busy = await self._lock_step("now")
        assert busy.caught > 0
        assert busy.polls >= busy.caught

    async def test_after_a_reply_written_later_too(self) -> None:
        """Replies written on a later reactor turn (a request answered by the grid or a
        thread) leave when the socket is writable; then the next request is polled for
        as after a read."""
        busy = await self._lock_step("later")
        assert busy.caught > 0
