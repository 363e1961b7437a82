"""The status site as a node part: pages, JSON twins and ``/metrics`` over twisted.web.

It listens on loopback by default (``[web] host``/``port``). The pages and
their URLs are declared in :mod:`gateway.web.pages`, their data gathered in
:mod:`gateway.web.data`; docs/status-page.rst describes them all. The site is
read-only and never shows a secret: it reads only what the parts expose for
display, and scrubs every string it serves as the log file is scrubbed.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import globalLogPublisher
from twisted.web.server import Site

from gateway.listening import bound_address, hostport, listen_tcp
from gateway.logfile import Scrubber
from gateway.metrics import RecentErrors
from gateway.service import Node, NodePart
from gateway.web.data import NodeView
from gateway.web.pages import pages_for
from gateway.web.prometheus import node_registry
from gateway.web.resources import StatusResource, is_loopback


class StatusPart(NodePart):
    """Serves the status site; keeps the recent warnings and errors it shows."""

    def __init__(
        self,
        reactor: Any,
        node: Node,
        host: str,
        port: int,
        scrubber: Scrubber | None = None,
        log_publisher: Any = globalLogPublisher,
    ):
        super().__init__("web")
        self._reactor = reactor
        self._node = node
        self._host = host
        self._port = port
        self._scrubber = scrubber or Scrubber()
        self._publisher = log_publisher
        self.errors = RecentErrors(self._scrubber)
        self.view = NodeView(node, reactor, self.errors)
        self._listening: Any = None
        self.url = ""

    def resource(self) -> StatusResource:
        """The site's resource (what :meth:`start` serves)."""
        return StatusResource(
            self.view,
            pages_for(self._node.kind),
            node_registry(self.view),
            self._scrubber,
            loopback_only=is_loopback(self._host),
        )

    async def start(self) -> None:
        """Start keeping recent errors, then listen for HTTP."""
        self._publisher.addObserver(self.errors)
        site = Site(self.resource())
        site.displayTracebacks = False
        site.noisy = False
        try:
            self._listening = listen_tcp(
                self._reactor,
                site,
                self._host,
                self._port,
                "status page",
                choose="choose another port with --web-port N (or [web] port in node.cfg)",
            )
        except Exception:
            self._publisher.removeObserver(self.errors)
            raise
        host, port = bound_address(self._listening)
        self.url = f"http://{hostport(host, port)}/"

    async def stop(self) -> None:
        """Stop listening and observing the log."""
        if self._listening is not None:
            stopped = self._listening.stopListening()
            self._listening = None
            if stopped is not None:
                await stopped
        self._publisher.removeObserver(self.errors)

    def announce(self) -> list[str]:
        """Where the status page is."""
        return [f"Status page: {self.url}"]

    def status(self) -> dict[str, Any]:
        """The page's own address."""
        return {"url": self.url}
