"""A node as an ordered list of Twisted services, started and stopped in order.

Each part of a node (embedded storage server, storage client, upload queue,
SFTP, web) is a :class:`NodePart`: a Twisted ``Service`` whose start and stop
are coroutines. :class:`Node` starts parts one after the other, waiting until
each is ready (listening, loaded) before the next, and stops them in reverse
order, each finishing its in-flight work before the one below it goes away:
SFTP stops accepting first, the upload queue drains or journals, and the
storage layers go last.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger


class StartupError(Exception):
    """A part could not start; the message names the part and the cause."""

    def __init__(self, part: str, reason: str):
        self.part = part
        self.reason = reason
        super().__init__(f"{part}: {reason}")


class NodePart(Service):
    """One part of a node; subclasses implement :meth:`start` and :meth:`stop`."""

    def __init__(self, name: str):
        self.setName(name)
        self._ready: Deferred[None] | None = None

    async def start(self) -> None:
        """Bring the part up (listen, load state). Raise StartupError on failure."""

    async def stop(self) -> None:
        """Finish or journal in-flight work, then release resources."""

    def announce(self) -> list[str]:
        """Lines for the user once the node is up (what this part listens on)."""
        return []

    def status(self) -> dict[str, Any]:
        """A JSON-able summary for the status page; never contains secrets."""
        return {}

    def startService(self) -> None:
        """Start the part; :meth:`when_ready` fires once it is up."""
        super().startService()
        self._ready = Deferred.fromCoroutine(self.start())

    def when_ready(self) -> Deferred[None]:
        """A Deferred that fires when :meth:`start` has finished (or fails as it failed).

        Only the node awaits it, once.
        """
        assert self._ready is not None, "part not started"
        return self._ready

    def stopService(self) -> Deferred[None]:
        """Stop the part; the Deferred fires when it has stopped."""
        super().stopService()
        return Deferred.fromCoroutine(self.stop())


class Node(MultiService):
    """A whole node: parts started in order, stopped in reverse order."""

    log = Logger()

    def __init__(self, kind: str, nickname: str):
        super().__init__()
        self.kind = kind
        self.nickname = nickname
        self.parts: list[NodePart] = []

    def add_part(self, part: NodePart) -> NodePart:
        """Append a part; it starts after every part added before it."""
        self.parts.append(part)
        part.setServiceParent(self)
        return part

    def part(self, name: str) -> NodePart:
        """The part with this name."""
        return self.getServiceNamed(name)

    def startService(self) -> None:
        """Mark running; parts are started by :meth:`start`, not all at once."""
        Service.startService(self)

    async def start(self) -> None:
        """Start each part in order and wait until it is ready; undo on failure."""
        self.startService()
        started: list[NodePart] = []
        for part in self.parts:
            self.log.info("starting {part}", part=part.name)
            part.startService()
            try:
                await part.when_ready()
            except Exception as e:
                started.append(part)
                await self._stop_parts(started)
                if isinstance(e, StartupError):
                    raise
                raise StartupError(part.name or "part", str(e) or type(e).__name__) from e
            started.append(part)

    def stopService(self) -> Deferred[None]:
        """Stop every running part, last started first, each after the one above it."""
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop_parts([p for p in self.parts if p.running]))

    async def _stop_parts(self, parts: list[NodePart]) -> None:
        for part in reversed(parts):
            self.log.info("stopping {part}", part=part.name)
            try:
                await part.stopService()
            except Exception:
                self.log.failure("error while stopping {part}", part=part.name)

    def announce(self) -> list[str]:
        """What the node listens on, part by part."""
        return [line for part in self.parts for line in part.announce()]
