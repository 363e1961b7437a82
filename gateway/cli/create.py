"""Creating node directories: ``gateway create``, ``create-storage`` and the default node."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from pathlib import Path

from gateway.config import (
    parse_host,
    parse_location,
    parse_nickname,
    parse_port,
    parse_size,
    render_config,
)
from gateway.listening import hostport
from gateway.nodedir import (
    CONVERGENCE_FILE,
    HOST_KEY_FILE,
    LEASE_SECRET_FILE,
    NURL_FILE,
    SERVERS_FILE,
    SWISSNUM_FILE,
    NodeDir,
    make_dir,
    make_node_dir,
    write_atomic,
    write_private,
)
from storage import base32

GRID_DEFAULT_NEEDED = 3
GRID_DEFAULT_HAPPY = 7
GRID_DEFAULT_TOTAL = 10


def parse_shares(text: str) -> tuple[int, int, int]:
    """Parse ``NEEDED/HAPPY/TOTAL`` and check 1 ≤ needed ≤ happy ≤ total ≤ 256."""
    parts = text.split("/")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--shares expects NEEDED/HAPPY/TOTAL such as 3/7/10, got {text!r}")
    needed, happy, total = (int(p) for p in parts)
    if not 1 <= needed <= happy <= total <= 256:
        raise ValueError(f"--shares {text}: need 1 <= needed <= happy <= total <= 256")
    return needed, happy, total


def default_shares(server_count: int) -> tuple[int, int, int]:
    """Encoding for a grid of ``server_count`` servers when --shares is not given."""
    if server_count == 0:
        return 1, 1, 1
    happy = min(GRID_DEFAULT_HAPPY, server_count)
    return min(GRID_DEFAULT_NEEDED, happy), happy, GRID_DEFAULT_TOTAL


def _secret_text() -> bytes:
    return base32.b2a(secrets.token_bytes(32)).encode() + b"\n"


def _checked(parse: object, value: str, option: str) -> None:
    try:
        parse(value)  # type: ignore[operator]
    except ValueError as e:
        raise ValueError(f"{option}: {e}") from None


def create_gateway(
    root: Path,
    *,
    host: str = "127.0.0.1",
    sftp_port: int = 8022,
    web_port: int = 8023,
    storage: Sequence[str] = (),
    shares: str | None = None,
    nickname: str = "",
) -> list[str]:
    """Create a gateway node directory; return lines to show the user."""
    from storage.wire import parse_nurl

    _checked(parse_host, host, "--host")
    _checked(parse_port, str(sftp_port), "--sftp-port")
    _checked(parse_port, str(web_port), "--web-port")
    _checked(parse_nickname, nickname, "--nickname")
    for nurl in storage:
        try:
            parse_nurl(nurl)
        except ValueError:
            raise ValueError(
                "--storage: not a valid NURL (pb://HASH@HOST:PORT/SWISSNUM#v=1)"
            ) from None
    needed, happy, total = parse_shares(shares) if shares else default_shares(len(storage))
    if storage and happy > len(set(storage)):
        raise ValueError(
            f"--shares: happy ({happy}) needs at least that many storage servers, "
            f"got {len(set(storage))}"
        )

    nd = make_node_dir(root, private_dirs=("staging", "state"))
    settings = {
        ("node", "nickname"): nickname,
        ("sftp", "host"): host,
        ("sftp", "port"): str(sftp_port),
        ("web", "host"): host,
        ("web", "port"): str(web_port),
        ("grid", "embedded"): "false" if storage else "true",
        ("grid", "shares.needed"): str(needed),
        ("grid", "shares.happy"): str(happy),
        ("grid", "shares.total"): str(total),
    }
    if not storage:
        make_dir(nd.storage, 0o700)
    write_private(nd.secret(CONVERGENCE_FILE), _secret_text())
    write_private(nd.secret(LEASE_SECRET_FILE), _secret_text())
    write_private(nd.secret(SERVERS_FILE), "".join(f"{n}\n" for n in storage).encode())
    from gateway.sftp.hostkey import generate_host_key

    generate_host_key(nd.secret(HOST_KEY_FILE))
    write_atomic(nd.config, render_config("gateway", settings).encode("utf-8"), 0o644)
    grid = f"{len(storage)} storage servers" if storage else "embedded storage"
    return [f"Created gateway node in {root} ({grid}, shares {needed}/{happy}/{total})."]


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def create_storage(
    root: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    location: str | None = None,
    reserved_space: str = "1GiB",
    web_port: int = 0,
    nickname: str = "",
) -> list[str]:
    """Create a storage node directory with TLS key and swissnum; return lines with the NURL."""
    from storage.tls import create_tls_credentials
    from storage.wire import format_nurl, new_swissnum

    _checked(parse_host, host, "--host")
    _checked(parse_size, reserved_space, "--reserved-space")
    _checked(parse_nickname, nickname, "--nickname")
    _checked(parse_port, str(web_port), "--web-port")
    if port is not None:
        _checked(parse_port, str(port), "--port")
    if location is None and host in ("0.0.0.0", "::"):
        raise ValueError("--location HOST:PORT is needed when listening on all addresses")
    if port is None or port == 0:
        port = _free_port(host)
    location = location or hostport(host, port)
    _checked(parse_location, location, "--location")

    nd = make_node_dir(root)
    make_dir(nd.storage, 0o700)
    credentials = create_tls_credentials(nd.private)
    swissnum = new_swissnum()
    write_private(nd.secret(SWISSNUM_FILE), swissnum + b"\n")
    location_host, location_port = location.rsplit(":", 1)
    nurl = format_nurl(
        credentials.spki_hash, location_host.strip("[]"), int(location_port), swissnum
    )
    write_private(nd.secret(NURL_FILE), nurl.encode() + b"\n")
    settings = {
        ("node", "nickname"): nickname,
        ("storage", "host"): host,
        ("storage", "port"): str(port),
        ("storage", "location"): location,
        ("storage", "reserved_space"): reserved_space,
        ("web", "port"): str(web_port),
    }
    write_atomic(nd.config, render_config("storage", settings).encode("utf-8"), 0o644)
    return [
        f"Created storage node in {root}, listening on {hostport(host, port)}.",
        f"Its NURL (also in {nd.secret(NURL_FILE)}; keep it secret, give it to gateways):",
        nurl,
    ]


def login_name() -> str:
    """The name of the user running us, as an account name.

    ``$USER``, else ``$LOGNAME``, else the password database's name; ``user``
    when none of them is a valid account name.
    """
    from gateway.accounts import InvalidAccountName, validate_name

    name = os.environ.get("USER") or os.environ.get("LOGNAME")
    if not name:
        try:
            import pwd

            name = pwd.getpwuid(os.getuid()).pw_name
        except (KeyError, ImportError):
            name = "user"
    try:
        return validate_name(name)
    except InvalidAccountName:
        return "user"


def create_default_gateway(root: Path, *, sftp_port: int = 8022, web_port: int = 8023) -> list[str]:
    """Create the default node (embedded grid) with one SFTP account; return lines to show once.

    The account is named after the user running the command, so the printed
    ``sftp -P 8022 NAME@127.0.0.1`` logs in as typed.
    """
    lines = create_gateway(root, sftp_port=sftp_port, web_port=web_port)
    from gateway.cli.accounts import create_first_account

    lines += create_first_account(NodeDir(root), login_name())
    return lines
