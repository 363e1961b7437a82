"""The server transport's part of the pre-auth limits: the login grace time and eviction.

:class:`LoginDeadline` is mixed into the gateway's SSH server transport. From
the connection's first moment it runs the ``login_grace_time`` timer; it keeps
the connection's :class:`~gateway.sftp.preauth.Startup` (its place among the
connections waiting to log in) up to date with when bytes last arrived, lets
the :class:`~gateway.sftp.preauth.ConnectionGate` close it when idle, and
gives the place back at login or close. Its factory must have ``reactor``,
``limits`` (:class:`~gateway.sftp.preauth.PreauthLimits`) and ``gate``.
"""

from __future__ import annotations

from typing import Any

from twisted.conch.ssh.transport import DISCONNECT_BY_APPLICATION, SSHServerTransport
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from gateway.sftp.preauth import Startup, source_of

__all__ = ["LoginDeadline"]


class LoginDeadline(SSHServerTransport):
    """Closes a connection that has not logged in within the grace time (see the module)."""

    #: Held until the client logs in (or goes): it counts among those waiting to log in.
    startup: Startup | None = None
    #: Failed login attempts on this connection (the userauth service's ``loginAttempts``).
    failed_logins = 0
    _grace: IDelayedCall | None = None
    _abort: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """Start the grace time, then as usual."""
        factory: Any = self.factory
        self._grace = factory.reactor.callLater(
            factory.limits.login_grace_time, self._grace_time_over
        )
        if self.startup is not None:
            self.startup.evict = self._evicted
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        """Note that a connection waiting to log in is active, then as usual."""
        if self.startup is not None and not self.startup.finished:
            factory: Any = self.factory
            self.startup.last_active = factory.reactor.seconds()
        super().dataReceived(data)

    def logged_in(self) -> None:
        """The client logged in: the grace time and the pre-auth limits no longer apply."""
        self._stop_grace()
        if self.startup is not None:
            self.startup.logged_in()

    def _stop_grace(self) -> None:
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._grace = None

    def _evicted(self) -> None:
        """Closed, idle, to make room for a new connection from the same address."""
        self._close(b"too many connections waiting to log in from your address")

    def _grace_time_over(self) -> None:
        self._grace = None
        factory: Any = self.factory
        assert self.transport is not None
        peer = self.transport.getPeer()
        grace = factory.limits.login_grace_time
        factory.gate.refusals.refused(
            source_of(str(getattr(peer, "host", peer))), f"did not log in within {grace:g} s"
        )
        self._close(b"login grace time is over")

    def _close(self, reason: bytes) -> None:
        """Disconnect; a client that reads nothing could hold the close up: abort it soon."""
        self._stop_grace()
        assert self.transport is not None
        self.sendDisconnect(DISCONNECT_BY_APPLICATION, reason)
        abort = getattr(self.transport, "abortConnection", self.transport.loseConnection)
        factory: Any = self.factory
        self._abort = factory.reactor.callLater(5, abort)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Stop the timers; the connection no longer counts as waiting to log in."""
        self._stop_grace()
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        self._abort = None
        if self.startup is not None:
            self.startup.done()
        super().connectionLost(reason)
