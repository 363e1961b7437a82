"""The control endpoint's wire format, shared by the node's server and the CLI's client.

The node listens on a Unix domain socket, ``DIR/private/control.sock`` (mode
0600 inside the 0700 ``private/`` folder), and speaks HTTP/1.1 on it. Every
operation is ``POST /v1/<operation>``. Arguments travel as a JSON object: in the
request body, or for ``put`` (whose body is the file) in the
:data:`ARGS_HEADER` header. They never go into the URL, so a capability never
lands in an access log.

Answers:

- ``put``, ``ls``, ``mkdir``, ``rm``, ``mv``, ``uploads``: a JSON object (200).
- ``get``: the file's bytes with a ``Content-Length``; a failure after the
  first byte closes the connection early, so the client sees a short body.
- ``check``: JSON lines; ``{"progress": [done, total]}`` while a deep check
  runs, then one ``{"result": …}`` (or ``{"error": …, "message": …}``).
- Any failure before the answer starts: an HTTP error status with
  ``{"error": KIND, "message": TEXT}``; :data:`ERROR_STATUS` lists the kinds.
  Messages are for the user and never contain a capability.
"""

from __future__ import annotations

import os
from pathlib import Path

SOCKET_NAME = "control.sock"
"""The socket's file name inside the node's ``private/`` folder."""

API_PREFIX = "/v1/"
"""Every operation's path starts with this."""

OPERATIONS = ("put", "get", "ls", "mkdir", "rm", "mv", "check", "uploads")
"""The operations the endpoint serves."""

ARGS_HEADER = "X-Gateway-Args"
"""Header carrying the JSON arguments of ``put``."""

ERROR_STATUS: dict[str, int] = {
    "bad-request": 400,
    "permission": 403,
    "not-found": 404,
    "exists": 409,
    "conflict": 409,
    "no-space": 507,
    "grid": 503,
    "error": 500,
}
"""HTTP status of each error kind (what the CLI says is in the message)."""

_MAX_SOCKET_PATH = 100
"""``sun_path`` holds 108 bytes on Linux; longer paths go through ``/proc/self/fd``."""


def socket_path(node_dir: Path) -> Path:
    """Where a node's control socket lives."""
    return node_dir / "private" / SOCKET_NAME


class ShortPath:
    """A socket address that fits ``sun_path``: the path itself, or a ``/proc/self/fd`` detour.

    Linux resolves ``/proc/self/fd/N/name`` through an open descriptor of the
    folder, so a deep node directory still gets a usable socket. Close it after use.
    """

    def __init__(self, path: Path):
        self._fd: int | None = None
        if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
            self.address = str(path)
        else:
            self._fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self.address = f"/proc/self/fd/{self._fd}/{path.name}"

    def close(self) -> None:
        """Release the folder's descriptor, if one was opened."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
