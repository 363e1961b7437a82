"""What the status page and ``gateway uploads`` show of the upload queue: a pending job's
figures and a recently finished upload's."""

from __future__ import annotations

from typing import Any

from attrs import frozen

from gateway.metrics import Progress
from gateway.uploads.journal import UploadJob


@frozen
class Finished:
    """A recently finished upload, for the status page."""

    display: str
    size: int
    attempts: int
    finished_at: float


def pending_job(
    job: UploadJob, uploading: bool, next_retry: float | None, progress: Progress | None
) -> dict[str, Any]:
    """A pending job: its file, size, attempts, retry, last error and progress."""
    return {
        "file": job.display,
        "size": job.size,
        # A change to a file in the grid stores these bytes only (None: all).
        "changed": job.changed,
        "attempts": job.attempts,
        "uploading": uploading,
        "next_retry": next_retry,
        "last_error": job.last_error,
        "progress": None if progress is None else progress.to_json(),
    }


def finished_upload(finished: Finished) -> dict[str, Any]:
    """A recently finished upload."""
    return {
        "file": finished.display,
        "size": finished.size,
        "attempts": finished.attempts,
        "finished_at": finished.finished_at,
    }
