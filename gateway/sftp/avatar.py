"""A logged-in account (the avatar) and the session channel it serves SFTP on.

:class:`AccountAvatar` is one authenticated SSH connection of an account: its
name, root capability and options. When the client asks for the ``sftp``
subsystem, the avatar calls the ``sftp_server_factory`` it was given for the
``ISFTPServer`` that does the file operations and runs it under
:class:`~gateway.sftp.protocol.GatewayFileTransferServer`. Its session channels
(``_SFTPOnlySession``) run that subsystem only (shell, exec, pty, environment,
agent and X11 requests are refused), within the account's cap on sessions,
queue what the client's window cannot take yet, and open their own receive
window only as the session consumes what arrived (:mod:`gateway.sftp.flow`).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.conch.avatar import ConchUser
from twisted.conch.interfaces import IConchUser, ISFTPServer
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.connection import EXTENDED_DATA_STDERR
from twisted.conch.ssh.session import SSHSession
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from gateway.accounts import Account
from gateway.sftp.account_limits import AccountSlots, Release
from gateway.sftp.flow import REPLY_QUEUE_HIGH, IChannelFlow
from gateway.sftp.protocol import GatewayFileTransferServer

__all__ = [
    "SESSION_MAX_PACKET",
    "SESSION_WINDOW",
    "AccountAvatar",
    "SFTPServerFactory",
]

#: Makes the file-operation server of a session for its avatar.
SFTPServerFactory = Callable[["AccountAvatar"], ISFTPServer]


class AccountAvatar(ConchUser):
    """One logged-in SSH session of an account: serves only the ``sftp`` subsystem."""

    remote_address: str | None = None
    remote_port: int | None = None
    client_version: str | None = None
    """The client's SSH version line (e.g. ``SSH-2.0-OpenSSH_9.2p1``), for the status page."""

    def __init__(
        self,
        account: Account,
        sftp_server_factory: SFTPServerFactory,
        log: Logger,
        slots: AccountSlots | None = None,
    ) -> None:
        super().__init__()
        self.account = account
        self._sftp_server_factory = sftp_server_factory
        self._log_to = log
        self._slots = slots or AccountSlots()
        self.channelLookup[b"session"] = _SFTPOnlySession
        self.subsystemLookup[b"sftp"] = self._open_sftp

    @property
    def name(self) -> str:
        """The account name."""
        return self.account.name

    @property
    def root_cap(self) -> str:
        """The capability of the account's root directory (a secret)."""
        return self.account.root_cap

    @property
    def read_only(self) -> bool:
        """Whether the account may change nothing."""
        return self.account.read_only

    @property
    def rename_overwrites(self) -> bool:
        """Whether plain RENAME replaces an existing target for this account."""
        return self.account.rename_overwrites

    def __repr__(self) -> str:
        return f"<AccountAvatar {self.name!r} from {self.remote_address}>"

    def _open_sftp(self, data: bytes, avatar: IConchUser) -> Protocol:
        server = self._sftp_server_factory(self)
        if not ISFTPServer.providedBy(server):
            raise TypeError(f"sftp_server_factory returned {type(server)!r}, not an ISFTPServer")
        self._log_to.info("SFTP session started for {user}", user=self.name)
        # ISFTPServer(server) inside FileTransferServer is server itself: no adapters.
        return GatewayFileTransferServer(data=data, avatar=server)

    def open_session(self) -> Release | str:
        """A slot for one more SFTP session of the account, or what the client is told."""
        release = self._slots.open_session(self.name)
        if release is None:
            message = self._slots.too_many_sessions(self.name)
            self._log_to.warn("refused an SFTP session: {message}", message=message)
            return message
        return release

    def refused(self, request: str) -> None:
        """Log a refused session request."""
        self._log_to.info("refused {request} request from {user}", request=request, user=self.name)

    def logout(self) -> None:
        """Called when the SSH connection ends."""
        self._log_to.info("{user} logged out", user=self.name)


#: The receive window and largest data packet our session channels announce: OpenSSH's
#: 2 MiB window (Conch's default of 128 KiB makes an uploading client wait for a window
#: adjustment every 64 KiB) and packets big enough for a whole 255 KiB SFTP WRITE.
SESSION_WINDOW = 2 * 1024 * 1024
SESSION_MAX_PACKET = 256 * 1024


@implementer(IChannelFlow)
class _SFTPOnlySession(SSHSession):
    """A session channel that runs subsystems only: no shell, exec, pty, env, agent or X11.

    It also replaces Conch's outgoing buffer: Conch keeps the data the peer's
    window cannot take yet in one ``bytes`` that every write appends to and
    every window adjustment re-slices, which is quadratic in the bytes queued
    (half the gateway's time during a download was spent copying it). Here the
    queue is a deque of the chunks written.

    Its receive window is opened as the SFTP session consumes requests
    (:class:`~gateway.sftp.flow.IChannelFlow`), not as bytes arrive.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["localWindow"] = kwargs.get("localWindow") or SESSION_WINDOW
        kwargs["localMaxPacket"] = kwargs.get("localMaxPacket") or SESSION_MAX_PACKET
        super().__init__(*args, **kwargs)
        self._queued: deque[bytes] = deque()
        self._queued_size = 0  # bytes in _queued, the part of the first already sent included
        self._queued_offset = 0  # bytes of the first queued chunk already sent
        self._exit_status: int | None = None  # sent just before the close, when set
        self._consumed = 0  # bytes consumed that the client has not been granted again yet
        self._drained: Callable[[], None] | None = None
        self._release_slot: Release | None = None

    @property
    def queued_bytes(self) -> int:
        """Bytes written but not yet sent (waiting for the peer's window)."""
        return self._queued_size - self._queued_offset

    @property
    def backlogged(self) -> bool:
        """Whether the replies waiting for the client's window are over the high-water mark."""
        return self.queued_bytes > REPLY_QUEUE_HIGH

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the queue is down to half the high-water mark."""
        self._drained = callback

    def consumed(self, count: int) -> None:
        """Open the window again for ``count`` bytes the session has dealt with.

        Adjustments are batched as Conch batches them: the client is granted
        what was consumed once its window is under half and at least an eighth
        of the window has been consumed (always the case once everything held
        is consumed: a packet is at most a quarter of the window).
        """
        self._consumed += count
        size = self.localWindowSize
        if self.localWindowLeft < size // 2 and self._consumed >= size // 8:
            grant, self._consumed = self._consumed, 0
            assert self.conn is not None
            self.conn.adjustWindow(self, grant)

    def write(self, data: bytes) -> None:
        """Send what the peer's window allows, in packets of its maximum size; queue the rest."""
        if data:
            self._queued.append(data)
            self._queued_size += len(data)
        self._flush()

    def _flush(self) -> None:
        assert self.conn is not None
        queued = self._queued
        packet = self.remoteMaxPacket
        send = self.conn.sendData
        while queued and self.remoteWindowLeft > 0:
            chunk = queued[0]
            start = self._queued_offset
            stop = min(len(chunk), start + self.remoteWindowLeft)
            if start == 0 and stop == len(chunk) and stop <= packet:
                send(self, chunk)
            else:
                for at in range(start, stop, packet):
                    send(self, chunk[at : min(at + packet, stop)])
            self.remoteWindowLeft -= stop - start
            if stop == len(chunk):
                queued.popleft()
                self._queued_size -= len(chunk)
                self._queued_offset = 0
            else:
                self._queued_offset = stop
        if self._drained is not None and self.queued_bytes <= REPLY_QUEUE_HIGH // 2:
            drained, self._drained = self._drained, None
            drained()
        if queued:
            if self.areWriting:
                self.areWriting = 0
                self.stopWriting()
        elif self.closing:
            self.loseConnection()

    def addWindowBytes(self, data: int) -> None:
        """The peer opened its window: send what was queued."""
        self.remoteWindowLeft += data
        if not self.areWriting and not self.closing:
            self.areWriting = True
            self.startWriting()
        self._flush()
        if self.extBuf:
            pending, self.extBuf = self.extBuf, []
            for kind, chunk in pending:
                self.writeExtended(kind, chunk)

    def eofReceived(self) -> None:
        """The client has sent its last request: end as OpenSSH's server ends a finished
        sftp subsystem, with ``exit-status 0`` and then the close, once every reply
        queued for the client has been sent (scp reports a transfer whose session ends
        without an exit status as failed)."""
        if self.client is not None and not self.session:
            self._exit_status = 0
            self.loseConnection()
        else:
            super().eofReceived()

    def loseConnection(self) -> None:
        """Close the channel once everything queued has been sent."""
        if self.client and self.client.transport:
            self.client.transport.loseConnection()
        self.closing = 1
        if not self._queued and not self.extBuf:
            assert self.conn is not None
            if self._exit_status is not None:
                self.conn.sendRequest(self, b"exit-status", struct.pack(">L", self._exit_status))
                self._exit_status = None
            self.conn.sendClose(self)

    def request_subsystem(self, data: bytes) -> int:
        """Start the SFTP subsystem if the account may open one more session."""
        avatar = self.avatar
        if isinstance(avatar, AccountAvatar) and getNS(data)[0] == b"sftp" and not self.client:
            slot = avatar.open_session()
            if isinstance(slot, str):
                self.writeExtended(EXTENDED_DATA_STDERR, slot.encode() + b"\n")
                return 0
            started = super().request_subsystem(data)
            if started:
                self._release_slot = slot
            else:
                slot()
            return started
        return super().request_subsystem(data)

    def closed(self) -> None:
        """The channel is closed: its session slot is free."""
        if self._release_slot is not None:
            self._release_slot()
            self._release_slot = None
        super().closed()

    def _refuse(self, request: str) -> int:
        avatar = self.avatar
        if isinstance(avatar, AccountAvatar):
            avatar.refused(request)
        return 0

    def request_shell(self, data: bytes) -> int:
        """Refuse: there is no shell."""
        return self._refuse("shell")

    def request_exec(self, data: bytes) -> int:
        """Refuse: commands cannot be run."""
        return self._refuse("exec")

    def request_pty_req(self, data: bytes) -> int:
        """Refuse: there is no terminal."""
        return self._refuse("pty")

    def request_env(self, data: bytes) -> int:
        """Refuse environment variables (quietly: clients send them routinely)."""
        return 0

    def request_window_change(self, data: bytes) -> int:
        """Refuse: there is no terminal."""
        return 0

    def request_x11_req(self, data: bytes) -> int:
        """Refuse X11 forwarding."""
        return self._refuse("x11")

    def request_auth_agent_req_at_openssh_dot_com(self, data: bytes) -> int:
        """Refuse agent forwarding."""
        return self._refuse("agent forwarding")
