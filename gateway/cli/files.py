"""The file subcommands, run against a running gateway: put, get, ls, mkdir, rm, mv, check.

They talk to the node through its control socket (``gateway.control``), so the
node's storage is never opened twice and SFTP sessions see every change at
once. Arguments naming files are capabilities (``GG:…``), ``ACCOUNT:/path`` or
a path under the default account (``--account``, else the only one). Failures
print one line, ``gateway: …``; exit codes are those of ``docs/cli.rst``.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, BinaryIO

from gateway.cli.program import UsageError
from gateway.config import ConfigError, load_config
from gateway.control.client import ControlClient, ControlError, NodeNotRunning, is_terminal
from gateway.control.progress import ProgressBar
from gateway.nodedir import NodeDir
from gateway.pidfile import running_pid

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_RUNNING = 3

COMMANDS = ("put", "get", "ls", "mkdir", "rm", "mv", "check")


class _IntermixedParser(argparse.ArgumentParser):
    """A subcommand parser that accepts options between positionals (``ls DIR -l PATH``).

    Plain argparse gives an optional positional its (empty) value as soon as it
    sees ``DIR``, so a ``PATH`` after an option would be refused.
    """

    _intermixing = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._intermixing:  # parse_known_intermixed_args calls back in here
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def add_file_parsers(sub: Any) -> None:
    """Add the file subcommands to the ``gateway`` parser's subparsers."""

    def command(name: str, help: str) -> argparse.ArgumentParser:
        default_class = sub._parser_class
        sub._parser_class = _IntermixedParser
        try:
            p: argparse.ArgumentParser = sub.add_parser(name, help=help)
        finally:
            sub._parser_class = default_class
        p.add_argument("dir", metavar="DIR", type=Path, help="a running gateway's node directory")
        p.add_argument(
            "--account",
            metavar="NAME",
            help="the account whose root plain paths are under (default: the only account)",
        )
        return p

    p = command("put", "upload a file (prints its capability when no TARGET is given)")
    p.add_argument("local", metavar="LOCALFILE", help="the file to upload ('-': standard input)")
    p.add_argument("target", metavar="TARGET", nargs="?", help="ACCOUNT:/path, path or dircap")
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="return once the file is staged on the gateway, before it is in the grid",
    )

    p = command("get", "download a file")
    p.add_argument("source", metavar="SOURCE", help="a capability, ACCOUNT:/path or path")
    p.add_argument(
        "local", metavar="LOCALFILE", nargs="?", default="-", help="where to write ('-': stdout)"
    )

    p = command("ls", "list a directory")
    p.add_argument("path", metavar="PATH", nargs="?", help="directory (default: the account root)")
    p.add_argument("-l", dest="long", action="store_true", help="kind, mode, size and time too")
    p.add_argument("--caps", action="store_true", help="show each entry's read capability")
    p.add_argument("--json", action="store_true", help="print the listing as JSON")

    p = command("mkdir", "create a directory (prints its capability when no PATH is given)")
    p.add_argument("path", metavar="PATH", nargs="?", help="where to create it")

    p = command("rm", "remove a file or an empty directory")
    p.add_argument("path", metavar="PATH", help="what to remove")
    p.add_argument("-r", "--recursive", action="store_true", help="remove a directory tree")

    p = command("mv", "move or rename within one account's tree")
    p.add_argument("source", metavar="FROM")
    p.add_argument("dest", metavar="TO", help="new name, or an existing directory to move into")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing file")

    p = command("check", "check the health of a file or directory on the grid")
    p.add_argument("target", metavar="TARGET", help="a capability, ACCOUNT:/path or path")
    p.add_argument("--verify", action="store_true", help="download and hash every share")
    p.add_argument("--repair", action="store_true", help="re-create missing or corrupt shares")
    p.add_argument("--deep", action="store_true", help="check everything under a directory")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def _fail(err: IO[str], message: str, code: int = EXIT_ERROR) -> int:
    print(f"gateway: {message}", file=err, flush=True)
    return code


def cmd_files(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run one file subcommand against the node in ``args.dir``."""
    node_dir: Path = args.dir
    nd = NodeDir(node_dir)
    try:
        if not nd.config.exists():
            raise ConfigError(
                nd.config,
                None,
                None,
                "missing: not a node directory (make one with 'gateway create DIR')",
            )
        if load_config(nd.config).kind != "gateway":
            return _fail(err, f"{node_dir} is a storage node; file commands need a gateway node")
    except ConfigError as e:
        return _fail(err, str(e))
    not_running = f"node in {node_dir} is not running (start it with 'gateway start {node_dir}')"
    if running_pid(nd.pid_file) is None:
        return _fail(err, not_running, EXIT_NOT_RUNNING)
    client = ControlClient(node_dir)
    handler = {
        "put": _put,
        "get": _get,
        "ls": _ls,
        "mkdir": _mkdir,
        "rm": _rm,
        "mv": _mv,
        "check": _check,
    }[args.command]
    try:
        return handler(client, args, out, err)
    except NodeNotRunning:
        return _fail(err, not_running, EXIT_NOT_RUNNING)
    except ControlError as e:
        if e.kind == "bad-request":
            raise UsageError(str(e)) from None
        return _fail(err, str(e))
    except OSError as e:
        return _fail(err, f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}")


def _bytes_out(out: IO[str]) -> BinaryIO:
    buffer = getattr(out, "buffer", None)
    return buffer if buffer is not None else sys.stdout.buffer


def _put(client: ControlClient, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if args.local == "-":
        source: BinaryIO = sys.stdin.buffer
        size: int | None = None
        name = None
    else:
        source = open(args.local, "rb")
        size = os.fstat(source.fileno()).st_size
        name = os.path.basename(args.local.rstrip("/")) or None
    bar = ProgressBar(err, is_terminal(err))
    bar.update(0, size)
    try:
        result = client.put(
            source,
            size,
            bar.advance,
            target=args.target,
            account=args.account,
            name=name,
            wait=not args.no_wait,
        )
    finally:
        bar.finish()
        if source is not sys.stdin.buffer:
            source.close()
    if "cap" in result:
        print(result["cap"], file=out)
    return EXIT_OK


def _get(client: ControlClient, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    bar = ProgressBar(err, is_terminal(err))
    if args.local == "-":
        out.flush()
        sink = _bytes_out(out)
        try:
            client.get(
                sink,
                lambda n: bar.update(0, n),
                bar.update,
                target=args.source,
                account=args.account,
            )
        finally:
            bar.finish()
        sink.flush()
        return EXIT_OK
    local = Path(args.local)
    if local.is_dir():
        return _fail(err, f"{local} is a directory; name the file to write")
    # Written beside the destination and renamed at the end: a failed get leaves nothing behind.
    fd, tmp = tempfile.mkstemp(
        dir=local.parent if str(local.parent) else ".", prefix=f".{local.name}."
    )
    try:
        with os.fdopen(fd, "wb") as sink:
            client.get(
                sink,
                lambda n: bar.update(0, n),
                bar.update,
                target=args.source,
                account=args.account,
            )
        os.replace(tmp, local)
    except BaseException:
        os.unlink(tmp)
        raise
    finally:
        bar.finish()
    return EXIT_OK


def _ls(client: ControlClient, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    result = client.call("ls", target=args.path, account=args.account, caps=args.caps)
    if args.json:
        print(json.dumps(result, indent=1), file=out)
        return EXIT_OK
    for entry in result["entries"]:
        line = entry["name"] or args.path
        if args.long:
            line = f"{_long_prefix(entry)} {line}"
        if args.caps:
            line = f"{line}  {entry.get('cap') or '-'}"
        print(line, file=out)
    return EXIT_OK


def _long_prefix(entry: dict[str, Any]) -> str:
    kind_bits = {"dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}.get(entry["kind"], stat.S_IFREG)
    mode = stat.filemode(kind_bits | (entry.get("mode") or 0))
    size = entry.get("size")
    mtime = entry.get("mtime")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime)) if mtime else "-" * 16
    return f"{mode} {size if size is not None else '?':>12} {when}"


def _mkdir(client: ControlClient, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    result = client.call("mkdir", target=args.path, account=args.account)
    if "cap" in result:
        print(result["cap"], file=out)
    return EXIT_OK


def _rm(client: ControlClient, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    client.call("rm", target=args.path, account=args.account, recursive=args.recursive)
    return EXIT_OK


def _mv(client: ControlClient, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    client.call("mv", source=args.source, dest=args.dest, account=args.account, force=args.force)
    return EXIT_OK


def _check(client: ControlClient, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    terminal = is_terminal(err)
    bar = ProgressBar(err, terminal and args.deep, unit="objects")
    result: dict[str, Any] | None = None
    try:
        for line in client.lines(
            "check",
            target=args.target,
            account=args.account,
            verify=args.verify,
            repair=args.repair,
            deep=args.deep,
            progress=terminal and args.deep,
        ):
            if "progress" in line:
                bar.update(*line["progress"])
            elif "error" in line:
                raise ControlError(line["error"], line["message"])
            elif "result" in line:
                result = line["result"]
    finally:
        bar.finish()
    if result is None:
        return _fail(err, "the node ended the check without a result")
    if args.json:
        print(json.dumps(result, indent=1), file=out)
    else:
        _print_check(result, out)
    unhealthy = _unhealthy(result)
    if unhealthy:
        return _fail(err, f"{unhealthy} object(s) not healthy")
    return EXIT_OK


def _unhealthy(result: dict[str, Any]) -> int:
    if result["deep"]:
        return int(result["unhealthy"])
    final = result["repair"]["after"] if result["repair"] else result["check"]
    return 0 if final["healthy"] else 1


def _print_check(result: dict[str, Any], out: IO[str]) -> None:
    if result["deep"]:
        print(
            f"{result['objects_checked']} object(s) checked: {result['healthy']} healthy,"
            f" {result['unhealthy']} not healthy, {result['unrecoverable']} not recoverable,"
            f" {result['corrupt_shares']} corrupt share(s)",
            file=out,
        )
        if result["repairs_attempted"]:
            print(
                f"repairs: {result['repairs_succeeded']} of {result['repairs_attempted']}"
                " succeeded",
                file=out,
            )
        for entry in result["objects"]:
            final = entry["repair"]["after"] if entry["repair"] else entry["check"]
            if not final["healthy"]:
                print(f"  {final['kind']} {final['storage_index']}: {final['summary']}", file=out)
        for error in result["errors"]:
            print(f"  error: {error}", file=out)
        return
    check = result["check"]
    print(check["summary"], file=out)
    if check["storage_index"]:
        print(f"storage index: {check['storage_index']}", file=out)
    _print_shares(check, out)
    repair = result["repair"]
    if repair is not None:
        placed = len(repair["placed"])
        what = (
            f"{repair['method']}, {placed} share(s) placed"
            if repair["attempted"]
            else "nothing done"
        )
        print(f"repair: {what}; now {repair['after']['summary']}", file=out)
        for failure in repair["failures"]:
            print(f"  repair problem: {failure}", file=out)


def _print_shares(check: dict[str, Any], out: IO[str]) -> None:
    for share in sorted(check["shares"], key=lambda s: (s["share_number"], s["server_id"])):
        reason = f" ({share['reason']})" if share.get("reason") else ""
        print(
            f"  share {share['share_number']}: {share['status']} on"
            f" {share['nickname'] or '-'} [{share['server_id'][:16]}]{reason}",
            file=out,
        )
    for server in check["servers_unreachable"]:
        print(f"  unreachable: {server['nickname'] or '-'} [{server['server_id'][:16]}]", file=out)
