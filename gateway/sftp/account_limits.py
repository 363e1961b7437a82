"""How many SSH connections and SFTP sessions one account may have at once.

Each open session holds staging handles, a receive window's worth of requests
and its replies; the caps (``[sftp] max_connections_per_account`` and
``max_sessions_per_account``) bound what one account's clients (or one stolen
password) can make the gateway hold. :class:`AccountSlots` counts them; a
caller that gets a slot calls the release function it was given when the
connection or session ends.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field, frozen

__all__ = ["AccountLimits", "AccountSlots", "Release"]

#: Gives a slot back (calling it more than once gives it back once).
Release = Callable[[], None]


@frozen
class AccountLimits:
    """The per-account caps of a node (see ``docs/configuration.rst``)."""

    max_connections: int = 32
    max_sessions: int = 64


@define
class _Counter:
    """Slots in use per account name, up to ``limit`` each."""

    limit: int
    _used: dict[str, int] = field(init=False, factory=dict)

    def take(self, name: str) -> Release | None:
        used = self._used.get(name, 0)
        if used >= self.limit:
            return None
        self._used[name] = used + 1
        given_back = False

        def release() -> None:
            nonlocal given_back
            if given_back:
                return
            given_back = True
            left = self._used.get(name, 1) - 1
            if left > 0:
                self._used[name] = left
            else:
                self._used.pop(name, None)

        return release

    def used(self, name: str) -> int:
        return self._used.get(name, 0)


@define
class AccountSlots:
    """The connections and sessions each account has open, within :class:`AccountLimits`."""

    limits: AccountLimits = AccountLimits()
    _connections: _Counter = field(init=False)
    _sessions: _Counter = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._connections = _Counter(self.limits.max_connections)
        self._sessions = _Counter(self.limits.max_sessions)

    def connect(self, name: str) -> Release | None:
        """A connection slot for account ``name``, or None when it has its maximum."""
        return self._connections.take(name)

    def open_session(self, name: str) -> Release | None:
        """A session slot for account ``name``, or None when it has its maximum."""
        return self._sessions.take(name)

    def connections(self, name: str) -> int:
        """Connections of ``name`` logged in now."""
        return self._connections.used(name)

    def sessions(self, name: str) -> int:
        """SFTP sessions of ``name`` open now."""
        return self._sessions.used(name)

    def too_many_connections(self, name: str) -> str:
        """What a client refused a connection is told."""
        return (
            f"too many connections for account {name}: at most"
            f" {self.limits.max_connections} at once (max_connections_per_account)"
        )

    def too_many_sessions(self, name: str) -> str:
        """What a client refused an SFTP session is told."""
        return (
            f"too many SFTP sessions for account {name}: at most"
            f" {self.limits.max_sessions} at once (max_sessions_per_account)"
        )
