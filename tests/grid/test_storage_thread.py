"""The embedded storage core's own thread: calls run there in order and in batches, their
answers and errors come back to the reactor, reads run in place while it is idle, and the
batch's group commit makes every share it completed durable with one flush."""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from gateway.grid.local import LocalStorageClient
from gateway.grid.storage_thread import StorageStopped, StorageThread
from storage.disk import DiskBackend
from storage.errors import NoSuchUpload
from storage.server import StorageServer
from tests.grid.contract import (
    OURS_IN_PROCESS,
    StorageClientContract,
    Upload,
    closing,
)
from tests.storage.test_http_server import deferred_test


def blocking(thread: StorageThread) -> tuple[Deferred[None], threading.Event]:
    """Hand the thread a call that holds it until the returned event is set; return once
    it runs (so that what is handed over next waits in the queue)."""
    running, gate = threading.Event(), threading.Event()

    def hold() -> None:
        running.set()
        gate.wait(30)

    held = thread(hold)
    assert running.wait(30)
    return held, gate


class Flushes:
    """An ``after_batch`` that counts the batches and fires what the batch left pending."""

    def __init__(self) -> None:
        self.count = 0
        self.pending: list[Deferred[str]] = []

    def __call__(self) -> None:
        self.count += 1
        pending, self.pending = self.pending, []
        for waiter in pending:
            waiter.callback("durable")


class StorageThreadTests(TestCase):
    """StorageThread on the running reactor."""

    def started(self, after_batch: Flushes | None = None) -> StorageThread:
        thread = StorageThread(reactor, after_batch or Flushes())
        self.addCleanup(thread.stop)
        return thread

    @deferred_test
    async def test_calls_run_in_order_in_a_thread_of_their_own(self) -> None:
        """Every call runs in one thread that is not the reactor's, in the order handed
        over, and each answer comes back to its caller."""
        thread = self.started()
        ran: list[tuple[int, int]] = []

        def call(number: int) -> int:
            ran.append((number, threading.get_ident()))
            return number * 10

        answers = await gatherResults([thread(partial(call, n)) for n in range(20)])
        self.assertEqual(answers, [n * 10 for n in range(20)])
        self.assertEqual([n for n, _ in ran], list(range(20)))
        idents = {ident for _, ident in ran}
        self.assertEqual(len(idents), 1)
        self.assertNotIn(threading.get_ident(), idents)
        self.assertTrue(thread.idle)

    @deferred_test
    async def test_calls_queued_meanwhile_form_one_batch(self) -> None:
        """Calls handed over while the thread is busy run as one batch: ``after_batch``
        runs once for all of them, before any of them is answered."""
        flushes = Flushes()
        thread = self.started(flushes)
        first, gate = blocking(thread)
        answered_after: list[int] = []

        def call(number: int) -> int:
            return number

        rest = [thread(partial(call, n)) for n in range(10)]

        def answered(number: int) -> int:
            answered_after.append(flushes.count)
            return number

        for waiter in rest:
            waiter.addCallback(answered)
        self.assertFalse(thread.idle)
        gate.set()
        await first
        self.assertEqual(await gatherResults(rest), list(range(10)))
        self.assertEqual(flushes.count, 2)
        self.assertEqual(answered_after, [2] * 10)
        self.assertEqual(thread.batches, 2)

    @deferred_test
    async def test_an_error_reaches_its_caller_only(self) -> None:
        """A call that raises fails its own Deferred with that error; the calls beside it
        in the batch are answered as usual."""
        thread = self.started()
        first, gate = blocking(thread)

        def refuse() -> None:
            raise NoSuchUpload("share 0 has no upload in progress")

        failing = thread(refuse)
        fine = thread(lambda: "fine")
        gate.set()
        await first
        with self.assertRaises(NoSuchUpload):
            await failing
        self.assertEqual(await fine, "fine")

    @deferred_test
    async def test_a_deferred_answer_is_what_the_batch_fired_it_with(self) -> None:
        """A call may answer a Deferred that ``after_batch`` fires (a share's durability):
        the caller gets its result. One still pending after the batch is an error."""
        flushes = Flushes()
        thread = self.started(flushes)

        def durable() -> Deferred[str]:
            waiter: Deferred[str] = Deferred()
            flushes.pending.append(waiter)
            return waiter

        self.assertEqual(await thread(durable), "durable")
        with self.assertRaises(RuntimeError):
            await thread(lambda: Deferred())

    @deferred_test
    async def test_reads_run_in_place_when_idle_and_in_turn_when_busy(self) -> None:
        """While the thread has nothing to do a read runs at once in the caller's thread;
        behind a pending call it waits its turn, and sees what that call did."""
        thread = self.started()
        here = threading.get_ident()
        done = thread.read(threading.get_ident)
        self.assertTrue(done.called)
        self.assertEqual(await done, here)
        state: list[str] = []
        gate = threading.Event()

        def write() -> None:
            gate.wait()
            state.append("written")

        writing = thread(write)
        reading = thread.read(lambda: (list(state), threading.get_ident()))
        self.assertFalse(reading.called)
        gate.set()
        await writing
        seen, ident = await reading
        self.assertEqual(seen, ["written"])
        self.assertNotEqual(ident, here)

    @deferred_test
    async def test_stop_finishes_what_was_handed_over_then_refuses(self) -> None:
        """Stopping lets the calls already handed over run; later calls fail with
        StorageStopped, reads included."""
        thread = self.started()
        first, gate = blocking(thread)
        second = thread(lambda: "second")
        stopped = thread.stop()
        gate.set()
        await stopped
        await first
        self.assertEqual(await second, "second")
        with self.assertRaises(StorageStopped):
            await thread(lambda: None)
        with self.assertRaises(StorageStopped):
            await thread.read(lambda: None)
        await thread.stop()  # again: at once


class EmbeddedBatchTests(TestCase):
    """The embedded storage as the gateway runs it: a batched disk backend in its thread."""

    @deferred_test
    async def test_shares_completed_in_one_batch_share_one_flush(self) -> None:
        """Eight uploads whose last writes reach the thread together are durable after one
        group commit, and each write answers only then."""
        backend = DiskBackend(Path(self.mktemp()), batched=True)
        thread = StorageThread(reactor, backend.commits.drain)
        client = LocalStorageClient(StorageServer(backend, reactor), clock=reactor, thread=thread)
        self.addCleanup(lambda: Deferred.fromCoroutine(_stopped(thread, backend)))
        uploads = [Upload.new() for _ in range(8)]
        for upload in uploads:
            await upload.allocate(client, {0}, 100)
        groups = backend.commits.groups
        blocked, gate = blocking(thread)
        writes = [Deferred.fromCoroutine(u.write(client, 0, 0, b"x" * 100)) for u in uploads]
        gate.set()
        await blocked
        results = await gatherResults(writes)
        self.assertTrue(all(result.finished for result in results))
        self.assertEqual(backend.commits.groups, groups + 1)
        for upload in uploads:
            data = await client.read_immutable(upload.si, 0, 0, 100)
            self.assertEqual(data, b"x" * 100)


async def _stopped(thread: StorageThread, backend: DiskBackend) -> None:
    await thread(backend.close)
    await thread.stop()


class ThreadedContractTests(StorageClientContract, TestCase):
    """The IStorageClient contract for the in-process client as the gateway runs it: the
    disk backend, batched, in a storage thread of its own."""

    expect = OURS_IN_PROCESS

    async def make_client(self) -> LocalStorageClient:
        backend = DiskBackend(Path(self.mktemp()), batched=True)
        thread = StorageThread(reactor, backend.commits.drain)
        self.addCleanup(lambda: Deferred.fromCoroutine(_stopped(thread, backend)))
        server = StorageServer(backend, reactor)
        return closing(self, LocalStorageClient(server, clock=reactor, thread=thread))
