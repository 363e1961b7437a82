"""When the spare staged files go (see :mod:`gateway.fs.staging`, "Spare files").

Spares are made ahead while files are being written, and an idle staging directory
is empty. Dropping them the moment nothing was pending made a client that opens
and closes files in a loop without changing them (an editor checking a file, a
scanner, OPEN r+ then CLOSE) find none at each OPEN: every CLOSE removed the 16
spares and the next OPEN made them again, 1.7 ms of system time per OPEN. So they
go :data:`SPARES_LINGER` seconds after the last reason to drop them, if nothing is
pending and no file is open for writing then; never while a file is open for
writing (a database fsyncing in a loop leaves the queue idle between its fsyncs,
and each fsync's snapshot takes a spare).
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from gateway.fs.overlay import Overlay
from gateway.fs.staging import StagingArea
from gateway.uploads.queue import UploadQueue

SPARES_LINGER = 5.0
"""Seconds the spares stay once idle (from the latest CLOSE or end of an upload)."""


class SpareFiles:
    """Drops one volume's spare staged files once it has been idle a while."""

    def __init__(
        self, staging: StagingArea, queue: UploadQueue, overlay: Overlay, clock: IReactorTime
    ) -> None:
        self._staging = staging
        self._queue = queue
        self._overlay = overlay
        self._clock = clock
        self._drop: IDelayedCall | None = None
        queue.when_idle(self.idle)

    def idle(self) -> None:
        """Nothing is pending, or a file was closed unchanged: drop the spares later, unless
        a file is open for writing (its last CLOSE says so again)."""
        if self._overlay.writing:
            return
        if self._drop is not None and self._drop.active():
            self._drop.reset(SPARES_LINGER)
        else:
            self._drop = self._clock.callLater(SPARES_LINGER, self._dropped)

    def _dropped(self) -> None:
        self._drop = None
        if self._queue.idle and not self._overlay.writing:
            self._staging.drop_spares()

    def stop(self) -> None:
        """Drop the spares now if idle, and leave no timer behind (the node stops)."""
        if self._drop is not None and self._drop.active():
            self._drop.cancel()
            self._dropped()
        self._drop = None
