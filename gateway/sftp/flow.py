"""Flow control between an SFTP session and its SSH channel.

A client may pipeline requests, and must never make the gateway hold more of
them than a bounded amount, however fast it sends and however slowly the
requests are served (staging, the grid) or their replies read. Two bounds do
it, as in OpenSSH's sftp-server:

- The channel's receive window is opened only for bytes the session has
  *consumed*: a request counts until its reply is sent. So the requests held
  (a WRITE's data included) never exceed the window, and a client that sends
  faster than they are served waits for window adjustments.
- While the replies queued for the client (waiting for its window) are over a
  high-water mark, the session serves no further request; it resumes once the
  queue has drained below half of it.

The channel provides :class:`IChannelFlow`; the SFTP protocol
(:class:`~gateway.sftp.protocol.GatewayFileTransferServer`) uses it.
"""

from __future__ import annotations

from collections.abc import Callable

from zope.interface import Attribute, Interface

__all__ = ["REPLY_QUEUE_HIGH", "IChannelFlow"]

#: Bytes of replies queued for a client beyond which its session stops serving requests.
REPLY_QUEUE_HIGH = 1024 * 1024


class IChannelFlow(Interface):
    """A session channel whose receive window follows what its session consumed."""

    backlogged = Attribute("bool: too many reply bytes are queued for the client.")

    def consumed(count: int) -> None:
        """``count`` bytes received have been dealt with: the client may send as many more."""

    def when_drained(callback: Callable[[], None]) -> None:
        """Call ``callback`` once the reply queue is no longer backlogged (once)."""
