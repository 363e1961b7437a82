"""The ``gateway`` command: argument parsing and dispatch to the subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from gateway import __version__
from gateway.cli.program import UsageError


def _add_dir(parser: argparse.ArgumentParser, optional: bool = False) -> None:
    if optional:
        parser.add_argument(
            "dir",
            metavar="DIR",
            nargs="?",
            type=Path,
            default=None,
            help="node directory (default: $GATEWAY_DIR or ~/.local/share/gateway)",
        )
    else:
        parser.add_argument("dir", metavar="DIR", type=Path, help="node directory")


def build_parser() -> argparse.ArgumentParser:
    """The full command-line grammar."""
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="SFTP gateway onto an encrypted, erasure-coded storage grid.",
    )
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("create", help="create a gateway node directory")
    _add_dir(p)
    p.add_argument("--host", default="127.0.0.1", help="address SFTP and the status page listen on")
    p.add_argument("--sftp-port", type=int, default=8022, help="SFTP port (default 8022)")
    p.add_argument("--web-port", type=int, default=8023, help="status page port (default 8023)")
    p.add_argument(
        "--storage",
        metavar="NURL",
        action="append",
        default=[],
        help=(
            "a storage server's NURL (repeat for each), or - to read them from stdin, one a"
            " line (keeps them out of ps); none: embedded storage"
        ),
    )
    p.add_argument(
        "--shares",
        metavar="NEEDED/HAPPY/TOTAL",
        help="erasure coding (default 1/1/1 embedded, 3/min(7,servers)/10 on a grid)",
    )
    p.add_argument("--nickname", default="", help="a name shown on the status page")

    p = sub.add_parser("create-storage", help="create a storage node directory")
    _add_dir(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: a free port, kept)")
    p.add_argument(
        "--location",
        metavar="HOST:PORT",
        help="address clients use to reach this server (default HOST:PORT)",
    )
    p.add_argument(
        "--reserved-space",
        metavar="SIZE",
        default="1GiB",
        help="free space always kept (default 1GiB)",
    )
    p.add_argument(
        "--web-port",
        type=int,
        default=0,
        help="status page port on 127.0.0.1 (default: any free port)",
    )
    p.add_argument("--nickname", default="", help="a name shown on status pages")

    p = sub.add_parser("start", help="start a node in the background")
    _add_dir(p, optional=True)
    p.add_argument(
        "--sftp-port",
        type=int,
        default=None,
        help="SFTP port of a gateway node (default 8022; saved in node.cfg)",
    )
    p.add_argument(
        "--web-port",
        type=int,
        default=None,
        help="status page port (default 8023 for a gateway; saved in node.cfg)",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for it to be up")

    p = sub.add_parser("run", help="run a node in the foreground (for systemd)")
    _add_dir(p, optional=True)
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)

    p = sub.add_parser("stop", help="stop a running node gracefully")
    _add_dir(p, optional=True)

    p = sub.add_parser("status", help="say whether a node runs")
    _add_dir(p, optional=True)

    from gateway.cli.account_commands import add_account_parsers

    p = sub.add_parser("account", help="manage a gateway's SFTP accounts")
    add_account_parsers(p.add_subparsers(dest="account_command", metavar="ACTION", required=True))

    from gateway.cli.files import add_file_parsers

    add_file_parsers(sub)

    from gateway.cli.uploads import add_uploads_parser

    add_uploads_parser(sub)

    from gateway.cli.rotate import add_rotate_parser

    add_rotate_parser(sub)
    return parser


def main(
    argv: Sequence[str] | None = None, stdout: IO[str] | None = None, stderr: IO[str] | None = None
) -> int:
    """Run the command line; return the exit code."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    from gateway.cli import commands

    try:
        return commands.dispatch(args, out, err)
    except UsageError as e:
        print(f"gateway {args.command}: {e}", file=err)
        return 2
    except KeyboardInterrupt:
        print("gateway: interrupted", file=err)
        return 130
