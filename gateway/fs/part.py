"""The filesystem layer as a node part: staging, one volume per root, the uploader.

On start it re-adopts every upload journaled by an earlier run, so those files
are visible (and readable from staging) before the upload queue resumes them.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.logger import Logger

from gateway.config import NodeConfig
from gateway.fs.gridfs import GridFilesystem
from gateway.fs.kept import KeptCopies
from gateway.fs.staging import StagingArea
from gateway.fs.volume import Volume
from gateway.grid.part import GridPart
from gateway.intents.turns import BackgroundTurns
from gateway.nodedir import CONVERGENCE_FILE, LEASE_SECRET_FILE, NodeDir
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.immutable_format import EncodingParams
from gateway.objects.store import ObjectStore
from gateway.objects.writeback import DirectoryWriteBack
from gateway.service import NodePart, StartupError
from gateway.storage_node import read_secret_file
from gateway.threads import cpu_threads, reactor_pool_idle
from gateway.uploads.journal import UploadJob, UploadJournal
from gateway.uploads.queue import UploadQueue
from storage import base32

_log = Logger()

#: Uploads run at once; with several in flight, links into one directory share publishes.
UPLOAD_CONCURRENCY = 8

#: Seconds without a new CLOSE (or request) before waiting uploads start, and the most
#: they wait for that. (5 s kept the uploads of an sshfs ``cp -r`` out of the ``tar``
#: and ``diff`` right after it, but in a longer series of workloads it moved them, and
#: the uploads of the workloads before, into later ones: ``misc/bench.py``'s sshfs
#: ``tar`` took 1.8 s instead of 1.1 s. A longer hold only moves the work.)
UPLOAD_SETTLE = 0.25
UPLOAD_SETTLE_LIMIT = 2.0

#: Uploads recorded past which they run at full speed beside clients, as they do once
#: staging is half full. Each waiting file costs the process a few KiB (its job, journal
#: record, staged file and directory change): a copy of 40,000 small files while uploads
#: took their quarter of the process left nearly all of them waiting, and the gateway at
#: 257 MiB; with this, 148 MiB.
CROWDED_AT = 8192


def read_gateway_secrets(nd: NodeDir) -> GatewaySecrets:
    """The convergence and lease secrets from private/ (base32 text, as create writes them)."""

    def decode(name: str) -> bytes:
        text = read_secret_file(nd, name, "filesystem").decode("ascii", "replace").strip()
        try:
            return base32.a2b(text)
        except ValueError:
            raise StartupError("filesystem", f"{nd.secret(name)} is damaged") from None

    return GatewaySecrets(convergence=decode(CONVERGENCE_FILE), lease=decode(LEASE_SECRET_FILE))


class FilesystemPart(NodePart):
    """Staging, the object store and the volumes every SFTP session works on."""

    def __init__(self, reactor: Any, nd: NodeDir, config: NodeConfig, grid: GridPart):
        super().__init__("filesystem")
        self._reactor = reactor
        self._nd = nd
        self._grid = grid
        self._quota: int = config.get("uploads", "staging_quota")
        #: New files' staged copies kept once uploaded (at most a quarter of the quota).
        self.kept = KeptCopies(min(config.get("uploads", "keep_uploaded"), self._quota // 4))
        self._close_waits = config.get("uploads", "close") == "grid"
        self._grace: float = config.get("uploads", "grace_period")
        self.journal = UploadJournal(nd.state / "uploads")
        #: Where uploads encode, off the reactor thread that serves clients.
        self._cpu = cpu_threads(reactor)
        self.queue = UploadQueue(
            reactor,
            self.journal,
            self.upload,
            concurrency=UPLOAD_CONCURRENCY,
            grace_period=config.get("uploads", "grace_period"),
            settle=UPLOAD_SETTLE,
            settle_limit=UPLOAD_SETTLE_LIMIT,
        )
        #: Uploads and publishes send their requests in turns with clients' (staging more
        #: than half full, or many uploads waiting: at full speed).
        self.turns = BackgroundTurns(
            reactor, self.queue.activity, pressure=self._pressed, cpu=time.process_time
        )
        self.queue.turns = self.turns
        self.volumes: dict[str, Volume] = {}
        self.staging: StagingArea | None = None
        self.store: ObjectStore | None = None

    async def start(self) -> None:
        """Open staging, build the object store and re-adopt journaled uploads."""
        secrets = read_gateway_secrets(self._nd)
        encoding = self._grid.encoding
        params = EncodingParams(k=encoding.needed, happy=encoding.happy, n=encoding.total)
        self.store = ObjectStore(
            lambda: self._grid.servers,
            secrets,
            params,
            self._reactor,
            threads=self._cpu,
        )
        if not self._close_waits:
            # Directory changes are answered once journaled, as CLOSE is, and published after.
            self.store.write_back = DirectoryWriteBack(
                self._nd.state / "directories",
                self.store.mutable_client,
                self._reactor,
                activity=self.queue.activity,
                turns=self.turns,
                barrier=self.store.barrier,
            )
        self.staging = StagingArea(self._nd.staging, self._quota)
        self.staging.make_room = self.kept.make_room
        journaled = list(self.journal.load())
        referenced = {job.staged for job in journaled}
        for leftover in self.staging.leftovers(referenced):
            leftover.unlink()  # written but never closed before a crash: never acknowledged
        for job in journaled:
            self.volume(job.target["root"]).adopt(job)
        # A server that comes back may be what failed uploads were waiting for.
        self._grid.on_server_back.append(self.queue.retry_now)

    async def stop(self) -> None:
        """Publish journaled directory changes within the grace period; the rest stay
        journaled."""
        for volume in self.volumes.values():
            volume.spares.stop()
        if self.store is not None and self.store.write_back is not None:
            try:  # the journal, closed below, may name the objects of an fsync cut short
                await self.store.barrier()
            except Exception:
                _log.failure("the objects of an fsync cut short by the stop may be lost")
            # Small publishes: a grid that takes none within 10 s will not take them at all.
            await self.store.write_back.stop(min(self._grace, 10.0))
        if self._cpu is not None:
            self._cpu.stop()  # the upload queue, stopped before this part, encodes no more
        self.kept.clear()  # no plaintext left behind that nothing needs

    def _pressed(self) -> bool:
        """Whether background work must go at full speed: staging is more than half full,
        or more than :data:`CROWDED_AT` uploads are waiting."""
        staging = self.staging
        if self.journal.recorded > CROWDED_AT:
            return True
        return staging is not None and staging.used * 2 > staging.quota

    def threads_quiet(self) -> bool:
        """Whether no thread works for the filesystem now: no encoding in the CPU pool,
        no fsync or file creation in the reactor's pool."""
        return (self._cpu is None or self._cpu.idle) and reactor_pool_idle(self._reactor)

    def volume(self, root_cap: str) -> Volume:
        """The shared volume of a root directory."""
        volume = self.volumes.get(root_cap)
        if volume is None:
            assert self.store is not None and self.staging is not None, "filesystem not started"
            volume = Volume(
                root_cap,
                self.store,
                self.staging,
                self.queue,
                self._reactor,
                self._close_waits,
                kept=self.kept,
            )
            self.volumes[root_cap] = volume
        return volume

    def filesystem(self, root_cap: str, read_only: bool = False) -> GridFilesystem:
        """A session's filesystem over the shared volume of a root directory."""
        return GridFilesystem(self.volume(root_cap), read_only=read_only)

    async def upload(self, job: UploadJob) -> None:
        """The upload queue's worker: hand the job to its volume."""
        await self.volume(job.target["root"]).upload(job)

    def status(self) -> dict[str, Any]:
        """Staging use (no paths of secrets, no caps)."""
        if self.staging is None:
            return {"running": False}
        write_back = self.store.write_back if self.store is not None else None
        return {
            "staging_used": self.staging.used,
            "staging_quota": self.staging.quota,
            # Of staging_used: copies of uploaded files kept to read them back locally.
            "kept_copies_bytes": self.kept.used,
            "volumes": len(self.volumes),
            "directory_changes_pending": write_back.pending() if write_back else 0,
            "directories_pending": write_back.pending_directories() if write_back else 0,
            # Requests of uploads and publishes that waited for clients to pause.
            "background_requests_held": self.turns.held,
            # CPU seconds background work took beyond its requests' estimated costs, and
            # those the SFTP connections' reads took serving clients.
            "background_measured_seconds": round(self.turns.measured, 3),
            "clients_served_seconds": round(self.queue.activity.served, 3),
        }
