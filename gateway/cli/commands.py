"""The node lifecycle subcommands: create, create-storage, start, run, stop, status.

Every failure prints one line, ``gateway: <what went wrong>``, on stderr and
returns a non-zero exit code: 1 for an error, 2 for a usage error, 3 for
``stop``, ``status`` or a file command (``gateway.cli.files``) on a node that
is not running.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

from gateway.cli.accounts import cmd_account
from gateway.cli.create import create_default_gateway, create_gateway, create_storage
from gateway.cli.files import COMMANDS as FILE_COMMANDS
from gateway.cli.files import cmd_files
from gateway.cli.program import UsageError, program_name
from gateway.cli.rotate import cmd_rotate
from gateway.cli.uploads import cmd_uploads
from gateway.config import ConfigError, load_config, parse_port, update_config
from gateway.nodedir import NodeDir, NodeDirExists, default_node_dir
from gateway.pidfile import AlreadyRunning, running_pid
from gateway.runner import (
    LaunchError,
    NotRunning,
    announced,
    launch_node,
    run_node,
    stop_node,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_RUNNING = 3


def dispatch(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run the parsed subcommand."""
    handler = {
        "create": cmd_create,
        "create-storage": cmd_create_storage,
        "start": cmd_start,
        "run": cmd_run,
        "stop": cmd_stop,
        "status": cmd_status,
        "account": cmd_account,
        **{name: cmd_files for name in FILE_COMMANDS},
        "uploads": cmd_uploads,
        "rotate": cmd_rotate,
    }[args.command]
    return handler(args, out, err)


def _fail(err: IO[str], message: str, code: int = EXIT_ERROR) -> int:
    print(f"gateway: {message}", file=err, flush=True)
    return code


def _created(err: IO[str], out: IO[str], create: Callable[[], list[str]]) -> int:
    """Run a create function: usage errors exit 2, a refused directory exits 1."""
    try:
        lines = create()
    except NodeDirExists as e:
        return _fail(err, str(e))
    except ValueError as e:
        raise UsageError(str(e)) from None
    for line in lines:
        print(line, file=out)
    return EXIT_OK


def cmd_create(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``gateway create DIR``."""
    return _created(
        err,
        out,
        lambda: create_gateway(
            args.dir,
            host=args.host,
            sftp_port=args.sftp_port,
            web_port=args.web_port,
            storage=_nurls(args.storage),
            shares=args.shares,
            nickname=args.nickname,
        ),
    )


def _nurls(given: list[str]) -> list[str]:
    """``--storage`` values, ``-`` replaced by the NURLs on stdin (one a line; blank lines
    and ``#`` comments skipped), so that no NURL is on the command line for ps to show."""
    nurls: list[str] = []
    for value in given:
        if value != "-":
            nurls.append(value)
            continue
        read = [line.strip() for line in sys.stdin]
        read = [line for line in read if line and not line.startswith("#")]
        if not read:  # not an embedded gateway by accident
            raise ValueError("--storage -: no NURL on stdin (give one a line)")
        nurls += read
    return nurls


def cmd_create_storage(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``gateway create-storage DIR``."""
    return _created(
        err,
        out,
        lambda: create_storage(
            args.dir,
            host=args.host,
            port=args.port,
            location=args.location,
            reserved_space=args.reserved_space,
            web_port=args.web_port,
            nickname=args.nickname,
        ),
    )


def _node_dir(args: argparse.Namespace) -> Path:
    return args.dir if args.dir is not None else default_node_dir()


def _check_node_dir(node_dir: Path) -> None:
    """Refuse early, with a helpful line, a directory that is not a node."""
    if not NodeDir(node_dir).config.exists():
        raise ConfigError(
            NodeDir(node_dir).config,
            None,
            None,
            "missing: not a node directory (make one with 'gateway create DIR')",
        )


def _stop_command(args: argparse.Namespace, node_dir: Path) -> str:
    """The command that stops this node, as the user can type it."""
    program = program_name()
    if args.dir is None and "GATEWAY_DIR" not in os.environ:
        return f"{program} stop"
    return f"{program} stop {shlex.quote(str(node_dir))}"


def _port_settings(args: argparse.Namespace, kind: str) -> dict[tuple[str, str], str]:
    """The ports given on the command line, as node.cfg settings (validated)."""
    settings: dict[tuple[str, str], str] = {}
    if args.sftp_port is not None:
        if kind != "gateway":
            raise UsageError("--sftp-port: a storage node has no SFTP server")
        settings[("sftp", "port")] = str(parse_port_option(args.sftp_port, "--sftp-port"))
    if args.web_port is not None:
        settings[("web", "port")] = str(parse_port_option(args.web_port, "--web-port"))
    return settings


def parse_port_option(port: int, option: str) -> int:
    """A port number from the command line, or a UsageError naming the option."""
    try:
        return parse_port(str(port))
    except ValueError as e:
        raise UsageError(f"{option}: {e}") from None


def cmd_start(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``gateway start [DIR]``: start in the background, return once listening.

    With no DIR, the default node is created first when it does not exist yet.
    A node that already runs is not an error: start says so and repeats what
    the node listens on.
    """
    node_dir = _node_dir(args)
    nd = NodeDir(node_dir)
    if args.dir is None and not nd.config.exists():
        sftp_port = parse_port_option(args.sftp_port, "--sftp-port") if args.sftp_port else 8022
        web_port = parse_port_option(args.web_port, "--web-port") if args.web_port else 8023
        for line in create_default_gateway(node_dir, sftp_port=sftp_port, web_port=web_port):
            print(line, file=out, flush=True)
    try:
        _check_node_dir(node_dir)
        config = load_config(nd.config)
        settings = _port_settings(args, config.kind)
        changed = {k: v for k, v in settings.items() if str(config.get(*k)) != v}
        pid = running_pid(nd.pid_file)
        if pid is not None:
            if changed:
                return _fail(
                    err,
                    f"node in {node_dir} is already running (pid {pid}); "
                    f"stop it before changing its ports: {_stop_command(args, node_dir)}",
                )
            print(f"Node in {node_dir} is already running (pid {pid}).", file=out)
            lines = announced(node_dir)
        else:
            if changed:
                update_config(nd.config, changed)
                for (section, key), value in changed.items():
                    print(f"Set [{section}] {key} = {value} in {nd.config}.", file=out)
            lines = launch_node(node_dir, timeout=args.timeout)
            print(f"Node in {node_dir} started.", file=out)
    except ConfigError as e:
        return _fail(err, str(e))
    except AlreadyRunning as e:
        return _fail(err, f"node in {node_dir} is {e}")
    except LaunchError as e:
        return _fail(err, f"could not start node in {node_dir}: {e}")
    for line in lines:
        print(line, file=out)
    print(f"Stop it with: {_stop_command(args, node_dir)}", file=out)
    return EXIT_OK


def cmd_run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``gateway run [DIR]``: run in the foreground until SIGTERM."""
    from gateway.node import build_node

    node_dir = _node_dir(args)
    return run_node(node_dir, build_node, ready_fd=args.ready_fd, out=out, err=err)


def cmd_stop(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``gateway stop [DIR]``: SIGTERM, then wait until the node has finished its work."""
    node_dir = _node_dir(args)
    try:
        _check_node_dir(node_dir)
        config = load_config(NodeDir(node_dir).config)
    except ConfigError as e:
        return _fail(err, str(e))
    grace = config.get("uploads", "grace_period") if config.kind == "gateway" else 0.0
    try:
        pid = stop_node(node_dir, timeout=grace + 30.0)
    except NotRunning as e:
        return _fail(err, str(e), EXIT_NOT_RUNNING)
    except TimeoutError as e:
        return _fail(err, str(e))
    print(f"Node in {node_dir} (pid {pid}) stopped.", file=out)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``gateway status [DIR]``: whether the node runs (exit 0) or not (exit 3)."""
    node_dir = _node_dir(args)
    try:
        _check_node_dir(node_dir)
    except ConfigError as e:
        return _fail(err, str(e))
    pid = running_pid(NodeDir(node_dir).pid_file)
    if pid is None:
        print(f"Node in {node_dir} is not running.", file=out)
        return EXIT_NOT_RUNNING
    print(f"Node in {node_dir} is running (pid {pid}).", file=out)
    return EXIT_OK
