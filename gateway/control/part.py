"""The control endpoint as a node part: the CLI's way into a running gateway.

It listens on ``DIR/private/control.sock`` (mode 0600 in the 0700 private
folder), so only the node's owner can use it, and the node's storage is only
ever opened by the node itself. A socket left behind by a node that crashed is
removed at start: the pid file lock guarantees no other node runs here.
"""

from __future__ import annotations

import stat
from typing import Any

from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.interfaces import IListeningPort

from gateway.accounts import AccountStore, accounts_path
from gateway.control.operations import FileOperations
from gateway.control.protocol import ShortPath, socket_path
from gateway.control.server import ControlResource, ControlSite
from gateway.fs.part import FilesystemPart
from gateway.metrics import CheckHistory
from gateway.nodedir import NodeDir
from gateway.service import NodePart, StartupError


class ControlPart(NodePart):
    """Serves the control API for ``gateway put/get/ls/mkdir/rm/mv/check``."""

    def __init__(self, reactor: Any, nd: NodeDir, fs: FilesystemPart):
        super().__init__("control")
        self._reactor = reactor
        self._nd = nd
        self._fs = fs
        self.check_history = CheckHistory(clock=reactor)  # shown on the status page's Health
        self._listening: IListeningPort | None = None
        self._address: ShortPath | None = None

    async def start(self) -> None:
        """Remove a stale socket and listen."""
        path = socket_path(self._nd.root)
        try:
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StartupError("control", f"cannot remove stale {path}: {e.strerror}") from None
        ops = FileOperations(
            self._fs, AccountStore(accounts_path(self._nd.root)), self.check_history
        )
        site = ControlSite(ControlResource(ops, self._reactor), spool=self._nd.staging)
        self._address = ShortPath(path)
        endpoint = UNIXServerEndpoint(self._reactor, self._address.address, mode=0o600)
        try:
            self._listening = await endpoint.listen(site)
        except Exception as e:
            self._address.close()
            raise StartupError("control", f"cannot listen on {path}: {e}") from None

    async def stop(self) -> None:
        """Stop accepting requests (the socket file is removed)."""
        if self._listening is not None:
            listening, self._listening = self._listening, None
            stopped = listening.stopListening()
            if stopped is not None:
                await stopped
        if self._address is not None:
            self._address.close()
            self._address = None

    def status(self) -> dict[str, Any]:
        """Whether the endpoint listens."""
        return {"listening": self._listening is not None}
