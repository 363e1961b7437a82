"""Optional lease expiry: delete storage indexes whose every lease has run out.

Off by default, as in Tahoe-LAFS: a node builds :func:`expiry_service` only when
its configuration enables expiry. The crawl is incremental — each tick looks at
a bounded number of storage indexes and resumes where it stopped — so a large
store never blocks the reactor for long. Time comes from the clock passed in.
"""

from __future__ import annotations

from collections.abc import Iterator

from attrs import define, field
from twisted.application.internet import TimerService

from storage.backend import IShareBackend
from storage.leases import all_expired
from storage.server import IClock, StorageServer

#: Seconds an immutable upload may receive nothing before it is discarded (as Tahoe: 30 minutes).
IDLE_UPLOAD_TIMEOUT = 30 * 60


@define(eq=False)
class LeaseExpirer:
    """Walks the backend's storage indexes and deletes those whose leases all expired.

    Indexes with no lease at all are left alone (they can only come from damage,
    and deleting on damage is not this crawler's call).
    """

    backend: IShareBackend
    clock: IClock
    batch_size: int = 1000
    deleted: int = 0
    _cursor: Iterator[bytes] | None = field(default=None, init=False)

    def step(self) -> int:
        """Examine up to ``batch_size`` storage indexes; return how many were deleted."""
        if self._cursor is None:
            self._cursor = self.backend.storage_indexes()
        now = self.clock.seconds()
        deleted = 0
        for _ in range(self.batch_size):
            storage_index = next(self._cursor, None)
            if storage_index is None:
                self._cursor = None
                break
            metadata = self.backend.get_metadata(storage_index)
            if metadata is not None and all_expired(metadata.leases, now):
                self.backend.delete_index(storage_index)
                deleted += 1
        self.deleted += deleted
        return deleted

    def run_to_completion(self) -> int:
        """Crawl every storage index once; return how many were deleted."""
        self._cursor = None
        deleted = self.step()
        while self._cursor is not None:
            deleted += self.step()
        return deleted


def expiry_service(expirer: LeaseExpirer, interval: float = 60.0) -> TimerService:
    """A service calling ``expirer.step`` every ``interval`` seconds on the expirer's clock."""
    service = TimerService(interval, expirer.step)
    service.clock = expirer.clock
    return service


def idle_upload_service(
    server: StorageServer, interval: float = 60.0, max_idle: float = IDLE_UPLOAD_TIMEOUT
) -> TimerService:
    """A service discarding uploads idle for ``max_idle`` seconds, on the server's clock."""
    service = TimerService(interval, server.abort_idle_uploads, max_idle)
    service.clock = server.clock
    return service
