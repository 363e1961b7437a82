"""A real gateway keeps serving a busy client first: uploads take turns with its requests,
still finish while it stays busy, and an fsync meanwhile is not kept waiting by them."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import paramiko
import pytest
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_WRITE,
    SFTP_OK,
)

from tests.sftp.gateway_node import (  # noqa: F401
    Int64,
    RawSFTP,
    RunningGateway,
    running_gateway,
)

FILES = 40
SIZE = 256 * 1024


def parts(gw: RunningGateway) -> dict[str, Any]:
    """Every node part's summary on the status page."""
    with urllib.request.urlopen(gw.web_url.rstrip("/") + "/status.json", timeout=10) as reply:
        found: dict[str, Any] = json.load(reply)["parts"]
    return found


class BusyClient:
    """A second session that STATs in a loop, as a client in the middle of a ``cp -r``."""

    def __init__(self, gw: RunningGateway) -> None:
        self.transport, self.sftp = gw.sftp()
        self.stats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sftp.stat("/")
            self.stats += 1

    def stop(self) -> None:
        """Stop the loop and the session."""
        self._stop.set()
        self._thread.join(30)
        self.transport.close()


@pytest.fixture
def busy(running_gateway: RunningGateway) -> Iterator[BusyClient]:  # noqa: F811
    """A client busy with STATs for the whole test."""
    client = BusyClient(running_gateway)
    yield client
    client.stop()


def _write_files(sftp: paramiko.SFTPClient, prefix: str, size: int = SIZE) -> None:
    for i in range(FILES):
        with sftp.open(f"/{prefix}{i}", "wb") as f:
            f.write(os.urandom(size))


def _pending(gw: RunningGateway) -> int:
    return len(parts(gw)["upload queue"]["pending"])


def _uploading(gw: RunningGateway) -> bool:
    return any(job["uploading"] for job in parts(gw)["upload queue"]["pending"])


def test_uploads_take_turns_with_a_busy_client_and_still_finish(
    running_gateway: RunningGateway,  # noqa: F811
    busy: BusyClient,
) -> None:
    """Files closed while another client keeps sending requests are uploaded meanwhile, not
    only once it pauses, and their requests waited for their turns (the status page counts
    them)."""
    gw = running_gateway
    transport, sftp = gw.sftp()
    try:
        _write_files(sftp, "f", 4 * SIZE)
        deadline = time.monotonic() + 120
        while _pending(gw) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _pending(gw) == 0, "uploads starved while a client was busy"
        assert busy.stats > 0 and busy.transport.is_active(), "the busy client stopped"
        assert parts(gw)["filesystem"]["background_requests_held"] > 0
        for i in range(FILES):
            assert sftp.stat(f"/f{i}").st_size == 4 * SIZE
    finally:
        transport.close()


def test_an_fsync_does_not_wait_for_turns(
    running_gateway: RunningGateway,  # noqa: F811
    busy: BusyClient,
) -> None:
    """While uploads of earlier files take turns with a busy client, an fsync of a new file
    is answered once that file is in the grid, before the earlier ones: its upload takes no
    turns."""
    gw = running_gateway
    transport, sftp = gw.sftp()
    try:
        _write_files(sftp, "earlier", 4 * SIZE)
        deadline = time.monotonic() + 60
        while not _uploading(gw) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _uploading(gw), "the earlier uploads never started"
        raw = RawSFTP(transport)
        handle = raw.open("/synced", SFTP_FLAG_WRITE | SFTP_FLAG_CREATE)
        for offset in range(0, SIZE, 32768):
            assert raw.status(CMD_WRITE, handle, Int64(offset), b"x" * 32768) == SFTP_OK
        assert raw.status(CMD_EXTENDED, "fsync@openssh.com", handle) == SFTP_OK
        left = [job["file"] for job in parts(gw)["upload queue"]["pending"]]
        assert left and not any(name.endswith("synced") for name in left)
        assert raw.status(CMD_CLOSE, handle) == SFTP_OK
    finally:
        transport.close()
