"""The README's first command, run as a new user runs it: ``misc/quickstart`` on a fresh home.

A clean copy of the checkout, a home directory with nothing in it, no ``$USER``:
quickstart builds the wheel, installs it (not editable) into a new virtualenv
outside the checkout and starts the default node. Then what the README says
next: log in with OpenSSH ``sftp`` as the printed account with the printed
password, put and get a file, open the status page, start again, stop with the
README's command; and a storage node from the same installation.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

import gateway
from tests.nodes import NodeReaper, node_pid, process_gone
from tests.openssh import sftp_batch
from tests.packaging.checkout import copy_checkout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _user_env(home: Path) -> dict[str, str]:
    """A login environment for a new user whose home is ``home``: no $USER, the real tools."""
    env = {
        "HOME": str(home),
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        # Only so that the test does not download every dependency again: the
        # registry, its mirrors and pip's options stay as this machine has them.
        "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
    }
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    pyenv = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    if Path(pyenv).is_dir():
        env["PYENV_ROOT"] = pyenv  # python3 may be a pyenv shim, which finds its root via HOME
    return env


def _quickstart(src: Path, home: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(src / "misc" / "quickstart")],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_readme_quickstart_as_a_new_user(tmp_path: Path, reaper: NodeReaper) -> None:
    """misc/quickstart from a clean clone works as the README says, from the built package."""
    src = copy_checkout(tmp_path / "clone")
    home = tmp_path / "home"
    home.mkdir()
    env = _user_env(home)
    sftp_port, web_port = _free_port(), _free_port()
    env["GATEWAY_SFTP_PORT"] = str(sftp_port)
    env["GATEWAY_WEB_PORT"] = str(web_port)
    venv = home / ".local" / "share" / "gateway-venv"
    node_dir = reaper.track(home / ".local" / "share" / "gateway")

    first = _quickstart(src, home, env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    user = pwd.getpwuid(os.getuid()).pw_name
    password = re.search(r"password, shown only this once.*\n\s+(\S+)", out)
    assert password, out
    connect = f"SFTP: sftp -P {sftp_port} {user}@127.0.0.1  (listening on 127.0.0.1:{sftp_port})"
    assert connect in out.splitlines()
    assert f"Status page: http://127.0.0.1:{web_port}/" in out.splitlines()
    assert out.rstrip().splitlines()[-1] == f"Stop it with: {venv}/bin/gateway stop"

    # Installed from the wheel into the virtualenv, not linked to the checkout.
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import gateway, storage; print(gateway.__file__)"],
        capture_output=True,
        text=True,
        cwd=home,
        env=env,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(venv / "lib")), where
    assert not list(venv.glob("lib/python*/site-packages/__editable__*"))

    data = os.urandom(1_500_000)
    (home / "upload.bin").write_bytes(data)
    sftp = sftp_batch(
        "127.0.0.1",
        sftp_port,
        user,
        password.group(1),
        "put upload.bin first.bin\nls -l\nget first.bin back.bin\n",
        home,
    )
    assert sftp.returncode == 0, sftp.stderr
    assert "first.bin" in sftp.stdout
    assert (home / "back.bin").read_bytes() == data

    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/status.json", timeout=30) as page:
        assert b'"kind": "gateway"' in page.read()

    pid = node_pid(node_dir)
    assert pid is not None
    again = _quickstart(src, home, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Node in {node_dir} is already running (pid {pid})." in again.stdout
    assert connect in again.stdout.splitlines()
    assert "password" not in again.stdout
    assert node_pid(node_dir) == pid

    # README: "Stop it with ~/.local/share/gateway-venv/bin/gateway stop".
    stopped = subprocess.run(
        ["sh", "-c", "~/.local/share/gateway-venv/bin/gateway stop"],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stopped.returncode == 0, stopped.stderr
    assert process_gone(pid)

    # The same installation runs a storage node and says its version.
    program = str(venv / "bin" / "gateway")
    version = subprocess.run([program, "--version"], capture_output=True, text=True, env=env)
    assert version.stdout.strip() == f"gateway {gateway.__version__}"
    storage_dir = reaper.track(home / "storage1")
    created = subprocess.run(
        [program, "create-storage", str(storage_dir)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert created.returncode == 0, created.stderr
    started = subprocess.run(
        [program, "start", str(storage_dir)], capture_output=True, text=True, env=env, timeout=120
    )
    assert started.returncode == 0, started.stderr
    nurl = re.search(r"^Storage NURL: (pb://\S+#v=1)$", started.stdout, re.M)
    assert nurl, started.stdout
    assert nurl.group(1) == (storage_dir / "private" / "nurl").read_text().strip()
    assert subprocess.run([program, "stop", str(storage_dir)], env=env).returncode == 0
