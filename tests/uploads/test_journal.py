"""The upload journal's log: small files' bytes inline, failed-retry records keep them,
compaction, torn tails, and records from the one-file-per-job format."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from gateway.intents import log as intent_log_module
from gateway.uploads.journal import LOG_NAME, UploadJob, UploadJournal, new_job_id
from gateway.uploads.queue import UploadQueue
from storage.redolog import RedoLog


def _job(staged: Path, data: bytes | None = None, created: float = 0.0) -> UploadJob:
    return UploadJob(
        new_job_id(), str(staged), len(data or b""), "/f", {"cap": "x"}, created, data=data
    )


def test_inline_bytes_survive_in_the_record(tmp_path: Path) -> None:
    """A small file's bytes come back from the journal alone, after any number of rewrites."""
    staged = tmp_path / "a.staged"
    staged.write_bytes(b"hello")
    journal = UploadJournal(tmp_path / "j")
    job = _job(staged, b"hello")
    journal.record(job)
    # Callers keep jobs without their bytes; a rewrite takes them from the staged file.
    journal.record(UploadJob(job.job_id, str(staged), 5, "/renamed", {"cap": "y"}, 0.0))
    staged.unlink()  # never flushed: lost in a crash
    (loaded,) = UploadJournal(tmp_path / "j").load()
    assert (loaded.display, loaded.data, loaded.target) == ("/renamed", b"hello", {"cap": "y"})


def test_removed_jobs_stay_removed_and_compaction_keeps_live_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Done jobs never come back; past the size limit the log is rewritten with live jobs only."""
    monkeypatch.setattr(intent_log_module, "COMPACT_BYTES", 20_000)
    journal = UploadJournal(tmp_path / "j")
    keep = _job(tmp_path / "keep", b"k" * 100, created=1.0)
    journal.record(keep)
    for i in range(30):
        job = _job(tmp_path / f"f{i}", bytes([i]) * 2000, created=2.0 + i)
        journal.record(job)
        journal.remove(job.job_id)
    assert RedoLog(tmp_path / "j" / LOG_NAME, repair=False).size < 20_000 + 3000
    assert [j.job_id for j in UploadJournal(tmp_path / "j").load()] == [keep.job_id]


def test_the_journal_counts_the_jobs_recorded_and_not_removed(tmp_path: Path) -> None:
    """``recorded`` counts the jobs waiting (what tells the gateway that uploads must go at
    full speed, past ``CROWDED_AT``): rewriting a job counts it once, removing it uncounts it."""
    journal = UploadJournal(tmp_path / "j")
    assert journal.recorded == 0
    jobs = [_job(tmp_path / f"f{i}", b"x") for i in range(5)]
    for job in jobs:
        journal.record(job, sync=False)
    journal.record(jobs[0], sync=False)
    assert journal.recorded == 5
    journal.remove(jobs[1].job_id)
    journal.remove(jobs[1].job_id)
    assert journal.recorded == 4


def test_torn_tail_is_reported_and_cut_before_the_next_record(tmp_path: Path) -> None:
    """A record cut short by a crash is dropped (named in .damaged); later records still load."""
    journal = UploadJournal(tmp_path / "j")
    first = _job(tmp_path / "one", b"1", created=1.0)
    journal.record(first)
    journal.record(_job(tmp_path / "two", b"2" * 500, created=2.0))
    log = tmp_path / "j" / LOG_NAME
    end = RedoLog(log, repair=False).size
    with open(log, "r+b") as f:  # its last 100 bytes never reached the disk
        f.seek(end - 100)
        f.write(bytes(100))
    reopened = UploadJournal(tmp_path / "j")
    assert [j.job_id for j in reopened.load()] == [first.job_id]
    assert any(LOG_NAME in name for name in reopened.damaged)
    third = _job(tmp_path / "three", b"3", created=3.0)
    reopened.record(third)
    assert [j.job_id for j in UploadJournal(tmp_path / "j").load()] == [
        first.job_id,
        third.job_id,
    ]


def test_one_file_records_of_earlier_versions_resume_and_are_removed(tmp_path: Path) -> None:
    """A ``<id>.upload`` file left by an earlier version loads, and goes once its job is done."""
    directory = tmp_path / "j"
    directory.mkdir()
    old = _job(tmp_path / "old")
    (directory / f"{old.job_id}.upload").write_bytes(old.to_bytes())
    journal = UploadJournal(directory)
    assert [j.job_id for j in journal.load()] == [old.job_id]
    journal.remove(old.job_id)
    assert not (directory / f"{old.job_id}.upload").exists()
    assert list(UploadJournal(directory).load()) == []


def test_queue_keeps_no_inline_bytes_in_memory_but_retries_keep_them_journaled(
    tmp_path: Path,
) -> None:
    """Pending jobs in memory hold no file bytes; a failed attempt's rewrite keeps the bytes."""
    staged = tmp_path / "s.staged"
    staged.write_bytes(b"payload")
    attempts: list[Deferred[None]] = []

    async def uploader(job: UploadJob) -> None:
        d: Deferred[None] = Deferred()
        attempts.append(d)
        await d

    clock = Clock()
    queue = UploadQueue(clock, UploadJournal(tmp_path / "j"), uploader)
    queue.startService()
    job = _job(staged, b"payload")
    queue.enqueue(job)
    clock.advance(0)
    assert all(j.data is None for j in queue.pending())
    attempts[0].errback(ConnectionError("grid down"))
    staged.unlink()
    (loaded,) = UploadJournal(tmp_path / "j").load()
    assert (loaded.attempts, loaded.data) == (1, b"payload")


def test_many_live_jobs_do_not_rewrite_the_log_on_every_removal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compaction runs only when finished records dominate (a big backlog is not rewritten
    at each finished job, which made draining it quadratic)."""
    monkeypatch.setattr(intent_log_module, "COMPACT_BYTES", 20_000)
    rewrites: list[int] = []
    original = intent_log_module.RedoLog.rewrite

    def counting(self: intent_log_module.RedoLog, records: list[dict[str, object]]) -> None:
        rewrites.append(len(records))
        original(self, records)

    monkeypatch.setattr(intent_log_module.RedoLog, "rewrite", counting)
    journal = UploadJournal(tmp_path / "j")
    jobs = [_job(tmp_path / f"f{i}", bytes([i]) * 2000, created=float(i)) for i in range(60)]
    for job in jobs:
        journal.record(job)
    for job in jobs:
        journal.remove(job.job_id)
    assert len(rewrites) <= 3
    assert list(UploadJournal(tmp_path / "j").load()) == []
