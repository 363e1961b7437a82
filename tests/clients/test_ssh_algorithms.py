"""OpenSSH's sftp with each cipher and -etm MAC the gateway offers, strict kex across rekeys,
a tampered packet on the wire, and ssh-audit's verdict, all against a real gateway process."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.openssh import sftp_batch
from tests.sftp.gateway_node import RunningGateway, shared_gateway  # noqa: F401

ETM_256 = "hmac-sha2-256-etm@openssh.com"
#: (cipher, MAC) pairs: each new cipher once, each -etm MAC once.
ALGORITHMS = [
    ("chacha20-poly1305@openssh.com", "hmac-sha2-256-etm@openssh.com", "<implicit>"),
    ("aes128-gcm@openssh.com", "hmac-sha2-256-etm@openssh.com", "<implicit>"),
    ("aes256-gcm@openssh.com", "hmac-sha2-512-etm@openssh.com", "<implicit>"),
    ("aes128-ctr", "hmac-sha2-256-etm@openssh.com", "hmac-sha2-256-etm@openssh.com"),
    ("aes256-ctr", "hmac-sha2-512-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"),
]


def node_log(gw: RunningGateway) -> str:
    """The gateway's log so far."""
    return (gw.node_dir / "logs" / "node.log").read_text()


@pytest.fixture(scope="module")
def five_mb(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """5 MB of random bytes."""
    return os.urandom(5_000_000)


@pytest.mark.parametrize(("cipher", "mac", "shown_mac"), ALGORITHMS, ids=[a[0] for a in ALGORITHMS])
def test_sftp_put_and_get_with_each_algorithm(
    shared_gateway: RunningGateway,  # noqa: F811
    tmp_path: Path,
    five_mb: bytes,
    cipher: str,
    mac: str,
    shown_mac: str,
) -> None:
    """sftp -o Ciphers=X -o MACs=Y puts and gets 5 MB byte-exact with X and Y negotiated, in
    strict kex, through several rekeys (RekeyLimit=1M): each NEWKEYS restarts both sequence
    numbers, which chacha20-poly1305 and the -etm MACs authenticate."""
    (tmp_path / "up.bin").write_bytes(five_mb)
    name = f"algo-{cipher}.bin"
    result = sftp_batch(
        shared_gateway.host, shared_gateway.port, shared_gateway.user, shared_gateway.password,
        f"put up.bin {name}\nget {name} down.bin\n", tmp_path,
        options=["-vv", "-o", f"Ciphers={cipher}", "-o", f"MACs={mac}", "-o", "RekeyLimit=1M"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "down.bin").read_bytes() == five_mb
    for direction in ("client->server", "server->client"):
        assert f"kex: {direction} cipher: {cipher} MAC: {shown_mac} " in result.stderr
    # The client restarts its counts after each NEWKEYS only in strict kex; the connection
    # survives only if the gateway does the same.
    assert result.stderr.count("resetting read seqnr") >= 3
    assert result.stderr.count("resetting send seqnr") >= 3
    assert f"cipher {cipher}, MAC {shown_mac}, strict kex on" in node_log(shared_gateway)


class FlippingProxy:
    """A loopback TCP proxy for one connection that flips one byte the client sends."""

    def __init__(self, target: tuple[str, int], flip_at: int) -> None:
        self.target = target
        self.flip_at = flip_at
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(self.target)
        self.sockets += [client, server]
        pumps = [
            threading.Thread(target=self._pump, args=(client, server, self.flip_at), daemon=True),
            threading.Thread(target=self._pump, args=(server, client, -1), daemon=True),
        ]
        self.threads += pumps
        for pump in pumps:
            pump.start()

    def _pump(self, source: socket.socket, sink: socket.socket, flip_at: int) -> None:
        seen = 0
        try:
            while data := source.recv(65536):
                if 0 <= flip_at - seen < len(data):
                    changed = bytearray(data)
                    changed[flip_at - seen] ^= 0x40
                    data = bytes(changed)
                seen += len(data)
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)  # pass the end on, after everything before it
        except OSError:
            pass

    def close(self) -> None:
        """Close every socket and wait for the threads."""
        for sock in self.sockets:
            sock.close()
        for thread in self.threads:
            thread.join(timeout=10)


@pytest.mark.parametrize(
    ("cipher", "mac", "error"),
    [
        ("chacha20-poly1305@openssh.com", ETM_256, "bad chacha20-poly1305 tag"),
        ("aes128-gcm@openssh.com", ETM_256, "bad AES-GCM tag"),
        ("aes128-ctr", ETM_256, "bad MAC"),
    ],
)  # fmt: skip
def test_a_tampered_packet_ends_only_its_connection(
    shared_gateway: RunningGateway,  # noqa: F811
    tmp_path: Path,
    five_mb: bytes,
    cipher: str,
    mac: str,
    error: str,
) -> None:
    """A byte flipped on the wire during an upload ends that connection with a MAC or AEAD
    error, logged by the gateway; another session goes on working."""
    other, other_sftp = shared_gateway.sftp()
    try:
        proxy = FlippingProxy((shared_gateway.host, shared_gateway.port), flip_at=1_000_000)
        try:
            (tmp_path / "up.bin").write_bytes(five_mb)
            result = sftp_batch(
                "127.0.0.1", proxy.port, shared_gateway.user, shared_gateway.password,
                "put up.bin tampered.bin\n", tmp_path,
                options=["-o", f"Ciphers={cipher}", "-o", f"MACs={mac}"],
            )  # fmt: skip
        finally:
            proxy.close()
        # The gateway's DISCONNECT reason, as sftp shows it (had the flipped byte been part of
        # a length, that length would fail the same check or be out of bounds).
        reason = rf"({re.escape(error)}|bad packet length \d+)"
        assert result.returncode != 0
        assert re.search(rf"Received disconnect from .*: {reason}", result.stderr), result.stderr
        log = node_log(shared_gateway)
        assert re.search(rf"SSH connection from 127\.0\.0\.1 ended: {reason}", log)
        with other_sftp.open("still-working.txt", "w") as f:
            f.write(b"yes")
        with other_sftp.open("still-working.txt") as f:
            assert f.read() == b"yes"
    finally:
        other.close()


def test_ssh_audit_finds_no_failure_and_no_encrypt_and_mac(
    shared_gateway: RunningGateway,  # noqa: F811
) -> None:
    """ssh-audit (with its connection-rate test) reports no failure, no encrypt-and-MAC MAC,
    no Terrapin weakness and no insufficient connection throttling (DHEat), and sees the
    strict-kex marker."""
    audit = Path(sys.executable).with_name("ssh-audit")
    result = subprocess.run(
        [str(audit), "-n", "-p", str(shared_gateway.port), shared_gateway.host],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode in (0, 2), result.stdout + result.stderr  # 2: warnings only
    assert "[fail]" not in result.stdout, result.stdout
    assert "encrypt-and-MAC" not in result.stdout, result.stdout
    assert "Terrapin" not in result.stdout.replace("counter-measure to the Terrapin", "")
    assert "kex-strict-s-v00@openssh.com" in result.stdout
    assert "DHEat" not in result.stdout and "conns/sec" not in result.stdout, result.stdout
    for line in result.stdout.splitlines():
        if line.startswith(("(enc)", "(mac)")):
            assert "[warn]" not in line, line
