"""A real gateway keeps serving a busy client first: uploads take turns with its requests,
still finish while it stays busy, and an fsync meanwhile is not kept waiting by them."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

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

from tests.durability.cluster import status, upload_queue, wait_for
from tests.sftp.gateway_node import (  # noqa: F401
    Int64,
    RawSFTP,
    RunningGateway,
    running_gateway,
)

FILES = 40
SIZE = 1024 * 1024


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


def _write_files(sftp: paramiko.SFTPClient, prefix: str) -> None:
    for i in range(FILES):
        with sftp.open(f"/{prefix}{i}", "wb") as f:
            f.write(os.urandom(SIZE))


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
        _write_files(sftp, "f")
        wait_for(lambda: not upload_queue(gw), 120, "the uploads, while a client is busy")
        assert busy.stats > 0 and busy.transport.is_active(), "the busy client stopped"
        filesystem = status(gw)["parts"]["filesystem"]
        assert filesystem["background_requests_held"] > 0
        # what serving the clients took is measured, and not charged to the uploads
        assert filesystem["clients_served_seconds"] > 0
        assert filesystem["background_measured_seconds"] >= 0
        for i in range(FILES):
            assert sftp.stat(f"/f{i}").st_size == SIZE
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
        _write_files(sftp, "earlier")
        wait_for(
            lambda: any(job["uploading"] for job in upload_queue(gw)),
            60,
            "the earlier uploads to start",
        )
        raw = RawSFTP(transport)
        handle = raw.open("/synced", SFTP_FLAG_WRITE | SFTP_FLAG_CREATE)
        for offset in range(0, 256 * 1024, 32768):
            assert raw.status(CMD_WRITE, handle, Int64(offset), b"x" * 32768) == SFTP_OK
        assert raw.status(CMD_EXTENDED, "fsync@openssh.com", handle) == SFTP_OK
        left = [job["file"] for job in upload_queue(gw)]
        assert left and not any(name.endswith("synced") for name in left)
        assert raw.status(CMD_CLOSE, handle) == SFTP_OK
    finally:
        transport.close()
