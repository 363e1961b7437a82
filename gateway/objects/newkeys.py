"""Write caps for new directories, made a step ahead in the reactor's spare moments.

A new directory needs an Ed25519 key pair (a scalar multiplication, ~25 µs) and the
base32 text of its keys for the entry that links it: about a sixth of a mkdir's time
on the reactor thread, between the request and its reply. :class:`NewDirectoryCaps`
keeps a few made in advance: ``take`` hands one over and makes the next on the
reactor's next turn, after the reply has gone, while the client is still reading it.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from gateway.objects.caps import DirectoryWriteCap

#: Caps kept ready (a ``mkdir -p`` of a deep path takes several at once).
AHEAD = 4


class NewDirectoryCaps:
    """A source of fresh directory write caps (see the module docstring)."""

    def __init__(self, clock: IReactorTime, ahead: int = AHEAD) -> None:
        self._clock = clock
        self._ahead = ahead
        self._ready: deque[DirectoryWriteCap] = deque()
        self._timer: IDelayedCall | None = None

    def take(self) -> DirectoryWriteCap:
        """A new write cap, never handed out before (made now when none is ready)."""
        cap = self._ready.popleft() if self._ready else _made()
        if self._timer is None:
            self._timer = self._clock.callLater(0, self._refill)
        return cap

    def _refill(self) -> None:
        self._timer = None
        while len(self._ready) < self._ahead:
            self._ready.append(_made())


def _made() -> DirectoryWriteCap:
    """A new write cap, its key pair derived and its text and its read cap's made (all
    kept by the caps' caches for the entry that will link it)."""
    cap = DirectoryWriteCap.generate()
    cap.to_string()
    cap.get_read_cap().to_string()
    return cap
