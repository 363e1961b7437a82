"""Conch's server transport with our packet codecs and OpenSSH's strict key exchange.

:class:`StrictKexTransport` replaces Conch's packet read and write paths with
:class:`~gateway.sftp.ciphers.PacketCiphers` (so AEAD ciphers and ``-etm``
MACs work) and implements ``kex-strict-s-v00@openssh.com`` (OpenSSH
``PROTOCOL`` section 1.10, the fix for the Terrapin attack, CVE-2023-48795).
When the client's first KEXINIT lists ``kex-strict-c-v00@openssh.com``:

- that KEXINIT must be the first packet the client sent;
- until the client's first NEWKEYS, only the key exchange's own messages (and
  DISCONNECT) may arrive: an IGNORE, DEBUG, a second KEXINIT or anything else
  ends the connection;
- the sequence number of each direction restarts at 0 after every NEWKEYS
  (sent, for ours; received, for theirs).

Which algorithms a client is offered depends on whether it asks for strict
key exchange, which is only known from its KEXINIT. So the server sends its
own KEXINIT *after* the client's (RFC 4253 lets either side go first, and
OpenSSH, PuTTY, paramiko and Go's ssh all send theirs without waiting); a
client that has sent none after :attr:`~StrictKexTransport.kexinit_wait`
seconds gets the plain offer. The plain offer leaves out only what Terrapin
breaks without strict key exchange, ``chacha20-poly1305@openssh.com`` (CBC
ciphers, the other case, are never offered); AES-GCM does not authenticate
with the sequence number, and an ``-etm`` MAC after AES-CTR cannot be
truncated undetected (the CTR keystream falls out of step).

Whatever the client chose, nothing but key exchange is accepted before its
first NEWKEYS (Conch alone would let a service request through in clear), and
nothing but DISCONNECT, IGNORE, UNIMPLEMENTED, DEBUG and KEXINIT before its
first KEXINIT.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.transport import (
    DISCONNECT_KEY_EXCHANGE_FAILED,
    DISCONNECT_PROTOCOL_ERROR,
    MSG_DISCONNECT,
    MSG_KEXINIT,
    MSG_NEWKEYS,
    MSG_SERVICE_ACCEPT,
    MSG_SERVICE_REQUEST,
    SSHCiphers,
    SSHServerTransport,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.sftp.ciphers import PacketCiphers, PacketError

__all__ = ["STRICT_CLIENT", "STRICT_SERVER", "AlgorithmOffer", "StrictKexTransport"]

STRICT_CLIENT = b"kex-strict-c-v00@openssh.com"
STRICT_SERVER = b"kex-strict-s-v00@openssh.com"

_log = Logger()


@attrs.frozen
class AlgorithmOffer:
    """The ciphers and MACs offered to one kind of client, most preferred first."""

    ciphers: tuple[bytes, ...]
    macs: tuple[bytes, ...]


#: DISCONNECT, IGNORE, UNIMPLEMENTED and DEBUG: valid at any time, strict kex aside.
_ANY_TIME = frozenset([1, 2, 3, 4])


def _kex_method_message(number: int) -> bool:
    """Messages 30 to 49 belong to the negotiated key exchange method (RFC 4250)."""
    return 30 <= number <= 49


class StrictKexTransport(SSHServerTransport):
    """An SSH server transport with our packet codecs, strict kex and a per-client offer.

    Subclasses set :attr:`strict_offer`, :attr:`plain_offer` and the other
    ``supported*`` lists; the factory must have a ``reactor`` (for the wait
    for the client's KEXINIT).
    """

    #: Offered to clients that ask for strict key exchange.
    strict_offer = AlgorithmOffer(ciphers=(b"aes128-ctr",), macs=(b"hmac-sha2-256",))
    #: Offered to the others.
    plain_offer = AlgorithmOffer(ciphers=(b"aes128-ctr",), macs=(b"hmac-sha2-256",))
    #: Seconds to wait for the client's KEXINIT before sending ours.
    kexinit_wait = 2.0
    supportedCompressions = [b"none"]

    #: Whether strict key exchange is in effect on this connection.
    strict = False
    _seen_kexinit = False
    _initial_kex_done = False
    _broken = False
    _kexinit_timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """Send our version, then wait for the client's KEXINIT (see the module)."""
        assert self.transport is not None
        self.transport.write(self.ourVersionString + b"\r\n")
        self.currentEncryptions = PacketCiphers.none()  # type: ignore[assignment]
        clock: IReactorTime = self.factory.reactor  # type: ignore[attr-defined]
        self._kexinit_timer = clock.callLater(self.kexinit_wait, self._kexinit_timed_out)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Stop waiting for the client's KEXINIT; then as usual."""
        self._stop_waiting()
        super().connectionLost(reason)

    def _stop_waiting(self) -> None:
        if self._kexinit_timer is not None and self._kexinit_timer.active():
            self._kexinit_timer.cancel()
        self._kexinit_timer = None

    def _kexinit_timed_out(self) -> None:
        self._kexinit_timer = None
        self._offer(self.plain_offer)
        self.sendKexInit()

    def _offer(self, offer: AlgorithmOffer) -> None:
        self.supportedCiphers = list(offer.ciphers)
        self.supportedMACs = list(offer.macs)
        self.supportedKeyExchanges = [
            *(k for k in type(self).supportedKeyExchanges if k != STRICT_SERVER),
            STRICT_SERVER,
        ]

    # --- key exchange ------------------------------------------------------------------

    def ssh_KEXINIT(self, packet: bytes) -> None:
        """Learn from the client's first KEXINIT whether it wants strict kex; answer it."""
        if not self._seen_kexinit:
            self._seen_kexinit = True
            self.strict = STRICT_CLIENT in getNS(packet[16:])[0].split(b",")
            if self.strict and self.incomingPacketSequence != 1:
                self._fail(DISCONNECT_PROTOCOL_ERROR, "KEXINIT was not the first packet")
                return
            if self._kexinit_timer is not None:
                self._offer(self.strict_offer if self.strict else self.plain_offer)
                # Ours goes out before the negotiation, so that a client with nothing in
                # common with it learns what is offered (and says so) before it is dropped.
                self.sendKexInit()
        super().ssh_KEXINIT(packet)
        if self.kexAlg in (STRICT_CLIENT, STRICT_SERVER):
            self._fail(DISCONNECT_KEY_EXCHANGE_FAILED, "a marker is no key exchange")
            return
        chosen = self.nextEncryptions
        if isinstance(chosen, SSHCiphers) and None not in vars(chosen).values():
            self.nextEncryptions = PacketCiphers(  # type: ignore[assignment]
                chosen.outCipType, chosen.inCipType, chosen.outMACType, chosen.inMACType
            )

    def ssh_NEWKEYS(self, packet: bytes) -> None:
        """Take the new keys (only once ours are made); restart the count if strict."""
        pending = getattr(self, "nextEncryptions", None)
        if (
            not isinstance(pending, PacketCiphers)
            or not pending.keyed
            or pending is self.currentEncryptions
        ):
            self._fail(DISCONNECT_PROTOCOL_ERROR, "NEWKEYS before the key exchange")
            return
        if self.strict:
            self.incomingPacketSequence = 0
        if not self._initial_kex_done:
            self._initial_kex_done = True
            _log.info(
                "SSH keys agreed: {kex}, cipher {cipher}, MAC {mac}, strict kex {strict}",
                kex=self.kexAlg.decode("ascii", "replace"),
                cipher=pending.inCipType.decode("ascii", "replace"),
                mac=pending.inMACType.decode("ascii", "replace"),
                strict="on" if self.strict else "off",
            )
        super().ssh_NEWKEYS(packet)

    def dispatchMessage(self, messageNum: int, payload: bytes) -> None:
        """Refuse everything but key exchange before the client's first NEWKEYS."""
        if not self._initial_kex_done:
            if not self._seen_kexinit:
                allowed = messageNum in _ANY_TIME or messageNum == MSG_KEXINIT
            elif self.strict:
                kex_method = _kex_method_message(messageNum)
                allowed = kex_method or messageNum in (MSG_DISCONNECT, MSG_NEWKEYS)
            else:
                allowed = messageNum < 50 and messageNum not in (
                    MSG_SERVICE_REQUEST,
                    MSG_SERVICE_ACCEPT,
                    7,  # EXT_INFO
                )
            if not allowed:
                self._fail(
                    DISCONNECT_PROTOCOL_ERROR, f"message {messageNum} during the key exchange"
                )
                return
        super().dispatchMessage(messageNum, payload)

    def _fail(self, code: int, reason: str) -> None:
        self._broken = True
        peer = self.transport.getPeer() if self.transport is not None else None
        _log.warn(
            "SSH connection from {address} ended: {reason}",
            address=getattr(peer, "host", peer),
            reason=reason,
        )
        self.sendDisconnect(code, reason.encode("ascii"))

    # --- packets -------------------------------------------------------------------------

    def sendPacket(self, messageType: int, payload: bytes) -> None:
        """Frame, encrypt and authenticate one packet (queued during key exchange)."""
        if self._keyExchangeState != self._KEY_EXCHANGE_NONE:
            if not self._allowedKeyExchangeMessageType(messageType):
                self._blockedByKeyExchange.append((messageType, payload))
                return
        ciphers: Any = self.currentEncryptions
        assert isinstance(ciphers, PacketCiphers) and self.transport is not None
        sequence = self.outgoingPacketSequence
        self.transport.write(ciphers.sealer.seal(sequence, bytes((messageType,)) + payload))
        if messageType == MSG_NEWKEYS and self.strict:
            self.outgoingPacketSequence = 0
        else:
            self.outgoingPacketSequence = (sequence + 1) & 0xFFFFFFFF

    def getPacket(self) -> bytes | None:
        """The next whole, authentic packet's payload from the buffer, or None."""
        if self._broken or not self.buf:  # (the call after the last packet of a read)
            return None
        ciphers: Any = self.currentEncryptions
        assert isinstance(ciphers, PacketCiphers)
        try:
            opened = ciphers.opener.open(self.incomingPacketSequence, self.buf)
        except PacketError as e:
            self._fail(e.code, e.reason)
            return None
        if opened is None:
            return None
        payload, used = opened
        self.buf = self.buf[used:]
        self.incomingPacketSequence = (self.incomingPacketSequence + 1) & 0xFFFFFFFF
        return payload

    def sendKexInit(self) -> None:
        """Send our KEXINIT (no longer waiting for the client's)."""
        self._stop_waiting()
        super().sendKexInit()
