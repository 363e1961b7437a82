"""``gateway rotate host-key|swissnum|server``: replace a node's secrets.

- ``rotate host-key DIR`` gives a gateway a new SSH host key and prints its
  fingerprint (clients will see a changed key);
- ``rotate swissnum DIR`` gives a storage node a new swissnum, hence a new
  NURL (the old one is refused once the node restarts);
- ``rotate server DIR NURL`` tells a gateway a storage server's new NURL: it
  replaces the line of ``private/servers`` with the same TLS key pin.

A running node keeps what it loaded until it restarts; each command says so.
Account passwords are changed with ``gateway account passwd``. The procedures
are in docs/operations.rst ("Rotating secrets").
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import IO

from gateway.cli.program import UsageError, program_name
from gateway.config import ConfigError, NodeConfig, load_config
from gateway.nodedir import (
    HOST_KEY_FILE,
    NURL_FILE,
    SERVERS_FILE,
    SWISSNUM_FILE,
    NodeDir,
    write_private,
)
from gateway.pidfile import running_pid

ACTIONS = ("host-key", "swissnum", "server")


class RotateError(Exception):
    """A rotation could not be done; the message says why (never a secret)."""


def add_rotate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``gateway rotate ACTION DIR ...``."""
    p = sub.add_parser("rotate", help="replace a host key, a swissnum or a server's NURL")
    actions = p.add_subparsers(dest="rotate_command", metavar="ACTION", required=True)
    a = actions.add_parser("host-key", help="give a gateway a new SSH host key")
    a.add_argument("dir", metavar="DIR", type=Path, help="gateway node directory")
    a = actions.add_parser("swissnum", help="give a storage node a new swissnum (a new NURL)")
    a.add_argument("dir", metavar="DIR", type=Path, help="storage node directory")
    a = actions.add_parser("server", help="tell a gateway a storage server's new NURL")
    a.add_argument("dir", metavar="DIR", type=Path, help="gateway node directory")
    a.add_argument(
        "nurl",
        metavar="NURL",
        help="the server's new NURL, or - to read it from stdin (keeps it out of ps)",
    )


def cmd_rotate(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run ``gateway rotate ACTION``."""
    try:
        if args.rotate_command == "host-key":
            lines = rotate_host_key(args.dir)
        elif args.rotate_command == "swissnum":
            lines = rotate_swissnum(args.dir)
        else:
            nurl = sys.stdin.readline().strip() if args.nurl == "-" else args.nurl
            lines = rotate_server(args.dir, nurl)
    except (RotateError, ConfigError) as e:
        print(f"gateway: {e}", file=err, flush=True)
        return 1
    for line in lines:
        print(line, file=out)
    return 0


def _config(nd: NodeDir, kind: str, action: str) -> NodeConfig:
    if not nd.config.exists():
        raise RotateError(f"{nd.root} is not a node directory (no {nd.config.name})")
    config = load_config(nd.config)
    if config.kind != kind:
        raise RotateError(f"{nd.root} is a {config.kind} node: 'rotate {action}' needs a {kind}")
    return config


def _restart_hint(nd: NodeDir, running: str, stopped: str) -> str:
    """What to do so that the node uses the new secret: ``running`` and ``stopped`` say what
    the node does meanwhile, if it runs, and once it starts, if not."""
    quoted = shlex.quote(str(nd.root))
    if running_pid(nd.pid_file) is None:
        return f"The node is not running: it {stopped} when it starts."
    program = program_name()
    return (
        f"The running node {running} until it restarts: "
        f"{program} stop {quoted} && {program} start {quoted}"
    )


def rotate_host_key(root: Path) -> list[str]:
    """Replace a gateway's SSH host key; return lines naming the old and new fingerprints."""
    from twisted.conch.ssh.keys import BadKeyError, Key

    from gateway.sftp.hostkey import HostKeyError, fingerprint, replace_host_key

    nd = NodeDir(root)
    config = _config(nd, "gateway", "host-key")
    path = nd.secret(HOST_KEY_FILE)
    if not path.exists():
        raise RotateError(f"no host key at {path}")
    old = ""
    try:
        old = fingerprint(Key.fromString(path.with_name(path.name + ".pub").read_bytes()))
    except (OSError, BadKeyError, ValueError):
        pass  # the .pub file is informational; the new key is made all the same
    passphrase = None
    passphrase_file: str = config.get("sftp", "host_key_passphrase_file")
    if passphrase_file:
        try:
            passphrase = (nd.root / passphrase_file).read_bytes().strip()
        except OSError as e:
            raise RotateError(
                f"cannot read host key passphrase file {nd.root / passphrase_file}: {e.strerror}"
            ) from None
    try:
        new = fingerprint(replace_host_key(path, passphrase=passphrase))
    except HostKeyError as e:
        raise RotateError(str(e)) from None
    host: str = config.get("sftp", "host")
    port: int = config.get("sftp", "port")
    shown = "HOST" if host in ("0.0.0.0", "::") else host
    known = shlex.quote(shown if port == 22 else f"[{shown}]:{port or 'PORT'}")
    was = f" (was {old})" if old else ""
    return [
        f"New SSH host key for {nd.root}: ED25519 {new}{was}.",
        "Clients that knew the old key will refuse the new one (REMOTE HOST IDENTIFICATION "
        f"HAS CHANGED) until they forget it: ssh-keygen -R {known}",
        _restart_hint(nd, "still presents the old key", "presents the new key"),
    ]


def rotate_swissnum(root: Path) -> list[str]:
    """Give a storage node a new swissnum; return lines with its new NURL."""
    from storage.tls import read_tls_credentials
    from storage.wire import format_nurl, new_swissnum

    nd = NodeDir(root)
    config = _config(nd, "storage", "swissnum")
    try:
        credentials = read_tls_credentials(nd.private)
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) else str(e)
        raise RotateError(f"cannot read the node's TLS certificate: {reason}") from None
    swissnum = new_swissnum()
    location: str = config.get("storage", "location")
    host, port = location.rsplit(":", 1)
    nurl = format_nurl(credentials.spki_hash, host.strip("[]"), int(port), swissnum)
    write_private(nd.secret(SWISSNUM_FILE), swissnum + b"\n")
    write_private(nd.secret(NURL_FILE), nurl.encode() + b"\n")
    quoted = shlex.quote(str(nd.root))
    return [
        f"New swissnum for the storage node in {nd.root}. Its NURL is now "
        f"(also in {nd.secret(NURL_FILE)}; keep it secret):",
        nurl,
        _restart_hint(nd, "still accepts the old NURL, and only it,", "accepts only the new NURL"),
        "Then give the new NURL to every gateway that uses this server: "
        f"{program_name()} rotate server GATEWAY_DIR - < {quoted}/private/nurl",
    ]


def rotate_server(root: Path, text: str) -> list[str]:
    """Replace, in a gateway's server list, the NURL of the server with ``text``'s key pin."""
    from storage.wire import InvalidNurl, parse_nurl

    nd = NodeDir(root)
    _config(nd, "gateway", "server")
    try:
        new = parse_nurl(text)
    except InvalidNurl as e:
        raise UsageError(f"NURL: {e}") from None
    path = nd.secret(SERVERS_FILE)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    except OSError as e:
        raise RotateError(f"cannot read {path}: {e.strerror}") from None
    found = False
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            old = parse_nurl(stripped)
        except InvalidNurl:
            continue  # the node names the bad line at start
        if old.spki_hash == new.spki_hash:
            lines[number] = new.to_text()
            found = True
    if not found:
        raise RotateError(
            f"no server with key {new.spki_hash} in {path}: a NURL with another key is "
            "another server (add it to that file to use it)"
        )
    write_private(path, "".join(f"{line}\n" for line in lines).encode("utf-8"))
    return [
        f"Storage server {new.spki_hash} ({new.host}:{new.port}) has its new NURL in {path}.",
        _restart_hint(nd, "still uses the old NURL", "uses the new NURL"),
    ]
