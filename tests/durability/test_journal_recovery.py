"""A journal record left by a crash after its upload finished does not stop the next start."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.uploads.journal import UploadJob, UploadJournal, new_job_id
from tests.nodes import NodeReaper, gateway
from tests.sftp.gateway_node import restart_gateway, start_gateway


def test_record_of_a_finished_upload_is_dropped_at_start(
    tmp_path: Path, reaper: NodeReaper
) -> None:
    """A record whose staged file is gone (killed between discard and record removal) means
    the upload had finished: the node starts, serves, and forgets the record."""
    gw = start_gateway(tmp_path, reaper)
    transport, sftp = gw.sftp()
    try:
        with sftp.open("/done.txt", "wb") as f:
            f.write(b"linked before the crash")
    finally:
        transport.close()
    assert gateway("stop", gw.node_dir).code == 0
    root = json.loads((gw.node_dir / "private" / "accounts.json").read_text())
    journal = UploadJournal(gw.node_dir / "state" / "uploads")
    stale = UploadJob(
        job_id=new_job_id(),
        staged=str(gw.node_dir / "staging" / "gone.staged"),
        size=23,
        display="/done.txt",
        target={
            "root": root["accounts"]["alice"]["root_cap"],
            "path": ["done.txt"],
            "mode": None,
            "mtime": None,
            "ctime": 1.0,
            "generation": 1,
        },
        created=1.0,
    )
    journal.record(stale)
    again = restart_gateway(gw.node_dir)
    transport, sftp = again.sftp()
    try:
        with sftp.open("/done.txt", "rb") as f:
            assert f.read() == b"linked before the crash"
    finally:
        transport.close()
    assert gateway("stop", gw.node_dir).code == 0
    assert list(UploadJournal(gw.node_dir / "state" / "uploads").load()) == []
