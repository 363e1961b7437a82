"""When background work on intents runs: after clients pause, and with growing pauses
after failures. Uploads and directory publishes share one client-activity signal."""

from __future__ import annotations

from attrs import define, field
from twisted.internet.interfaces import IReactorTime


@define
class ClientActivity:
    """When a client's request was last served; background work holds back while clients
    are busy (a client that reads back what it just wrote is then served from staging,
    without uploads and publishes competing for the process)."""

    clock: IReactorTime = field(repr=False)
    last: float = float("-inf")
    #: CPU seconds the reactor thread spent serving clients (the SFTP connections' reads
    #: and what they answered there): what background work's turns do not charge it for.
    served: float = 0.0

    def touch(self) -> None:
        """A client's request is being served now."""
        self.last = self.clock.seconds()

    def serving(self, seconds: float) -> None:
        """``seconds`` of CPU went to serving clients."""
        self.served += seconds

    def busy(self, quiet: float) -> bool:
        """Whether a client's request was served in the last ``quiet`` seconds (safe to ask
        from another thread: it reads two numbers)."""
        return self.clock.seconds() - self.last < quiet

    def hold_until(self, waiting_since: float, pause: float, limit: float) -> float:
        """When work waiting since ``waiting_since`` may start: once clients have paused for
        ``pause`` seconds, and never later than ``limit`` seconds after it began waiting."""
        return min(self.last + pause, waiting_since + limit)


def retry_delay(failures: int, first: float, cap: float) -> float:
    """The pause before the next try after ``failures`` failures in a row: ``first``,
    doubling each time, at most ``cap``."""
    return min(cap, first * 2 ** min(max(failures, 1) - 1, 40))
