"""The status page part of a node: an HTML overview and its JSON twin at ``/status.json``.

The page is read-only and never shows a secret: it is built only from the
parts' :meth:`~gateway.service.NodePart.status` summaries, which by contract
hold no capability, password, swissnum or key.
"""

from __future__ import annotations

import html
import json
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from gateway import __version__
from gateway.listening import bound_address, hostport, listen_tcp
from gateway.service import Node, NodePart


def node_status(node: Node, started: float, now: float) -> dict[str, Any]:
    """Everything the status page shows, as JSON-able data."""
    return {
        "kind": node.kind,
        "nickname": node.nickname,
        "version": __version__,
        "uptime_seconds": round(now - started, 1),
        "parts": {part.name: part.status() for part in node.parts},
    }


class StatusJSON(Resource):
    """``/status.json``: the node's status as JSON."""

    isLeaf = True

    def __init__(self, part: StatusPart):
        super().__init__()
        self._part = part

    def render_GET(self, request: Request) -> bytes:
        """Serve the status as JSON."""
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(self._part.snapshot(), indent=1, sort_keys=True).encode()


class StatusPage(Resource):
    """``/``: the node's status as a plain HTML page (readable with scripts off)."""

    isLeaf = True

    def __init__(self, part: StatusPart):
        super().__init__()
        self._part = part

    def render_GET(self, request: Request) -> bytes:
        """Serve the overview page."""
        status = self._part.snapshot()
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        rows = "".join(
            f"<tr><th>{html.escape(name)}</th><td><pre>"
            f"{html.escape(json.dumps(summary, indent=1, sort_keys=True))}</pre></td></tr>"
            for name, summary in status["parts"].items()
        )
        title = html.escape(f"{status['kind']} node {status['nickname']}".strip())
        body = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{title}</title></head><body>"
            f"<h1>{title}</h1><p>version {html.escape(status['version'])}, "
            f"up {status['uptime_seconds']:.0f} s</p>"
            f"<table>{rows}</table><p><a href='/status.json'>JSON</a></p></body></html>"
        )
        return body.encode("utf-8")


class StatusPart(NodePart):
    """Serves the status page on a loopback address by default."""

    def __init__(self, reactor: Any, node: Node, host: str, port: int):
        super().__init__("web")
        self._reactor = reactor
        self._node = node
        self._host = host
        self._port = port
        self._started = reactor.seconds()
        self._listening: Any = None
        self.url = ""

    def snapshot(self) -> dict[str, Any]:
        """The node's status now."""
        return node_status(self._node, self._started, self._reactor.seconds())

    async def start(self) -> None:
        """Listen for HTTP."""
        root = Resource()
        root.putChild(b"", StatusPage(self))
        root.putChild(b"status.json", StatusJSON(self))
        site = Site(root)
        site.displayTracebacks = False
        self._listening = listen_tcp(self._reactor, site, self._host, self._port, "status page")
        host, port = bound_address(self._listening)
        self.url = f"http://{hostport(host, port)}/"

    async def stop(self) -> None:
        """Stop listening."""
        if self._listening is not None:
            stopped = self._listening.stopListening()
            self._listening = None
            if stopped is not None:
                await stopped

    def announce(self) -> list[str]:
        """Where the status page is."""
        return [f"Status page: {self.url}"]

    def status(self) -> dict[str, Any]:
        """The page's own address."""
        return {"url": self.url}
