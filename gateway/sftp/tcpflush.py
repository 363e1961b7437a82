"""TCP connections that send the replies to what they read before the reactor turns again.

Twisted's TCP transport never sends from ``write``: it buffers the bytes and
registers the socket for writing (an ``epoll_ctl``), and the next turn of the
reactor finds it writable, sends, and unregisters it (another ``epoll_ctl``).
For an SFTP request answered at once (STAT, LSTAT, READDIR from a directory
in memory, OPEN, CLOSE of a file only read) that is two system calls and a
reactor turn per request, and the reply waits behind whatever else that turn
does, every other connection's reads included.

:class:`ReplyFlushingServer` sends what was written while it handled the
bytes it read, once, at the end of that read: the replies to every request in
one read still leave together, in one ``send``, and a connection only
registers for writing when the kernel did not take everything. Writes made at
any other time (a reply that waited for the grid or a thread) take Twisted's
usual path.

When every reply went out so, or once a reply written later has left, the
connection may poll for the client's next request for a moment before the
reactor thread sleeps
(:mod:`gateway.sftp.busypoll`, the port's :attr:`ReplyFlushingPort.busy`), and
read it here.
"""

from __future__ import annotations

from collections.abc import Callable
from time import thread_time

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone, ConnectionLost

from gateway.sftp.busypoll import BusyPoll, ConnectionPoll


class ReplyFlushingServer(tcp.Server):
    """A server-side TCP connection that flushes, at the end of each read, what the
    protocol wrote while handling it (see the module's docstring)."""

    _in_read = False
    _write_wanted = False
    _sent_all = False
    _poll: ConnectionPoll | None = None
    _poll_made = False

    def startWriting(self) -> None:
        """Register for writing, except during a read: :meth:`doRead` sends then."""
        if self._in_read:
            self._write_wanted = True
            return
        super().startWriting()

    def doRead(self) -> ConnectionLost | ConnectionDone | None:  # type: ignore[override]
        """Read and hand the bytes to the protocol, then send its replies (or register
        for writing what the kernel did not take); the thread's CPU for all that goes to
        the port's ``served``, if it has one."""
        served = getattr(self.server, "served", None)
        if served is None:
            return self._serve()
        started = thread_time()
        try:
            return self._serve()
        finally:
            served(thread_time() - started)

    def _serve(self) -> ConnectionLost | ConnectionDone | None:
        """Read and answer; again while the client's next request comes within the busy
        poll's limit of every reply having been sent."""
        poll = self._poller()
        if poll is None:
            return self._read_and_send()
        poll.arrived()
        while True:
            why = self._read_and_send()
            if why is not None or not self._sent_all or not poll.wait():
                return why

    def doWrite(self) -> Exception | int | None:  # type: ignore[override]
        """Send what waited for the socket (replies written outside a read: a request
        answered by the grid or a thread); once all of it is sent, poll for the client's
        next request as after a read, and read it here."""
        why = super().doWrite()
        poll = self._poll
        if (
            why is None
            and poll is not None
            and not self.dataBuffer
            and not self._tempDataLen
            and self.connected
            and not self.disconnecting
            and poll.wait()
        ):
            return self.doRead()
        return why

    def _poller(self) -> ConnectionPoll | None:
        if not self._poll_made:
            self._poll_made = True
            busy: BusyPoll | None = getattr(self.server, "busy", None)
            if busy is not None:
                self._poll = busy.connection(self.fileno(), self.reactor)
        return self._poll

    def _read_and_send(self) -> ConnectionLost | ConnectionDone | None:
        self._sent_all = False
        self._in_read = True
        try:
            why = super().doRead()
        finally:
            self._in_read = False
        if self._write_wanted:
            self._write_wanted = False
            if why is None and self._can_send_now():
                self._send_buffered()
            elif not getattr(self, "_aborting", False) and not self.disconnected:
                super().startWriting()
        return why

    def _can_send_now(self) -> bool:
        """Whether the written bytes can go out here: an open, unthrottled connection
        with no older bytes still waiting (those keep Twisted's path, in order)."""
        return bool(
            self.connected
            and not self.disconnecting
            and not self._writeDisconnecting
            and not getattr(self, "_aborting", False)
            and self.producer is None
            and not self.TLS
            and self.offset == len(self.dataBuffer)
            and self._tempDataLen
        )

    def _send_buffered(self) -> None:
        pending = self._tempDataBuffer
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        self._tempDataBuffer = []
        self._tempDataLen = 0
        sent = self.writeSomeData(data)
        if isinstance(sent, int) and sent == len(data):
            self.dataBuffer = b""
            self.offset = 0
            self._sent_all = True
            return
        # The kernel took part of it, or the send failed: the rest (or the failure,
        # found again by the next doWrite) takes Twisted's usual path.
        self.dataBuffer = data
        self.offset = sent if isinstance(sent, int) else 0
        super().startWriting()


class ReplyFlushingPort(tcp.Port):
    """A TCP listening port whose connections are :class:`ReplyFlushingServer`."""

    transport = ReplyFlushingServer
    #: Told the CPU seconds each read of a connection took to serve (see
    #: :class:`gateway.intents.pacing.ClientActivity`); None: not measured.
    served: Callable[[float], None] | None = None
    #: How its connections poll for a client's next request; None: they never do.
    busy: BusyPoll | None = None
