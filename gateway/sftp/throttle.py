"""Growing delays after failed logins, per remote address and per account name."""

from __future__ import annotations

from collections import OrderedDict

from attrs import define, field
from twisted.internet.interfaces import IReactorTime


@define
class _Penalty:
    failures: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0


@define
class LoginThrottle:
    """Growing delays after failed logins, per remote address and per account name.

    After ``n`` recent failures a key (address or name) is blocked for
    ``min(base_delay * 2 ** (n - 1), max_delay)`` seconds: failure replies are
    sent after that delay and new attempts wait for it. Each admitted attempt
    reserves the next slot, so parallel connections are serialized too. A key
    is forgotten ``forget_after`` seconds after its last failure; at most
    ``max_entries`` keys are remembered (least recently used dropped first).
    """

    clock: IReactorTime
    base_delay: float = 0.5
    max_delay: float = 8.0
    forget_after: float = 900.0
    max_entries: int = 10_000
    _penalties: OrderedDict[tuple[str, str], _Penalty] = field(init=False, factory=OrderedDict)

    def delay_after(self, failures: int) -> float:
        """The delay that follows ``failures`` recent failures."""
        if failures <= 0:
            return 0.0
        return float(min(self.base_delay * 2 ** min(failures - 1, 64), self.max_delay))

    def _get(self, key: tuple[str, str], create: bool) -> _Penalty | None:
        now = self.clock.seconds()
        penalty = self._penalties.get(key)
        if penalty is not None and now - penalty.last_failure > self.forget_after:
            del self._penalties[key]
            penalty = None
        if penalty is None and create:
            penalty = self._penalties[key] = _Penalty()
            while len(self._penalties) > self.max_entries:
                self._penalties.popitem(last=False)
        if penalty is not None:
            self._penalties.move_to_end(key)
        return penalty

    @staticmethod
    def _keys(address: str, username: str) -> tuple[tuple[str, str], tuple[str, str]]:
        return ("address", address), ("user", username)

    def admit(self, address: str, username: str) -> float:
        """Register an attempt; return how many seconds it must wait before being checked."""
        now = self.clock.seconds()
        penalties = [p for p in (self._get(k, False) for k in self._keys(address, username)) if p]
        start = max([now] + [p.blocked_until for p in penalties])
        for p in penalties:
            p.blocked_until = start + self.delay_after(p.failures)
        return start - now

    def failed(self, address: str, username: str) -> float:
        """Register a failed attempt; return how many seconds to wait before saying so."""
        now = self.clock.seconds()
        delay = 0.0
        for key in self._keys(address, username):
            p = self._get(key, True)
            assert p is not None
            p.failures += 1
            p.last_failure = now
            p.blocked_until = max(p.blocked_until, now + self.delay_after(p.failures))
            delay = max(delay, p.blocked_until - now)
        return delay

    def succeeded(self, username: str) -> None:
        """Forget the account name's failures (not the address's) after a good login."""
        self._penalties.pop(("user", username), None)


# --- credential checkers and realm ---------------------------------------------
