"""Hypothesis fuzzing of the SFTP server, bounded for CI (the long run is
``misc/fuzz_sftp.py``), and a few hundred fuzzed packets to a real gateway process.

Each target of :mod:`tests.sftp.sftp_fuzz_targets` generates what one session
sends: any byte stream, well-framed requests of every type with fuzzed fields,
every extension with fuzzed payloads, and series of plausible requests on a
small namespace. Every input goes to the SFTP side of a gateway in process
(avatar, session channel, protocol, server, filesystem layer, staging, upload
queue, object store, an in-memory storage server) while another session is
open, and must be answered or end its own session, never raise, log a
failure, leave a request unanswered or work pending, leak a handle, change
what is stored while refusing, or leave the other session unserved.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.conch.ssh.common import NS

from tests.nodes import NodeReaper, gateway
from tests.sftp.gateway_node import RawSFTP, start_gateway
from tests.sftp.sftp_fuzz import (
    FX_OK,
    FXP_STATUS,
    MAX_FILE_SIZE,
    GatewayUnderTest,
    HandleRef,
    Request,
    check_input,
    gateway_under_test,
)
from tests.sftp.sftp_fuzz_targets import (
    BYTE_TARGETS,
    CLOSE,
    EXTENDED,
    FSETSTAT,
    FSTAT,
    OPEN,
    OPENERS,
    READ,
    READDIR,
    REMOVE,
    TARGETS,
    WRITE,
    attrs_block,
    u32,
    u64,
)

_SETTINGS = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=False,
)
FX_EOF, FX_FAILURE, FX_BAD_MESSAGE, FX_OP_UNSUPPORTED = 1, 4, 5, 8


@pytest.fixture(scope="module")
def gateway_in_process() -> Iterator[GatewayUnderTest]:
    """One gateway for the module: state carries over from input to input."""
    with gateway_under_test() as g:
        yield g


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target(gateway_in_process: GatewayUnderTest, target: str) -> None:
    """Every generated input of the target is answered or ends its session, and nothing
    breaks."""

    @_SETTINGS
    @given(steps=TARGETS[target](), pieces=st.sampled_from([1, 1, 2, 7]))
    def run(steps: list[bytes | Request], pieces: int) -> None:
        check_input(gateway_in_process, steps, pieces)

    run()


@pytest.mark.parametrize("target", sorted(BYTE_TARGETS))
def test_byte_target_seeds_are_served(target: str) -> None:
    """Every seed of the long run's byte-level targets is a valid input, served by a fresh
    server (no malformed or misparsed request), so the fuzzer starts inside the protocol."""
    byte_target = BYTE_TARGETS[target]
    for seed in byte_target.seeds:
        with gateway_under_test() as g:
            replies = check_input(g, byte_target.wrap(seed))
        assert replies, seed
        assert FX_BAD_MESSAGE not in [r.code for r in replies], (seed, replies)
        assert any(r.kind != FXP_STATUS or r.code == FX_OK for r in replies), (seed, replies)


def _status(gateway: GatewayUnderTest, *steps: bytes | Request) -> tuple[int | None, bytes]:
    """The code and message of the reply to request 7 among ``steps``."""
    (reply,) = [r for r in check_input(gateway, list(steps)) if r.request_id == 7]
    (length,) = struct.unpack_from("!L", reply.body, 9)
    return reply.code, reply.body[13 : 13 + length]


@pytest.mark.parametrize("kind", [FSTAT, FSETSTAT, READDIR])
def test_an_unknown_handle_is_refused_without_a_traceback(
    gateway_in_process: GatewayUnderTest, kind: int
) -> None:
    """FSTAT, FSETSTAT and READDIR of a handle that is not open get FX_FAILURE, as from
    OpenSSH, and nothing is logged (Conch logged a traceback for each: a client could fill
    the log). Found by the fuzzer."""
    fields: tuple[bytes | HandleRef, ...] = (NS(b"bogus"),)
    if kind == FSETSTAT:
        fields += (attrs_block(0, [], []),)
    assert _status(gateway_in_process, OPENERS[0], Request(kind, 7, fields)) == (
        FX_FAILURE,
        b"no such open file handle",
    )


def test_an_unknown_extension_with_a_non_ascii_name_is_answered(
    gateway_in_process: GatewayUnderTest,
) -> None:
    """An extension we do not serve gets FX_OP_UNSUPPORTED whatever its name's bytes (Conch
    raised on a non-ASCII status message and left the request unanswered). Found by the
    fuzzer."""
    request = Request(EXTENDED, 7, (NS("caf\u00e9\xff".encode("latin-1")),))
    code, message = _status(gateway_in_process, request)
    assert code == FX_OP_UNSUPPORTED
    assert message == b"extension caf\\xe9\\xff is not supported"


@pytest.mark.parametrize("offset", [MAX_FILE_SIZE, 2**63, 2**64 - 1])
def test_a_write_past_the_largest_file_is_refused(
    gateway_in_process: GatewayUnderTest, offset: int
) -> None:
    """A WRITE ending past the largest file the gateway stages gets FX_FAILURE with a clear
    message (it raised OverflowError or EINVAL from pwrite, logged as a traceback; and a
    write at 1 TiB cost minutes of upload). Found by the fuzzer."""
    new = Request(OPEN, 1, (NS(b"/far"), u32(0x1A), attrs_block(0, [], [])))
    write = Request(WRITE, 7, (HandleRef(0), u64(offset), NS(b"x")))
    message = f"a file can be at most {MAX_FILE_SIZE} bytes".encode()
    assert _status(gateway_in_process, new, write) == (FX_FAILURE, message)


@pytest.mark.parametrize("removed", [False, True])
def test_fsyncs_pipelined_with_the_close_of_their_handle(
    gateway_in_process: GatewayUnderTest, removed: bool
) -> None:
    """Two fsyncs and a CLOSE (after a REMOVE of the path, or not) sent together on one
    handle, with writes between: the second fsync, waiting behind the first, finds the
    file closed and its staged bytes gone; it returns (or waits for the CLOSE's upload)
    instead of copying them (it read a closed descriptor, and logged the failure). Every
    request succeeds, and the file holds what was written or is gone. Found by the
    fuzzer."""
    path = b"/synced-removed" if removed else b"/synced"
    fsync = (NS(b"fsync@openssh.com"), HandleRef(0))
    steps = [
        Request(OPEN, 1, (NS(path), u32(0x1A), attrs_block(0, [], []))),
        Request(WRITE, 2, (HandleRef(0), u64(0), NS(b"first"))),
        Request(EXTENDED, 3, fsync),
        Request(WRITE, 4, (HandleRef(0), u64(5), NS(b", then more"))),
        Request(EXTENDED, 5, fsync),
    ]
    if removed:
        steps.append(Request(REMOVE, 6, (NS(path),)))
    steps.append(Request(CLOSE, 7, (HandleRef(0),)))
    replies = check_input(gateway_in_process, steps)
    codes = {r.request_id: r.code for r in replies if r.kind == FXP_STATUS}
    assert codes == {2: FX_OK, 3: FX_OK, 4: FX_OK, 5: FX_OK, 7: FX_OK} | (
        {6: FX_OK} if removed else {}
    )
    stored = gateway_in_process.stored.get(path.decode())
    if removed:
        assert stored is None
    else:
        assert stored is not None and stored[1] == len(b"first, then more")


@pytest.mark.parametrize("offset", [2**63 - 2, 2**63 - 1, 2**63, 2**64 - 1])
def test_a_read_far_past_the_end_of_a_file_still_uploading_is_eof(
    gateway_in_process: GatewayUnderTest, offset: int
) -> None:
    """A READ at an offset ``pread`` refuses, of a file whose upload waits (read from its
    staged file), gets FX_EOF like any read past the end (it logged EINVAL as a failure).
    Found by the fuzzer."""
    path = NS(b"/pending-%d" % offset)
    steps = [
        Request(OPEN, 1, (path, u32(0x1A), attrs_block(0, [], []))),
        Request(WRITE, 2, (HandleRef(0), u64(0), NS(b"waiting for its upload"))),
        Request(CLOSE, 3, (HandleRef(0),)),
        Request(OPEN, 4, (path, u32(0x01), attrs_block(0, [], [])), setup=True),
        Request(READ, 7, (HandleRef(1), u64(offset), u32(4096))),
    ]
    assert _status(gateway_in_process, *steps)[0] == FX_EOF


def _fuzzed_packets(rng: random.Random, count: int) -> Iterator[bytes]:
    """``count`` packets (length prefix included): the seeds of the ``requests`` and
    ``extensions`` byte targets, mutated by ``rng`` (bit flips, insertions, cuts)."""
    wraps = [BYTE_TARGETS["requests"], BYTE_TARGETS["extensions"]]
    for i in range(count):
        target = wraps[i % 2]
        seed = bytearray(rng.choice(target.seeds))
        for _ in range(rng.randint(0, 3)):
            at = rng.randrange(len(seed) + 1)
            op = rng.randrange(3)
            if op == 0 and at < len(seed):
                seed[at] ^= 1 << rng.randrange(8)
            elif op == 1:
                seed[at:at] = rng.randbytes(rng.randint(1, 8))
            else:
                del seed[at:]
        request = target.wrap(bytes(seed))[-1]
        assert isinstance(request, Request)
        body = b"".join(f if isinstance(f, bytes) else NS(b"1") for f in request.fields)
        payload = bytes([request.kind]) + struct.pack("!L", i) + body
        yield struct.pack("!L", len(payload)) + payload


REQUESTS = frozenset(range(3, 21)) | {200}


def _answered(raw: RawSFTP, request_id: int) -> bool:
    """Read replies until the one to ``request_id`` (True), or the session's end (False)."""
    while True:
        try:
            kind, data = raw._read_packet()
        except EOFError:
            return False
        if kind != 2 and len(data) >= 4 and struct.unpack_from("!L", data)[0] == request_id:
            return True


def test_fuzzed_packets_to_a_real_gateway(tmp_path: Path, reaper: NodeReaper) -> None:
    """300 fuzzed packets over real SSH channels to a real gateway process, one at a time:
    each request is answered or ends its session (a malformed packet; a new session then
    takes the next); then a normal client works, the gateway stops cleanly and its log
    holds no traceback and no logged failure."""
    gw = start_gateway(tmp_path, reaper)
    try:
        transport = paramiko.Transport((gw.host, gw.port))
        transport.connect(username=gw.user, password=gw.password)
        try:
            raw, ended = RawSFTP(transport), 0
            for number, data in enumerate(_fuzzed_packets(random.Random(18), 300)):
                raw.sock.settimeout(20)
                try:
                    raw.sock.sendall(data)
                    answered = data[4] not in REQUESTS or _answered(raw, number)
                except TimeoutError:
                    raise AssertionError(f"fuzzed packet {number} was never answered") from None
                except (EOFError, OSError):
                    answered = False
                if not answered:  # the server ended the session (a malformed packet)
                    ended += 1
                    raw.sock.close()
                    raw = RawSFTP(transport)
            raw.sock.close()
            assert ended > 0, "no fuzzed packet was malformed enough to end its session"
        finally:
            transport.close()
        fresh, client = gw.sftp()
        try:
            with client.open("/after-fuzz.txt", "wb") as f:
                f.write(b"still serving")
            with client.open("/after-fuzz.txt", "rb") as f:
                assert f.read() == b"still serving"
        finally:
            fresh.close()
    finally:
        stopped = gateway("stop", gw.node_dir)
    assert stopped.code == 0, stopped.err
    log = (gw.node_dir / "logs" / "node.log").read_text(errors="replace")
    assert "SFTP session started" in log
    for word in ("Traceback", "log_failure", '"log_level": {"name": "error"', "critical"):
        assert word not in log, log[max(0, log.index(word) - 1500) :][:3000]
