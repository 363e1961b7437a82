"""The embedded storage core's own thread: calls run there in order and in batches, their
answers and errors come back to the reactor, reads run in place while it is idle, and the
batch's group commit makes every share it completed durable with one flush."""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from gateway.grid import part as part_module
from gateway.grid.local import LocalStorageClient
from gateway.grid.part import EmbeddedStoragePart, embedded_core
from gateway.grid.storage_thread import StorageStopped, StorageThread
from gateway.intents.pacing import ClientActivity
from gateway.intents.turns import QUIET, BackgroundTurns, run_in_background
from gateway.nodedir import NodeDir
from storage import inplace
from storage.disk import DiskBackend
from storage.errors import NoSuchUpload
from tests.grid.contract import (
    OURS_IN_PROCESS,
    Slot,
    StorageClientContract,
    Upload,
    closing,
)
from tests.storage.test_applier import held_back, share_file
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
        done = thread.here(threading.get_ident)
        self.assertTrue(done.called)
        self.assertEqual(await done, here)
        state: list[str] = []
        gate = threading.Event()

        def write() -> None:
            gate.wait()
            state.append("written")

        writing = thread(write)
        reading = thread.here(lambda: (list(state), threading.get_ident()))
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
            await thread.here(lambda: None)
        await thread.stop()  # again: at once


class EmbeddedBatchTests(TestCase):
    """The embedded storage as the gateway runs it: a batched disk backend in its thread."""

    @deferred_test
    async def test_shares_completed_in_one_batch_share_one_flush(self) -> None:
        """Eight uploads whose last writes reach the thread together are durable after one
        group commit, and each write answers only then."""
        backend, server, thread = embedded_core(Path(self.mktemp()), reactor)
        client = LocalStorageClient(server, clock=reactor, thread=thread)
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


class EmbeddedCheckpointTests(TestCase):
    """The embedded core's checkpoints run in its storage thread."""

    @deferred_test
    async def test_a_checkpoint_due_after_a_write_run_in_place_runs_in_the_storage_thread(
        self,
    ) -> None:
        """A mutable write the reactor thread runs in place (the thread idle) grows the log
        past the checkpoint size: the checkpoint runs in the storage thread, after it, and
        the log is empty then."""
        self.patch(inplace, "CHECKPOINT_BYTES", 16 * 1024)
        backend, server, thread = embedded_core(Path(self.mktemp()), reactor)
        client = LocalStorageClient(server, clock=reactor, thread=thread)
        self.addCleanup(lambda: Deferred.fromCoroutine(_stopped(thread, backend)))
        ran: list[str] = []
        done: Deferred[None] = Deferred()
        checkpoint = inplace.LoggedFiles.checkpoint

        def recorded(files: inplace.LoggedFiles, everything: bool = True) -> None:
            ran.append(threading.current_thread().name)
            checkpoint(files, everything)
            reactor.callFromThread(done.callback, None)

        self.patch(inplace.LoggedFiles, "checkpoint", recorded)
        slot = Slot.new()
        await slot.write(client, 0, b"s" * (20 * 1024))
        self.assertEqual(ran, [], "not in the caller's turn")
        await done
        self.assertEqual(ran, ["storage"])
        self.assertTrue(backend._log.empty)
        self.assertEqual(await client.read_mutable(slot.si, 0, 0, 5), b"sssss")


class EmbeddedHoldTests(TestCase):
    """The gateway's embedded storage writes its share files while clients pause."""

    async def _held(self) -> tuple[EmbeddedStoragePart, Clock, ClientActivity, NodeDir]:
        """A started embedded storage part held back while ``activity`` (on ``clock``) is
        busy, stopped with the test."""
        clock = Clock()
        activity = ClientActivity(clock)
        nd = NodeDir(Path(self.mktemp()))
        nd.root.mkdir()
        part = EmbeddedStoragePart(reactor, nd)
        part.hold_while_busy(activity)
        await part.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(part.stop()))
        return part, clock, activity, nd

    @deferred_test
    async def test_the_share_files_are_written_once_clients_pause(self) -> None:
        """A slot written while a client was served in the last ``QUIET`` seconds is
        acknowledged and read back, its file not written yet; once clients have paused
        that long, the file is written."""
        part, clock, activity, nd = await self._held()
        assert part.server is not None and part._backend is not None
        client = LocalStorageClient(part.server, clock=reactor, thread=part.thread)
        activity.touch()
        slot = Slot.new()
        await slot.write(client, 0, b"s" * 100)
        applier = part._backend._files.applier
        assert applier is not None
        self.assertTrue(held_back(applier))
        self.assertFalse(share_file(nd.storage, slot.si, 0).exists())
        self.assertEqual(await client.read_mutable(slot.si, 0, 0, 3), b"sss")
        clock.advance(QUIET)
        for _ in range(1000):  # the thread looks again every HOLD_RECHECK seconds
            if not applier.waiting:
                break
            await deferLater(reactor, 0.01)
        self.assertEqual(applier.waiting, 0)
        self.assertEqual(share_file(nd.storage, slot.si, 0).read_bytes()[:3], b"sss")

    @deferred_test
    async def test_a_checkpoint_due_while_a_client_is_busy_runs_once_it_pauses(self) -> None:
        """Slots written while a client is served grow the log past the checkpoint size:
        no checkpoint holds up their requests meanwhile; once clients have paused, one
        runs (in the storage thread) and empties the log, and the slots read back."""
        self.patch(inplace, "CHECKPOINT_BYTES", 16 * 1024)
        self.patch(part_module, "CHECKPOINT_POLL", 0.01)
        ran: list[str] = []
        checkpoint = inplace.LoggedFiles.checkpoint

        def recorded(files: inplace.LoggedFiles, everything: bool = True) -> None:
            ran.append(threading.current_thread().name)
            checkpoint(files, everything)

        self.patch(inplace.LoggedFiles, "checkpoint", recorded)
        part, clock, activity, nd = await self._held()
        assert part.server is not None and part._backend is not None
        backend = part._backend
        opening = len(ran)  # (opening a backend checkpoints)
        client = LocalStorageClient(part.server, clock=reactor, thread=part.thread)
        activity.touch()
        slots = [Slot.new() for _ in range(4)]
        for i, slot in enumerate(slots):
            await slot.write(client, 0, bytes([i]) * (8 * 1024))
        await deferLater(reactor, 0.05)  # several polls while the client is busy
        self.assertEqual(ran[opening:], [], "no checkpoint while busy")
        self.assertGreater(backend._log.size, 16 * 1024)
        clock.advance(QUIET)
        for _ in range(1000):
            if backend._log.empty:
                break
            await deferLater(reactor, 0.01)
        self.assertTrue(backend._log.empty)
        self.assertEqual(ran[opening:], ["storage"])
        for i, slot in enumerate(slots):
            self.assertEqual(await client.read_mutable(slot.si, 0, 0, 3), bytes([i]) * 3)


async def _stopped(thread: StorageThread, backend: DiskBackend) -> None:
    await thread(backend.close)
    await thread.stop()


def threaded_client(testcase: TestCase) -> LocalStorageClient:
    """The in-process client over the embedded core as the gateway builds it (a batched
    disk backend in its thread), stopped with the test."""
    backend, server, thread = embedded_core(Path(testcase.mktemp()), reactor)
    testcase.addCleanup(lambda: Deferred.fromCoroutine(_stopped(thread, backend)))
    return closing(testcase, LocalStorageClient(server, clock=reactor, thread=thread))


class ThreadedContractTests(StorageClientContract, TestCase):
    """The IStorageClient contract for the in-process client as the gateway runs it for
    background work (uploads no one waits for): every call handed to the storage thread."""

    expect = OURS_IN_PROCESS

    async def make_client(self) -> LocalStorageClient:
        # The test's task becomes background work, as an upload job is (an idle gateway:
        # its turns come at once).
        await run_in_background(BackgroundTurns(reactor, ClientActivity(reactor)), lambda: False)
        return threaded_client(self)


class WaitedForContractTests(StorageClientContract, TestCase):
    """The contract again for calls someone waits for (an fsync's upload): run in place
    while the thread is idle, handed over behind pending calls."""

    expect = OURS_IN_PROCESS

    async def make_client(self) -> LocalStorageClient:
        return threaded_client(self)


class WaitedForTests(TestCase):
    """Where the calls of work someone waits for run."""

    @deferred_test
    async def test_a_waited_for_change_runs_in_place_when_idle_else_in_turn(self) -> None:
        """An upload's writes that someone waits for run in the caller's thread while the
        storage thread is idle (answered at the end of the reactor turn, durable: the
        commit ran); behind a pending call they are handed over, and run after it."""
        client = threaded_client(self)
        thread = client._thread
        assert thread is not None
        upload = Upload.new()
        await upload.allocate(client, {0}, 100)
        batches = thread.batches
        written = Deferred.fromCoroutine(upload.write(client, 0, 0, b"z" * 100))
        self.assertFalse(thread.idle)  # run, its commit due at the end of this turn
        self.assertTrue((await written).finished)
        self.assertTrue(thread.idle)
        self.assertEqual(thread.batches, batches)  # nothing went through the thread
        self.assertEqual(await client.read_immutable(upload.si, 0, 0, 100), b"z" * 100)
        second = Upload.new()
        await second.allocate(client, {0}, 100)
        held, gate = blocking(thread)
        pending = Deferred.fromCoroutine(second.write(client, 0, 0, b"w" * 100))
        self.assertFalse(pending.called)
        gate.set()
        await held
        self.assertTrue((await pending).finished)
        self.assertEqual(await client.read_immutable(second.si, 0, 0, 100), b"w" * 100)

    @deferred_test
    async def test_a_waited_for_allocation_is_answered_at_once(self) -> None:
        """An allocation needs no commit: run in place while the thread is idle, it is
        answered before the turn ends (an update then writes in the same turn), with no
        commit and no batch; behind a pending call it is handed over."""
        backend, server, thread = embedded_core(Path(self.mktemp()), reactor)
        client = LocalStorageClient(server, clock=reactor, thread=thread)
        self.addCleanup(lambda: Deferred.fromCoroutine(_stopped(thread, backend)))
        upload = Upload.new()
        groups, batches = backend.commits.groups, thread.batches
        allocated = Deferred.fromCoroutine(upload.allocate(client, {0, 1}, 20))
        self.assertTrue(allocated.called)
        self.assertEqual((await allocated).allocated, {0, 1})
        self.assertTrue(thread.idle)
        self.assertEqual((backend.commits.groups, thread.batches), (groups, batches))
        self.assertTrue((await upload.write(client, 0, 0, b"a" * 20)).finished)
        held, gate = blocking(thread)
        again = Deferred.fromCoroutine(upload.allocate(client, {0, 1}, 20))
        self.assertFalse(again.called)
        gate.set()
        await held
        result = await again
        self.assertEqual((result.already_have, result.allocated), ({0}, {1}))

    @deferred_test
    async def test_a_waited_for_slot_write_is_answered_once_durable(self) -> None:
        """A mutable slot's test-and-write flushes what it logs by itself: run in place, it
        is answered before the turn ends, with no group commit, and a backend opened
        afterwards on the same directory (as after kill -9) holds it."""
        path = Path(self.mktemp())
        backend, server, thread = embedded_core(path, reactor)
        client = LocalStorageClient(server, clock=reactor, thread=thread)
        self.addCleanup(lambda: Deferred.fromCoroutine(_stopped(thread, backend)))
        slot = Slot.new()
        groups = backend.commits.groups
        written = Deferred.fromCoroutine(slot.write(client, 0, b"directory v1"))
        self.assertTrue(written.called)
        await written
        self.assertTrue(thread.idle)
        self.assertEqual(backend.commits.groups, groups)
        reopened = DiskBackend(path)
        self.assertEqual(reopened.read_share(slot.si, 0, 0, 100), b"directory v1")
        reopened.close()

    @deferred_test
    async def test_changes_run_in_place_in_one_turn_share_one_commit(self) -> None:
        """Two shares written side by side by work someone waits for (an update's patch and
        node) complete with one group commit, in the caller's thread."""
        backend, server, thread = embedded_core(Path(self.mktemp()), reactor)
        client = LocalStorageClient(server, clock=reactor, thread=thread)
        self.addCleanup(lambda: Deferred.fromCoroutine(_stopped(thread, backend)))
        uploads = [Upload.new(), Upload.new()]
        for upload in uploads:
            await upload.allocate(client, {0}, 50)
        groups, batches = backend.commits.groups, thread.batches
        writes = [Deferred.fromCoroutine(u.write(client, 0, 0, b"p" * 50)) for u in uploads]
        results = await gatherResults(writes)
        self.assertTrue(all(result.finished for result in results))
        self.assertEqual(backend.commits.groups, groups + 1)
        self.assertEqual(thread.batches, batches)
        for upload in uploads:
            self.assertEqual(await client.read_immutable(upload.si, 0, 0, 50), b"p" * 50)

    @deferred_test
    async def test_a_call_handed_over_commits_the_changes_run_in_place_first(self) -> None:
        """Background work handed to the thread while changes run in place wait for their
        commit: those changes are answered first, and the thread sees their shares."""
        client = threaded_client(self)
        thread = client._thread
        assert thread is not None
        upload = Upload.new()
        await upload.allocate(client, {0}, 10)
        order: list[str] = []
        written = Deferred.fromCoroutine(upload.write(client, 0, 0, b"s" * 10))
        written.addCallback(lambda _: order.append("written"))
        await run_in_background(BackgroundTurns(reactor, ClientActivity(reactor)), lambda: False)
        again = upload.again()
        allocated = await again.allocate(client, {0}, 10)  # handed over
        order.append("allocated")
        self.assertEqual(allocated.already_have, {0})
        await written
        self.assertEqual(order, ["written", "allocated"])

    @deferred_test
    async def test_background_work_is_handed_to_the_thread(self) -> None:
        """An upload no one waits for runs its calls in the storage thread even when it is
        idle: the reactor thread stays free for clients."""
        client = threaded_client(self)
        thread = client._thread
        assert thread is not None
        await run_in_background(BackgroundTurns(reactor, ClientActivity(reactor)), lambda: False)
        upload = Upload.new()
        batches = thread.batches
        await upload.allocate(client, {0}, 100)
        self.assertTrue((await upload.write(client, 0, 0, b"b" * 100)).finished)
        self.assertEqual(thread.batches, batches + 2)
