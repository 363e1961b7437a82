"""``gateway uploads DIR``: the running gateway's upload queue, and a nudge to retry it now.

Lists every upload that was acknowledged to a client (its CLOSE answered) but
is not yet in the grid: the file's path, size, attempts so far, when the next
attempt is due and the last error. ``--retry-now`` makes every waiting upload
try again at once (after the operator fixed the grid, say). Talks to the node
through its control socket, like the file commands.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import IO, Any

from gateway.config import ConfigError, load_config
from gateway.control.client import ControlClient, ControlError, NodeNotRunning
from gateway.nodedir import NodeDir
from gateway.pidfile import running_pid

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_RUNNING = 3


def add_uploads_parser(sub: Any) -> None:
    """Add ``uploads`` to the ``gateway`` parser's subparsers."""
    p = sub.add_parser("uploads", help="list uploads not yet in the grid (and retry them now)")
    p.add_argument("dir", metavar="DIR", type=Path, help="a running gateway's node directory")
    p.add_argument(
        "--retry-now", action="store_true", help="retry every waiting upload at once first"
    )
    p.add_argument("--json", action="store_true", help="print the queue as JSON")


def _fail(err: IO[str], message: str, code: int = EXIT_ERROR) -> int:
    print(f"gateway: {message}", file=err, flush=True)
    return code


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _when(job: dict[str, Any], now: float) -> str:
    if job.get("uploading"):
        return "uploading"
    due = job.get("next_retry")
    if due is None:
        return "queued"
    return f"retry in {max(0.0, due - now):.0f}s"


def cmd_uploads(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """List the upload queue of the node in ``args.dir``."""
    node_dir: Path = args.dir
    nd = NodeDir(node_dir)
    try:
        if not nd.config.exists():
            return _fail(err, f"{node_dir} is not a node directory")
        if load_config(nd.config).kind != "gateway":
            return _fail(err, f"{node_dir} is a storage node; it has no upload queue")
    except ConfigError as e:
        return _fail(err, str(e))
    not_running = f"node in {node_dir} is not running (start it with 'gateway start {node_dir}')"
    if running_pid(nd.pid_file) is None:
        return _fail(err, not_running, EXIT_NOT_RUNNING)
    try:
        answer = ControlClient(node_dir).call("uploads", retry_now=bool(args.retry_now))
    except NodeNotRunning:
        return _fail(err, not_running, EXIT_NOT_RUNNING)
    except ControlError as e:
        return _fail(err, str(e))
    if args.json:
        print(json.dumps(answer, indent=1, sort_keys=True), file=out)
        return EXIT_OK
    pending = answer.get("pending", [])
    now = time.time()
    if args.retry_now:
        print(f"Retrying {len(pending)} pending uploads now.", file=out)
    if not pending:
        print("No uploads pending.", file=out)
        return EXIT_OK
    print(f"{len(pending)} uploads pending:", file=out)
    print(f"{'SIZE':>22}  {'ATTEMPTS':>8}  {'NEXT':<14}  FILE  (LAST ERROR)", file=out)
    for job in pending:
        error = f"  ({job['last_error']})" if job.get("last_error") else ""
        size = _size(job["size"])
        if job.get("changed") is not None:  # a change to a file in the grid: what it stores
            size = f"{_size(job['changed'])} of {size}"
        print(
            f"{size:>22}  {job['attempts']:>8}  {_when(job, now):<14}  {job['file']}{error}",
            file=out,
        )
    return EXIT_OK
