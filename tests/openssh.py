"""Running OpenSSH's own clients (``sftp``, ``scp``) against a server, with a password."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

#: Options every test connection uses: no host key prompts, password only, one try.
_OPTIONS = [
    "-o", "BatchMode=no",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "PreferredAuthentications=password,keyboard-interactive",
    "-o", "NumberOfPasswordPrompts=1",
]  # fmt: skip


def _askpass_env(password: str, workdir: Path) -> dict[str, str]:
    """An environment in which the client reads ``password`` from an askpass program."""
    askpass = workdir / "askpass.sh"
    askpass.write_text("#!/bin/sh\nprintf '%s\\n' \"$SFTP_TEST_PASSWORD\"\n")
    askpass.chmod(0o700)
    return {
        **os.environ,
        "SFTP_TEST_PASSWORD": password,
        "SSH_ASKPASS": str(askpass),
        "SSH_ASKPASS_REQUIRE": "force",
        "DISPLAY": ":0",
    }


def _run(
    command: list[str], password: str, workdir: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_askpass_env(password, workdir),
        stdin=subprocess.DEVNULL,
        cwd=workdir,
    )


def sftp_batch(
    host: str,
    port: int,
    user: str,
    password: str,
    commands: str,
    workdir: Path,
    timeout: float = 120,
    options: Sequence[str] = (),
    known_hosts: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``sftp -b`` with ``commands`` (one per line) in ``workdir``, and ``options``.

    With ``known_hosts``, the server's host key must be the one that file holds.
    """
    batch = workdir / "sftp-batch"
    batch.write_text(commands)
    checking = _OPTIONS
    if known_hosts is not None:
        checking = [
            *_OPTIONS[:2],
            *("-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}"),
            *_OPTIONS[6:],
        ]
    command = ["sftp", *checking, *options, "-b", str(batch), "-P", str(port), f"{user}@{host}"]
    return _run(command, password, workdir, timeout)


def scp(
    port: int, password: str, workdir: Path, *paths: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``scp`` (SFTP mode, OpenSSH 9's default) between ``paths``."""
    return _run(["scp", *_OPTIONS, "-P", str(port), *paths], password, workdir, timeout)
