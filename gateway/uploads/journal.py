"""The upload journal: a durable record per acknowledged upload not yet in the grid.

A record is written (temp file, fsync, rename, directory fsync) before the
client is told its file is safe, and removed only after the upload has been
published. After a crash or a restart every record left is an upload to
resume. Records are CBOR, one file each, named by the job id, in a 0700
directory: they hold the target's capability, which is a secret.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
from attrs import evolve, field, frozen

from gateway.nodedir import fsync_dir, write_atomic

RECORD_SUFFIX = ".upload"


@frozen
class UploadJob:
    """One pending upload: the staged bytes, where they go, and how the tries went."""

    job_id: str
    staged: str
    size: int
    display: str
    target: dict[str, Any] = field(repr=False)
    created: float = 0.0
    attempts: int = 0
    last_error: str | None = None

    def failed(self, error: str) -> UploadJob:
        """This job after one more failed attempt."""
        return evolve(self, attempts=self.attempts + 1, last_error=error)

    def to_bytes(self) -> bytes:
        """The record's encoding."""
        return cbor2.dumps(
            {
                "v": 1,
                "id": self.job_id,
                "staged": self.staged,
                "size": self.size,
                "display": self.display,
                "target": self.target,
                "created": self.created,
                "attempts": self.attempts,
                "last_error": self.last_error,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> UploadJob:
        """Decode a record; raises ValueError when it is not one."""
        try:
            record = cbor2.loads(data)
            if not isinstance(record, dict) or record.get("v") != 1:
                raise ValueError("unknown record version")
            return cls(
                job_id=str(record["id"]),
                staged=str(record["staged"]),
                size=int(record["size"]),
                display=str(record["display"]),
                target=dict(record["target"]),
                created=float(record["created"]),
                attempts=int(record["attempts"]),
                last_error=record["last_error"],
            )
        except (KeyError, TypeError, cbor2.CBORDecodeError) as e:
            raise ValueError(f"damaged upload record: {type(e).__name__}") from None


def new_job_id() -> str:
    """A fresh, unguessable job id (also used in file names)."""
    return secrets.token_hex(12)


class UploadJournal:
    """The directory of upload records."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.damaged: list[str] = []

    def _path(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise ValueError("bad job id")
        return self.directory / f"{job_id}{RECORD_SUFFIX}"

    def record(self, job: UploadJob) -> None:
        """Write (or rewrite) a job's record durably."""
        write_atomic(self._path(job.job_id), job.to_bytes(), 0o600)

    def remove(self, job_id: str) -> None:
        """Forget a job whose upload is published (durably)."""
        try:
            os.unlink(self._path(job_id))
        except FileNotFoundError:
            return
        fsync_dir(self.directory)

    def load(self) -> Iterator[UploadJob]:
        """Every job recorded, oldest first; damaged records are set aside and named in .damaged."""
        jobs = []
        for path in self.directory.glob(f"*{RECORD_SUFFIX}"):
            try:
                jobs.append(UploadJob.from_bytes(path.read_bytes()))
            except (ValueError, OSError):
                self.damaged.append(path.name)
                path.rename(path.with_suffix(".damaged"))
        jobs.sort(key=lambda job: (job.created, job.job_id))
        return iter(jobs)
