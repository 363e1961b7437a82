"""The status site's one resource: read-only routes for pages, JSON twins and metrics.

Only GET (and HEAD) are served; any other method gets 405. Every response is
``no-store``; pages carry a Content-Security-Policy that allows only their own
inline script. When the site listens on loopback, requests whose ``Host`` is
not a loopback name are refused, so a web page a browser visits cannot read
the status through DNS rebinding.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from twisted.web.resource import Resource
from twisted.web.server import Request

from gateway.logfile import Scrubber
from gateway.web.data import NodeView, scrubbed
from gateway.web.html import render_page
from gateway.web.pages import Page
from gateway.web.script import script_hash

LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine's loopback."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(header: bytes) -> str:
    """The host part of a Host header (without the port)."""
    text = header.decode("ascii", "replace")
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class StatusResource(Resource):
    """Serves ``/``, ``/<page>``, ``/<page>.json``, ``/status.json`` and ``/metrics``."""

    isLeaf = True

    def __init__(
        self,
        view: NodeView,
        pages: tuple[Page, ...],
        registry: CollectorRegistry,
        scrubber: Scrubber,
        loopback_only: bool,
    ):
        super().__init__()
        self._view = view
        self._pages = pages
        self._registry = registry
        self._scrubber = scrubber
        self._loopback_only = loopback_only
        self._routes: dict[bytes, Callable[[Request], bytes]] = {
            b"/status.json": lambda r: self._json(r, view.everything()),
            b"/metrics": self._metrics,
        }
        for page in pages:
            self._routes[page.url.encode()] = self._html_route(page)
            self._routes[page.json_url.encode()] = self._json_route(page)

    def _html_route(self, page: Page) -> Callable[[Request], bytes]:
        return lambda request: self._html(request, page)

    def _json_route(self, page: Page) -> Callable[[Request], bytes]:
        return lambda request: self._json(request, page.data(self._view))

    def render(self, request: Request) -> bytes:
        """GET and HEAD are served; every other method gets 405 (the site is read-only)."""
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"This status page is read-only.\n"
        return bytes(super().render(request))

    def render_GET(self, request: Request) -> bytes:
        """Route a GET (HEAD is served by this too, without the body)."""
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        if self._loopback_only and not is_loopback(host_of(request.getHeader(b"host") or b"")):
            request.setResponseCode(421)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"This status page answers only to loopback host names.\n"
        route = self._routes.get(request.path)
        if route is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"No such page.\n"
        return route(request)

    def _json(self, request: Request, data: dict[str, Any]) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        clean = scrubbed(data, self._scrubber)
        return json.dumps(clean, indent=1, sort_keys=True).encode("utf-8")

    def _html(self, request: Request, page: Page) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(
            b"content-security-policy",
            (
                f"default-src 'none'; script-src {script_hash()}; style-src 'unsafe-inline'; "
                "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
                "frame-ancestors 'none'"
            ).encode("ascii"),
        )
        request.setHeader(b"x-frame-options", b"DENY")
        data = scrubbed(page.data(self._view), self._scrubber)
        return render_page(page, self._pages, data).encode("utf-8")

    def _metrics(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_PLAIN_0_0_4.encode("ascii"))
        return bytes(generate_latest(self._registry))
