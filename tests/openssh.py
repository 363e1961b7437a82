"""Running OpenSSH's own ``sftp`` client against a server, logging in with a password."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def sftp_batch(
    host: str,
    port: int,
    user: str,
    password: str,
    commands: str,
    workdir: Path,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``sftp -b`` with ``commands`` (one per line); the password comes from an askpass."""
    batch = workdir / "sftp-batch"
    batch.write_text(commands)
    askpass = workdir / "askpass.sh"
    askpass.write_text("#!/bin/sh\nprintf '%s\\n' \"$SFTP_TEST_PASSWORD\"\n")
    askpass.chmod(0o700)
    env = {
        **os.environ,
        "SFTP_TEST_PASSWORD": password,
        "SSH_ASKPASS": str(askpass),
        "SSH_ASKPASS_REQUIRE": "force",
        "DISPLAY": ":0",
    }
    return subprocess.run(
        [
            "sftp",
            "-o",
            "BatchMode=no",
            "-b",
            str(batch),
            "-P",
            str(port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "-o",
            "NumberOfPasswordPrompts=1",
            f"{user}@{host}",
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        cwd=workdir,
    )
