"""The storage server's limits on a real storage node process on 127.0.0.1, over real TLS.

One node runs for the module with small limits (4 KiB heads, 64 KiB bodies,
2 s request timeout, 4 connections); every test talks raw HTTP/1.1 over TLS
sockets so that it can misbehave as an attacker would, and checks that a
well-behaved client is served meanwhile. The node is stopped, and killed by
its pid if need be, when the module ends.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from attrs import frozen

from gateway.config import update_config
from storage import wire
from storage.interfaces import TestWriteVectors as TWVectors
from storage.interfaces import WriteVector
from tests.nodes import gateway, node_pid

TIMEOUT = 2.0
LIMITS = {
    ("storage", "max_header_size"): "4KiB",
    ("storage", "max_body_size"): "64KiB",
    ("storage", "request_timeout"): f"{TIMEOUT:g}s",
    ("storage", "max_connections"): "4",
}
SI = "aaaaaaaaaaaaaaaaaaaaaaaaaa"


@frozen
class Node:
    """A running storage node: where it listens and its swissnum."""

    directory: Path
    port: int
    swissnum: bytes

    def auth(self) -> bytes:
        """The right Authorization header line."""
        return b"Authorization: Tahoe-LAFS " + base64.b64encode(self.swissnum) + b"\r\n"

    def storage_files(self) -> dict[str, bytes]:
        """Every file of the share store with its contents."""
        root = self.directory / "storage"
        return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A storage node with small limits, stopped (or killed by pid) at the end."""
    directory = tmp_path_factory.mktemp("limits") / "storage"
    created = gateway("create-storage", directory, "--reserved-space", "1M")
    assert created.code == 0, created.err
    nurl = created.out.strip().splitlines()[-1]
    match = re.fullmatch(r"pb://[^@]+@127\.0\.0\.1:(\d+)/([^#]+)#v=1", nurl)
    assert match, nurl
    update_config(directory / "node.cfg", LIMITS)
    started = gateway("start", directory)
    try:
        assert started.code == 0, started.err
        yield Node(directory, int(match.group(1)), match.group(2).encode())
        gateway("stop", directory)
    finally:
        pid = node_pid(directory)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def connect(node: Node, source: str = "127.0.0.1") -> ssl.SSLSocket:
    """A TLS connection to the node (the pin is not what is tested here)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", node.port), timeout=10, source_address=(source, 0))
    return context.wrap_socket(raw)


def read_response(sock: ssl.SSLSocket, timeout: float = 10) -> tuple[int, bytes]:
    """Read one response (status, whole text) or until the server closes; (0, b"") if none."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: (\d+)", head)
        while length and len(body) < int(length.group(1)):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except (ConnectionError, ssl.SSLError):
        pass
    if not data.startswith(b"HTTP/1.1 "):
        return 0, data
    return int(data[9:12]), data


def closed_by_server(sock: ssl.SSLSocket, timeout: float = 10) -> bool:
    """Whether the server closes the connection (nothing more to read) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    return True


def version(node: Node, sock: ssl.SSLSocket | None = None) -> int:
    """GET /version on a new connection (or ``sock``); the status answered."""
    own = sock is None
    sock = sock or connect(node)
    try:
        sock.sendall(b"GET /storage/v1/version HTTP/1.1\r\nHost: s\r\n" + node.auth() + b"\r\n")
        return read_response(sock)[0]
    finally:
        if own:
            sock.close()


def test_slowloris_is_cut_off_while_others_are_served(node: Node) -> None:
    """A client sending its head a byte a second gets 408 and is closed after the request
    timeout; another client is served all the while."""
    slow = connect(node)
    opened = time.monotonic()
    head = b"GET /storage/v1/version HTTP/1.1\r\nX-Padding: " + b"a" * 100
    served = 0
    answer = b""
    slow.settimeout(1.0)
    for byte in head:
        slow.sendall(bytes([byte]))
        assert version(node) == 200
        served += 1
        try:
            answer = slow.recv(65536)  # a second's wait for an answer, then the next byte
            break
        except TimeoutError:
            pass
    code, text = (int(answer[9:12]), answer) if answer.startswith(b"HTTP/1.1 ") else (0, answer)
    elapsed = time.monotonic() - opened
    assert code == 408, (text, elapsed, served)
    assert closed_by_server(slow)
    assert TIMEOUT - 0.5 <= elapsed <= TIMEOUT + 3, elapsed
    assert served >= 1
    slow.close()


def test_a_stalled_body_is_cut_off(node: Node) -> None:
    """A body that stops coming gets 408 after the request timeout."""
    sock = connect(node)
    sock.sendall(
        b"PATCH /storage/v1/immutable/"
        + SI.encode()
        + b"/0 HTTP/1.1\r\nHost: s\r\n"
        + node.auth()
        + b"Content-Length: 1000\r\n\r\n"
        + b"x" * 10
    )
    started = time.monotonic()
    code, _ = read_response(sock)
    assert code == 408
    assert time.monotonic() - started <= TIMEOUT + 3
    sock.close()


def test_oversized_heads(node: Node) -> None:
    """A head over the limit: 431 (414 for the request line alone), and the connection closed."""
    cases = [
        (b"GET /storage/v1/version HTTP/1.1\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", 431),
        (b"GET /storage/v1/version HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
        (b"GET /storage/v1/" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", 414),
    ]
    for request, expected in cases:
        sock = connect(node)
        sock.sendall(request)
        assert read_response(sock)[0] == expected
        assert closed_by_server(sock)
        sock.close()
    assert version(node) == 200


def test_oversized_bodies_are_refused_before_they_are_read(node: Node) -> None:
    """An announced body over the limit is answered 413 from its head alone; a chunked one
    as soon as it passes the limit; nothing is stored."""
    before = node.storage_files()
    upload = b"X-Tahoe-Authorization: upload-secret " + base64.b64encode(b"u" * 32) + b"\r\n"
    sock = connect(node)
    sock.sendall(
        b"PATCH /storage/v1/immutable/"
        + SI.encode()
        + b"/0 HTTP/1.1\r\nHost: s\r\n"
        + node.auth()
        + upload
        + b"Content-Range: bytes 0-999999999/1000000000\r\nContent-Length: 1000000000\r\n\r\n"
    )
    assert read_response(sock)[0] == 413
    sock.close()
    sock = connect(node)
    sock.sendall(
        b"PATCH /storage/v1/immutable/"
        + SI.encode()
        + b"/0 HTTP/1.1\r\nHost: s\r\n"
        + node.auth()
        + upload
        + b"Transfer-Encoding: chunked\r\n\r\n"
    )
    for _ in range(20):
        try:
            sock.sendall(b"4000\r\n" + b"c" * 0x4000 + b"\r\n")
        except (ConnectionError, ssl.SSLError):
            break
    assert read_response(sock)[0] == 413
    sock.close()
    assert node.storage_files() == before
    assert version(node) == 200


def test_wrong_swissnum_is_refused_before_the_body(node: Node) -> None:
    """A wrong swissnum with a huge invalid CBOR body gets 401 from its head alone."""
    before = node.storage_files()
    sock = connect(node)
    sock.sendall(
        b"POST /storage/v1/immutable/" + SI.encode() + b" HTTP/1.1\r\nHost: s\r\n"
        b"Authorization: Tahoe-LAFS " + base64.b64encode(b"wrong" * 10) + b"\r\n"
        b"Content-Type: application/cbor\r\nContent-Length: 1000000000\r\n\r\n\xff\xff\xff"
    )
    code, text = read_response(sock)
    assert code == 401
    assert node.swissnum not in text
    assert closed_by_server(sock)
    sock.close()
    assert node.storage_files() == before


def test_wrong_secrets_change_nothing_stored(node: Node) -> None:
    """A wrong write enabler or upload secret is refused and leaves every stored file as it was."""
    secrets = {
        "lease-renew-secret": b"r" * 32,
        "lease-cancel-secret": b"c" * 32,
        "upload-secret": b"u" * 32,
        "write-enabler": b"w" * 32,
    }

    def request(method: bytes, path: str, kinds: list[str], body: bytes, extra: bytes = b"") -> int:
        lines = b"".join(
            b"X-Tahoe-Authorization: " + k.encode() + b" " + base64.b64encode(secrets[k]) + b"\r\n"
            for k in kinds
        )
        sock = connect(node)
        sock.sendall(
            method
            + b" "
            + path.encode()
            + b" HTTP/1.1\r\nHost: s\r\n"
            + node.auth()
            + lines
            + extra
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        code = read_response(sock)[0]
        sock.close()
        return code

    slot = wire.si_b2a(b"\x01" * 16)
    rtw = wire.encode_rtw_request({0: TWVectors(write=(WriteVector(0, b"v1"),))}, ())
    rtw_kinds = ["lease-renew-secret", "lease-cancel-secret", "write-enabler"]
    assert request(b"POST", f"/storage/v1/mutable/{slot}/read-test-write", rtw_kinds, rtw) == 200
    allocate = wire.encode_allocate_request(frozenset({0}), 10)
    alloc_kinds = ["lease-renew-secret", "lease-cancel-secret", "upload-secret"]
    assert request(b"POST", f"/storage/v1/immutable/{SI}", alloc_kinds, allocate) == 200
    before = node.storage_files()

    secrets["write-enabler"] = b"W" * 32
    assert request(b"POST", f"/storage/v1/mutable/{slot}/read-test-write", rtw_kinds, rtw) == 401
    secrets["upload-secret"] = b"U" * 32
    cr = b"Content-Range: bytes 0-9/10\r\n"
    path = f"/storage/v1/immutable/{SI}/0"
    assert request(b"PATCH", path, ["upload-secret"], b"0123456789", cr) == 401
    assert request(b"PUT", path + "/abort", ["upload-secret"], b"") == 405
    secrets["lease-renew-secret"] = b"short"
    assert request(b"PUT", f"/storage/v1/lease/{slot}", alloc_kinds[:2], b"") == 400
    assert node.storage_files() == before


def test_connection_cap(node: Node) -> None:
    """Over the cap, a connection is answered 503 (then, past the refusal slots, closed
    unanswered); a client is served again once the others close."""
    held = [connect(node) for _ in range(4)]
    try:
        over = connect(node)
        over.sendall(b"GET /storage/v1/version HTTP/1.1\r\nHost: s\r\n" + node.auth() + b"\r\n")
        code, text = read_response(over)
        assert code == 503
        assert b"Retry-After: 1" in text
        # ``over`` holds the one refusal slot (4 // 8, at least 1) until it closes.
        with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
            connect(node).sendall(b"GET / HTTP/1.1\r\n\r\n")
        over.close()
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while version(node) != 200:  # the server sees the closes a moment later
        assert time.monotonic() < deadline
    assert version(node) == 200


def test_refusals_are_logged_once_per_source_per_minute(node: Node) -> None:
    """Five refusals from one address make one log line, naming no secret."""
    source = "127.0.0.3"
    for _ in range(5):
        sock = connect(node, source)
        sock.sendall(b"GET /storage/v1/version HTTP/1.1\r\nAuthorization: Tahoe-LAFS eA==\r\n\r\n")
        assert read_response(sock)[0] == 401
        sock.close()
    sock = connect(node, source)
    assert version(node, sock) == 200
    sock.close()
    log = (node.directory / "logs" / "node.log").read_text()
    lines = [line for line in log.splitlines() if f"refused a request from {source}:" in line]
    assert len(lines) == 1, lines
    assert "401" in lines[0]
    assert node.swissnum.decode() not in log
