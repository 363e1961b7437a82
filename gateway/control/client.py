"""A synchronous client of the control endpoint, for the CLI (plain ``http.client``).

Every method raises :class:`NodeNotRunning` when nothing listens on the socket
and :class:`ControlError` (with the server's error kind and message) when the
node refused or failed the operation.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from gateway.control.protocol import API_PREFIX, ARGS_HEADER, ShortPath, socket_path

BLOCK = 1 << 16
"""Bytes sent or received per socket call."""


class NodeNotRunning(Exception):
    """Nothing answers on the node's control socket."""


class ControlError(Exception):
    """The node answered with an error; ``kind`` is one of ``protocol.ERROR_STATUS``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix domain socket."""

    def __init__(self, address: str):
        super().__init__("localhost", blocksize=BLOCK)
        self._address = address

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self._address)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _Counting:
    """A readable file that reports how many bytes were read from it."""

    def __init__(self, source: BinaryIO, on_read: Callable[[int], None]):
        self._source = source
        self._on_read = on_read

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._on_read(len(data))
        return data


class ControlClient:
    """Talks to one node's control socket."""

    def __init__(self, node_dir: Path):
        self.node_dir = node_dir
        self.path = socket_path(node_dir)

    def _request(
        self, operation: str, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[_UnixConnection, ShortPath, http.client.HTTPResponse]:
        if not self.path.exists():
            raise NodeNotRunning(str(self.node_dir))
        address = ShortPath(self.path)
        conn = _UnixConnection(address.address)
        try:
            conn.request("POST", API_PREFIX + operation, body=body, headers=headers or {})
            response = conn.getresponse()
        except (ConnectionRefusedError, FileNotFoundError):
            conn.close()
            address.close()
            raise NodeNotRunning(str(self.node_dir)) from None
        except BaseException:
            conn.close()
            address.close()
            raise
        if response.status >= 400:
            try:
                answer = json.loads(response.read())
                kind, message = str(answer["error"]), str(answer["message"])
            except (ValueError, KeyError, TypeError):
                kind, message = "error", f"the node answered HTTP {response.status}"
            finally:
                conn.close()
                address.close()
            raise ControlError(kind, message)
        return conn, address, response

    def call(self, operation: str, **args: Any) -> dict[str, Any]:
        """Run an operation that answers with one JSON object."""
        conn, address, response = self._request(operation, json.dumps(args).encode())
        try:
            return dict(json.loads(response.read()))
        finally:
            conn.close()
            address.close()

    def put(
        self,
        source: BinaryIO,
        size: int | None,
        on_sent: Callable[[int], None],
        **args: Any,
    ) -> dict[str, Any]:
        """Send a file's bytes (streamed; chunked when ``size`` is unknown)."""
        headers = {ARGS_HEADER: json.dumps(args), "Content-Type": "application/octet-stream"}
        if size is not None:
            headers["Content-Length"] = str(size)
        conn, address, response = self._request("put", _Counting(source, on_sent), headers)
        try:
            return dict(json.loads(response.read()))
        finally:
            conn.close()
            address.close()

    def get(
        self,
        sink: IO[bytes],
        on_size: Callable[[int], None],
        on_received: Callable[[int], None],
        **args: Any,
    ) -> int:
        """Write a file's bytes to ``sink``; return how many. A short body raises ControlError."""
        conn, address, response = self._request("get", json.dumps(args).encode())
        try:
            size = int(response.getheader("content-length") or 0)
            on_size(size)
            received = 0
            try:
                while block := response.read(min(BLOCK, size - received) or BLOCK):
                    sink.write(block)
                    received += len(block)
                    on_received(received)
                    if received >= size:
                        break
            except http.client.IncompleteRead as e:
                received += len(e.partial)
            if received != size:
                raise ControlError(
                    "error", f"the transfer broke off after {received} of {size} bytes"
                )
            return received
        finally:
            conn.close()
            address.close()

    def lines(self, operation: str, **args: Any) -> Iterator[dict[str, Any]]:
        """Run an operation that answers with JSON lines; yield each line."""
        conn, address, response = self._request(operation, json.dumps(args).encode())
        try:
            for raw in response:
                if raw.strip():
                    yield dict(json.loads(raw))
        finally:
            conn.close()
            address.close()


def is_terminal(stream: IO[Any]) -> bool:
    """Whether a stream is an interactive terminal."""
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
