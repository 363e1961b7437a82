"""Listening on TCP with errors a user can act on."""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet import tcp
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorFDSet

from gateway.service import StartupError


def listen_tcp(
    reactor: Any,
    factory: IProtocolFactory,
    host: str,
    port: int,
    what: str,
    choose: str = "",
    port_type: type[tcp.Port] | None = None,
) -> IListeningPort:
    """Listen on host:port or raise StartupError saying why not (address in use, ...).

    ``choose`` tells the user how to pick another port; it is added when the
    port is taken. ``port_type``, a subclass of Twisted's TCP port, is used on
    a reactor that watches file descriptors (not on a test's memory reactor).
    """
    try:
        listening: IListeningPort
        if port_type is not None and IReactorFDSet.providedBy(reactor):
            listening = port_type(port, factory, interface=host, reactor=reactor)
            listening.startListening()
        else:
            listening = reactor.listenTCP(port, factory, interface=host)
    except CannotListenError as e:
        raise listen_failure(e, what, host, port, choose) from None
    return listening


def listen_failure(
    error: CannotListenError, what: str, host: str, port: int, choose: str = ""
) -> StartupError:
    """The StartupError that says, in words, why listening on host:port failed."""
    reason = error.socketError
    code = getattr(reason, "errno", None)
    if code == errno.EADDRINUSE:
        cause = "address already in use" + (f"; {choose}" if choose else "")
    elif code == errno.EACCES:
        cause = "permission denied (ports below 1024 need privileges)"
    elif code == errno.EADDRNOTAVAIL:
        cause = "no such local address"
    else:
        cause = getattr(reason, "strerror", None) or str(reason)
    return StartupError(what, f"cannot listen on {hostport(host, port)}: {cause}")


def bound_address(listening: IListeningPort) -> tuple[str, int]:
    """The (host, port) a listening port actually got (resolves port 0)."""
    address = listening.getHost()
    return address.host, address.port  # type: ignore[attr-defined]


def hostport(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 literal."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
