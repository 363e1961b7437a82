"""The audit log's view of logins: each password or public-key attempt, its outcome, the logout.

The SSH user-auth service (:mod:`gateway.sftp.ssh`) starts a
:class:`LoginAudit` for every ``password`` and ``publickey`` request (not for
the ``none`` probe clients send first, nor for methods the server does not
offer), and tells it how the attempt ended. It records:

- ``login``: ``method``; ``key_type`` and ``fingerprint`` (SHA256, as
  ``ssh-keygen -l`` prints it) for a public key; ``client_version``, the
  client's SSH version line;
- ``login_failed``: ``method``, ``reason`` (``wrong password``, ``no such
  account``, ``key not authorized``, ``bad signature``, the cap on an
  account's connections…), the key's type and fingerprint; its ``account``
  is the name that was tried. A client asking whether a key *would* do (before
  it signs) is no failure when the key is authorized; when it is not, it is
  one, as in OpenSSH's log;
- ``logout``: when the connection of a logged-in account ends, for whatever
  reason, with the ``seconds`` it lasted.

The password is never seen here: only a ``publickey`` request's data is read,
for the key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, evolve
from twisted.conch.error import IgnoreAuthentication, ValidPublicKey
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.keys import Key
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.python.failure import Failure

from gateway.account_keys import key_fingerprint
from gateway.audit.events import Client, IAuditLog, NoAudit

__all__ = ["LoginAudit", "key_fields"]

#: The methods whose attempts are recorded.
AUDITED_METHODS = (b"password", b"publickey")


def key_fields(data: bytes) -> dict[str, str]:
    """``key_type`` and ``fingerprint`` of the key in a publickey request (empty when the
    request is malformed)."""
    try:
        algorithm, rest = getNS(data[1:])
        blob = getNS(rest)[0]
        fingerprint = key_fingerprint(Key.fromString(blob))
    except Exception:
        return {}
    return {"key_type": algorithm.decode("ascii", "replace")[:64], "fingerprint": fingerprint}


@define
class LoginAudit:
    """One login attempt, recorded when it ends."""

    log: IAuditLog
    clock: IReactorTime
    method: str
    client: Client
    key: dict[str, str]

    @classmethod
    def start(
        cls,
        log: IAuditLog,
        clock: IReactorTime,
        kind: bytes,
        user: bytes,
        data: bytes,
        peer: IAddress | None,
    ) -> LoginAudit | None:
        """The audit of an attempt with method ``kind`` from ``peer`` (None when not recorded)."""
        if isinstance(log, NoAudit) or kind not in AUDITED_METHODS:
            return None
        client = Client(
            account=user.decode("utf-8", "replace"),
            address=getattr(peer, "host", None),
            port=getattr(peer, "port", None),
        )
        key = key_fields(data) if kind == b"publickey" else {}
        return cls(log, clock, kind.decode("ascii"), client, key)

    def failed(self, failure: Failure) -> None:
        """The attempt failed (a key that would do, or a connection gone, is no failure)."""
        if failure.check(ValidPublicKey, IgnoreAuthentication):
            return
        self.refused(failure.getErrorMessage())

    def refused(self, reason: str) -> None:
        """The attempt was refused for ``reason``."""
        self.log.record("login_failed", self.client, method=self.method, reason=reason, **self.key)

    def succeeded(self, account: str, client_version: str) -> Callable[[], None]:
        """Record the login of ``account``; the function to call when it logs out."""
        client = evolve(self.client, account=account)
        since = float(self.clock.seconds())
        fields: dict[str, Any] = {"method": self.method, **self.key}
        self.log.record("login", client, **fields, client_version=client_version[:200])

        def logged_out() -> None:
            seconds = round(float(self.clock.seconds()) - since, 3)
            self.log.record("logout", client, seconds=seconds)

        return logged_out
