"""The Transfers page's data lists the oldest queued uploads, at most QUEUE_SHOWN of them,
with the queue's full length beside them."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock

from gateway.logfile import Scrubber
from gateway.metrics import RecentErrors
from gateway.service import Node
from gateway.uploads.journal import UploadJob, UploadJournal, new_job_id
from gateway.uploads.queue import UploadQueue
from gateway.web.data import QUEUE_SHOWN, NodeView


async def _never_done(job: UploadJob) -> None:
    raise AssertionError("no upload starts in this test")


def test_a_long_queue_shows_its_oldest_and_counts_them_all(tmp_path: Path) -> None:
    """With more uploads queued than the page lists, the page has the oldest QUEUE_SHOWN, in
    order, and the total; a short queue is listed whole."""
    clock = Clock()
    clock.advance(1_700_000_000)
    queue = UploadQueue(clock, UploadJournal(tmp_path / "journal"), _never_done)
    queue.startService()
    node = Node("gateway", "test")
    node.parts.append(queue)
    view = NodeView(node, clock, RecentErrors(Scrubber()))
    for i in range(3):
        queue.enqueue(UploadJob(new_job_id(), f"s{i}", 10, f"/f{i}", {}, created=i))
    short = view.transfers()
    assert [job["file"] for job in short["queue"]] == ["/f0", "/f1", "/f2"]
    assert short["queue_total"] == 3
    for i in range(3, QUEUE_SHOWN + 20):
        queue.enqueue(UploadJob(new_job_id(), f"s{i}", 10, f"/f{i}", {}, created=i))
    long = view.transfers()
    assert [job["file"] for job in long["queue"]] == [f"/f{i}" for i in range(QUEUE_SHOWN)]
    assert long["queue_total"] == QUEUE_SHOWN + 20
    queue.stopService()
