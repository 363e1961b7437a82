"""The background upload queue: journaled jobs uploaded to the grid, retried with backoff.

A job enters the queue only once its journal record is durable; it leaves
only once the uploader has published it, and then its record is removed. A
failed attempt is recorded (attempts, last error) and retried after an
exponential backoff on the passed-in clock. On start every journaled job is
resumed; on stop the queue lets running uploads finish for up to the grace
period, and whatever is left stays journaled for the next start.

With a reactor that has threads, :meth:`UploadQueue.enqueue` appends the record
and its flush runs in a thread, shared with the records of other files closed
meanwhile (:meth:`~gateway.uploads.journal.UploadJournal.flushed`): whoever
acknowledges the file to a client awaits :meth:`UploadQueue.durable` first, and
the job becomes ready to upload only then. Without threads (a test's clock)
enqueue flushes before it returns.

One exception: a job someone waits for (an fsync) starts while its record is
still being flushed, so that its objects are stored meanwhile. The uploader then
awaits :meth:`UploadQueue.recorded` before it links anything: a job whose record
cannot be flushed is dropped, and what it stored is never named (leases collect
it).

A job may also have no record at all (``enqueue(job, record=False)``): an fsync's
snapshot of a file that no recorded job of the same path could replace after a
restart. Nothing is acknowledged before it is in the grid, so a crash before then
loses only what was never acknowledged, as after a power cut; its record would
cost a flush of the journal per fsync for nothing. Such a job is never journaled:
not when it fails, not when it is re-targeted, not at a stop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from attrs import evolve
from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.intents.pacing import ClientActivity, retry_delay
from gateway.intents.turns import BackgroundTurns, run_in_background
from gateway.metrics import Progress
from gateway.service import NodePart
from gateway.threads import Threads, reactor_threads
from gateway.uploads.journal import StagedBytes, UploadJob, UploadJournal
from gateway.uploads.status import Finished, finished_upload, pending_job

Uploader = Callable[[UploadJob], Awaitable[None]]


class QueueStopped(Exception):
    """The queue stopped before the job was uploaded; it stays journaled."""


class JobDropped(Exception):
    """The job's record could not be flushed: it is not uploaded (its client was told)."""


class UploadQueue(NodePart):
    """Uploads journaled jobs in the background, a few at a time, in arrival order."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        journal: UploadJournal,
        uploader: Uploader,
        *,
        concurrency: int = 2,
        grace_period: float = 30.0,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        keep_finished: int = 50,
        settle: float = 0.0,
        settle_limit: float = 2.0,
        threads: Threads | None = None,
        turns: BackgroundTurns | None = None,
    ):
        """``threads`` flushes the journal (see the module docstring); by default the
        clock's thread pool, when it has one. ``turns`` paces uploads while clients are busy
        (none: uploads never wait for clients once started)."""
        super().__init__("upload queue")
        self._clock = clock
        self._journal = journal
        self._uploader = uploader
        self._concurrency = concurrency
        self._grace = grace_period
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._keep_finished = keep_finished
        self._settle = settle
        self._settle_limit = settle_limit
        self._settling: IDelayedCall | None = None
        self._settle_deadline = 0.0
        #: When clients were last served: jobs hold back while they are busy.
        self.activity = ClientActivity(clock)
        self._jobs: dict[str, UploadJob] = {}
        self._ready_ids: deque[str] = deque()
        self._retry_at: dict[str, tuple[float, IDelayedCall]] = {}
        self._running: dict[str, Deferred[None]] = {}
        self._waiters: dict[str, list[Deferred[None]]] = {}
        self._accepting = False
        self.finished: list[Finished] = []
        self.progress: dict[str, Progress] = {}
        self._threads = threads if threads is not None else reactor_threads(clock)
        #: Jobs whose records are being flushed, with who waits for that; failed flushes.
        self._flushing: dict[str, list[Deferred[None]]] = {}
        self._flush_failed: dict[str, Failure] = {}
        #: Jobs started before their record was durable (someone waits for them), and
        #: those of them whose record then failed to flush.
        self._early: set[str] = set()
        self._dropped: set[str] = set()
        #: Jobs without a record (see the module docstring).
        self._unrecorded: set[str] = set()
        self._idle_callbacks: set[Callable[[], None]] = set()
        self._kicking = False  # _kick is running: a nested call leaves the work to it
        #: Paces the requests of running uploads while clients are busy.
        self.turns = turns

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Resume every journaled job."""
        self._accepting = True
        for job in self._journal.load():
            self._jobs[job.job_id] = evolve(job, data=None)
            self._ready_ids.append(job.job_id)
        for name in self._journal.damaged:
            self.log.error("upload record {name} is damaged; set aside", name=name)
        if self._jobs:
            self.log.info("resuming {n} journaled uploads", n=len(self._jobs))
        self._kick()

    async def stop(self) -> None:
        """Stop starting uploads; give running ones the grace period; leave the rest journaled."""
        if self._settling is not None and self._settling.active():
            self._settling.cancel()  # waiting jobs start now: the grace period is for them too
            self._settled(hold=False)
        self._accepting = False
        for _, call in self._retry_at.values():
            if call.active():
                call.cancel()
        self._retry_at.clear()
        running = list(self._running.values())
        if running:
            self.log.info(
                "waiting up to {grace} s for {n} uploads", grace=self._grace, n=len(running)
            )
            everything: Deferred[Any] = DeferredList(running, consumeErrors=True)
            everything.addTimeout(self._grace, self._clock)
            try:
                await everything
            except Exception:
                for upload in list(self._running.values()):
                    upload.cancel()
        for job_id, waiters in list(self._waiters.items()):
            for waiter in waiters:
                waiter.errback(QueueStopped(f"upload of {self._display(job_id)} still pending"))
        self._waiters.clear()
        for job_id in self._unrecorded:  # never acknowledged: their fsyncs failed above
            self._jobs.pop(job_id, None)
        self._unrecorded.clear()
        if self._jobs:
            self.log.info("{n} uploads stay journaled for the next start", n=len(self._jobs))

    # -- use -------------------------------------------------------------------

    def enqueue(
        self, job: UploadJob, record: bool = True, staged: StagedBytes | None = None
    ) -> None:
        """Journal the job, then queue it once the record is on disk (see :meth:`durable`).

        An error writing the record is raised here; without threads, so is one flushing it.
        With ``record`` false the job is queued at once and never journaled (see the
        module docstring): it is gone after a stop or a crash. ``staged`` holds the bytes a
        small file's record holds (read again when the record is rewritten).
        """
        if not self._accepting:
            raise QueueStopped("the upload queue is stopped")
        if not record:
            self._unrecorded.add(job.job_id)
            self._jobs[job.job_id] = evolve(job, data=None)
            self._queue_ready(job.job_id)
            return
        threads = self._threads
        self._journal.record(job, sync=threads is None, staged=staged)
        self._jobs[job.job_id] = evolve(job, data=None)  # the journal keeps a small file's bytes
        if threads is None:
            self._queue_ready(job.job_id)
            return
        self._flushing[job.job_id] = []
        flushed = self._journal.flushed(threads, in_place=True)  # a CLOSE waits for it
        flushed.addCallbacks(
            self._flushed, self._not_flushed, callbackArgs=(job.job_id,), errbackArgs=(job.job_id,)
        )

    def durable(self, job_id: str) -> Deferred[None]:
        """Fires once the job's record is on disk; fails with the error if it cannot be.

        A job whose record could not be flushed is dropped (it is not uploaded).
        """
        failure = self._flush_failed.pop(job_id, None)
        if failure is not None:
            return fail(failure)
        waiters = self._flushing.get(job_id)
        if waiters is None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        waiters.append(waiter)
        return waiter

    def _flushed(self, _: None, job_id: str) -> None:
        for waiter in self._flushing.pop(job_id, []):
            waiter.callback(None)
        if job_id in self._early:
            self._early.discard(job_id)  # started already
        elif job_id in self._jobs:
            self._queue_ready(job_id)

    def _not_flushed(self, failure: Failure, job_id: str) -> None:
        """Not durable, so never acknowledged: the job is dropped (its record may stay in the
        log, unflushed; a start that finds it uploads a file its client was told failed)."""
        self.log.error(
            "the upload journal cannot be flushed: {error}", error=failure.getErrorMessage()
        )
        self._jobs.pop(job_id, None)
        self._early.discard(job_id)
        if job_id in self._running:  # started early, under way: it must not link
            self._dropped.add(job_id)
        waiters = self._flushing.pop(job_id, [])
        if not waiters:
            self._flush_failed[job_id] = failure
        for waiter in waiters:
            waiter.errback(failure)
        for waiter in self._waiters.pop(job_id, []):
            waiter.errback(failure)
        self._maybe_idle()

    def _queue_ready(self, job_id: str) -> None:
        self._ready_ids.append(job_id)
        self._start_soon()

    def _start_soon(self) -> None:
        """Start new jobs once files stop arriving for ``settle`` seconds (at most
        ``settle_limit`` after the first is waiting), never in the caller's own turn.

        While a client is closing file after file (``cp -r``, ``put`` of many files), its
        requests get the process to themselves and the waiting files' directory links then
        share publishes; with ``settle`` 0 jobs start on the next reactor turn.
        """
        now = self._clock.seconds()
        settling = self._settling
        active = settling is not None and settling.active()
        if not active:
            self._settle_deadline = now + self._settle_limit
        delay = max(0.0, min(self._settle, self._settle_deadline - now))
        if self._waiters and any(job_id in self._waiters for job_id in self._ready_ids):
            delay = 0.0  # someone waits for the grid (an fsync that came before its job was ready)
        if active:
            assert settling is not None
            settling.reset(delay)  # (moved, not cancelled and made anew: one per CLOSE of a cp -r)
        else:
            self._settling = self._clock.callLater(delay, self._settled)

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever the last pending job has finished (once per callback,
        however often it is registered)."""
        self._idle_callbacks.add(callback)

    @property
    def idle(self) -> bool:
        """Whether no job is pending."""
        return not self._jobs

    def _maybe_idle(self) -> None:
        if not self._jobs:
            for callback in list(self._idle_callbacks):
                callback()

    def client_active(self) -> None:
        """A client's request is being served: jobs waiting to start hold back as they do for
        a CLOSE, until requests stop for ``settle`` seconds (never past ``settle_limit``).

        So a client that reads back what it just wrote (``tar``, ``diff`` after ``cp``) is
        served from staging, without uploads competing for the process.
        """
        self.activity.touch()

    def _settled(self, hold: bool = True) -> None:
        self._settling = None
        if hold and not self._waiters:  # no one waits for the grid: hold while clients are busy
            now = self._clock.seconds()
            wait = min(self.activity.last + self._settle, self._settle_deadline) - now
            if wait > 0:
                self._settling = self._clock.callLater(wait, self._settled)
                return
        self._kick()

    def update_target(self, job_id: str, target: dict[str, Any], size: int | None = None) -> None:
        """Point a pending job elsewhere (its file was renamed, re-stamped or truncated);
        durably."""
        job = self._jobs.get(job_id)
        if job is None:
            return
        job = evolve(job, target=target, size=job.size if size is None else size)
        if job_id not in self._unrecorded:
            self._journal.record(job)
        self._jobs[job_id] = job

    async def recorded(self, job_id: str) -> None:
        """Return once the job's record is durable (an uploader awaits it before it links
        anything: a job someone waits for starts before); raise :class:`JobDropped` if it
        never will be."""
        waiters = self._flushing.get(job_id)
        if waiters is not None:
            waiter: Deferred[None] = Deferred()
            waiters.append(waiter)
            try:
                await waiter
            except Exception:
                raise JobDropped(f"{self._display(job_id)}: its record was not saved") from None
        if job_id in self._dropped:
            raise JobDropped(f"{job_id}: its record was not saved")

    def wait_for(self, job_id: str) -> Deferred[None]:
        """Fires once the job is uploaded (at once when it is not pending).

        A job whose record is still being flushed starts now (see :meth:`recorded`)."""
        if job_id not in self._jobs:
            return Deferred.fromCoroutine(_done())
        if job_id in self._flushing and job_id not in self._early:
            self._early.add(job_id)
            self._ready_ids.append(job_id)
        if self._settling is not None and self._settling.active():
            self._settling.reset(0)  # someone waits for the grid: no settling
        waiter: Deferred[None] = Deferred()
        self._waiters.setdefault(job_id, []).append(waiter)
        if job_id in self._ready_ids and (self._settling is None or not self._settling.active()):
            self._clock.callLater(0, self._kick)  # ahead of the jobs no one waits for
        return waiter

    def superseded(self, job_id: str) -> None:
        """A newer version of the job's file was linked: drop its record now (the job runs
        on, and its link is refused). Its "done" record then comes before the newer job's
        in the journal, so no restart that finds the newer one linked replays this one
        over it."""
        if job_id in self._jobs and job_id not in self._unrecorded:
            self._journal.remove(job_id)
            self._unrecorded.add(job_id)

    def recorded_job(self, job_id: str) -> bool:
        """Whether the job has a journal record (a restart would upload it again)."""
        return job_id in self._jobs and job_id not in self._unrecorded

    def awaited(self, job_id: str) -> bool:
        """Whether someone waits for this job to reach the grid (an fsync, ``close = grid``)."""
        return bool(self._waiters.get(job_id))

    def pending(self) -> list[UploadJob]:
        """Jobs not yet uploaded, oldest first."""
        return sorted(self._jobs.values(), key=lambda job: (job.created, job.job_id))

    def advance(self, job_id: str) -> Callable[[int], None] | None:
        """What to tell of each part of the job's bytes stored, to report its progress."""
        progress = self.progress.get(job_id)
        return None if progress is None else progress.advance

    def retry_now(self) -> None:
        """Retry every waiting job at once (an operator's nudge, or the grid came back)."""
        for job_id, (_, call) in list(self._retry_at.items()):
            if call.active():
                call.cancel()
            del self._retry_at[job_id]
            self._ready_ids.append(job_id)
        self._kick()

    # -- machinery -------------------------------------------------------------

    def _display(self, job_id: str) -> str:
        job = self._jobs.get(job_id)
        return job.display if job else job_id

    def _kick(self) -> None:
        # An upload that finishes at once (small files on the embedded grid) kicks again from
        # inside this loop: that call returns, and this loop starts the next job. Without
        # the guard each such upload nested a call, and a few hundred in a row exceeded
        # Python's recursion limit, failing jobs that then waited for a retry never set.
        if self._kicking:
            return
        self._kicking = True
        try:
            if self._waiters and self._accepting:
                # Someone waits for these (an fsync): they start now, whatever else runs.
                for job_id in [j for j in self._ready_ids if j in self._waiters]:
                    self._ready_ids.remove(job_id)
                    self._begin(job_id)
            while self._accepting and self._ready_ids and len(self._running) < self._concurrency:
                self._begin(self._ready_ids.popleft())
        finally:
            self._kicking = False

    def _begin(self, job_id: str) -> None:
        if job_id in self._jobs and job_id not in self._running:
            attempt = Deferred.fromCoroutine(self._attempt(job_id))
            if not attempt.called:  # an upload that finished at once holds no slot
                self._running[job_id] = attempt

    async def _attempt(self, job_id: str) -> None:
        # Its requests take turns with clients', unless someone waits for this file.
        try:
            await run_in_background(self.turns, lambda: self.awaited(job_id))
        except CancelledError:  # stopped while waiting for its first turn: stays journaled
            self._running.pop(job_id, None)
            return
        try:
            await self._upload(job_id)
        finally:
            self.progress.pop(job_id, None)

    async def _upload(self, job_id: str) -> None:
        job = self._jobs[job_id]
        total = job.size if job.changed is None else job.changed
        self.progress[job_id] = Progress(self._clock, total=total)
        try:
            await self._uploader(job)
        except CancelledError:
            self._running.pop(job_id, None)
            return
        except Exception as e:
            self._running.pop(job_id, None)
            if job_id in self._dropped:  # its record was not saved: nothing to retry
                self._dropped.discard(job_id)
            else:
                self._failed(job, e)
            return
        self._running.pop(job_id, None)
        self._dropped.discard(job_id)
        if job_id in self._unrecorded:
            self._unrecorded.discard(job_id)
        else:
            self._journal.remove(job_id)
        self._jobs.pop(job_id, None)
        self.finished.append(
            Finished(job.display, job.size, job.attempts + 1, self._clock.seconds())
        )
        del self.finished[: -self._keep_finished]
        for waiter in self._waiters.pop(job_id, []):
            waiter.callback(None)
        self._maybe_idle()
        self._kick()

    def _failed(self, job: UploadJob, error: Exception) -> None:
        message = str(error) or type(error).__name__
        job = job.failed(message)
        self._jobs[job.job_id] = job
        try:
            if job.job_id not in self._unrecorded:
                self._journal.record(job)
        except OSError as e:
            self.log.error("cannot update upload record: {e}", e=e.strerror)
        delay = retry_delay(job.attempts, self._base_delay, self._max_delay)
        self.log.warn(
            "upload of {name} failed (attempt {n}): {error}; retry in {delay:.0f} s",
            name=job.display,
            n=job.attempts,
            error=message,
            delay=delay,
        )
        if self._accepting:
            call = self._clock.callLater(delay, self._retry, job.job_id)
            self._retry_at[job.job_id] = (self._clock.seconds() + delay, call)
        self._kick()

    def _retry(self, job_id: str) -> None:
        self._retry_at.pop(job_id, None)
        self._ready_ids.append(job_id)
        self._kick()

    def status(self) -> dict[str, Any]:
        """Queue depth and every pending job (display name, size, attempts, retry, error)."""
        return {
            "pending": [
                pending_job(
                    job,
                    job.job_id in self._running,
                    self._retry_at[job.job_id][0] if job.job_id in self._retry_at else None,
                    self.progress.get(job.job_id),
                )
                for job in self.pending()
            ],
            "recently_finished": [finished_upload(f) for f in reversed(self.finished)],
        }


async def _done() -> None:
    return None
