"""Who may read and write a node directory: the check a node makes before it starts.

Like OpenSSH's ``StrictModes``, a node refuses to start when its secrets could
be read, or its directory changed, by another user of the machine:

- ``private/`` (keys, swissnum, NURLs, accounts, the control socket),
  ``staging/`` (plaintext of files being written) and ``state/`` (journals
  holding capabilities and small files' bytes) must give nothing to group or
  others (``chmod go-rwx``), and so must every file in ``private/``, except the
  public halves (``ssh_host_ed25519_key.pub``, ``tls-cert.pem``), which others
  may read but not write;
- the node directory itself, ``node.cfg``, ``logs/`` and ``storage/`` may be
  read by others but not written (``chmod go-w``): whoever can write there can
  put their own ``private/`` or configuration in place, or point a log at a
  file of their choosing;
- a secret named in the configuration (``[sftp] host_key_passphrase_file``)
  is held to the same rule as the files in ``private/``;
- everything checked belongs to the node's user (or root).

Why refuse rather than repair: a secret that was readable may already have
been copied. Fixing the mode silently would hide that; refusing tells the
operator, who runs the one ``chmod`` the message names and decides whether to
rotate what was exposed (docs/operations.rst).
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Iterable
from pathlib import Path

from attrs import frozen

from gateway.nodedir import NodeDir

#: Files in private/ that others may read (the public halves of key pairs).
PUBLIC_FILES = frozenset({"ssh_host_ed25519_key.pub", "tls-cert.pem"})

#: Directories that give nothing to group or others.
PRIVATE_DIRS = ("private", "staging", "state")

#: Directories others may read but not write.
SHARED_DIRS = ("logs", "storage")


@frozen
class Problem:
    """One path whose owner or mode lets another user in."""

    path: Path
    mode: int
    issue: str
    fix: str
    exposed: bool
    """Whether others could read it (its secrets should be considered copied)."""

    def describe(self) -> str:
        """The problem as part of a sentence."""
        return f"{self.path} (mode {self.mode:04o}) {self.issue}"


class UnsafePermissions(Exception):
    """A node directory lets other users read its secrets or change it; the message says
    which paths and the command that fixes them."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(_message(problems))


def _message(problems: list[Problem]) -> str:
    listed = "; ".join(p.describe() for p in problems)
    fixes: dict[str, list[str]] = {}
    for p in problems:
        fixes.setdefault(p.fix, []).append(shlex.quote(str(p.path)))
    commands = " && ".join(f"{fix} {' '.join(paths)}" for fix, paths in fixes.items())
    text = f"unsafe permissions: {listed}; fix with: {commands}"
    if any(p.exposed for p in problems):
        text += " (other users could read secrets: consider rotating them, see docs/operations.rst)"
    return text


def _check(path: Path, forbidden: int, uid: int, problems: list[Problem], *, secret: bool) -> None:
    """Add ``path``'s problems to ``problems`` (none when it is missing or cannot be
    examined: whatever needs it then says so)."""
    try:
        st = path.stat()
    except OSError:
        return
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (uid, 0):
        problems.append(
            Problem(
                path,
                mode,
                f"belongs to another user (uid {st.st_uid})",
                f"chown {uid}",
                exposed=secret,
            )
        )
    elif mode & forbidden:
        open_bits = mode & forbidden
        words = []
        if open_bits & 0o044:
            words.append("readable")
        elif open_bits & 0o011:
            words.append("accessible")
        if open_bits & 0o022:
            words.append("writable")
        problems.append(
            Problem(
                path,
                mode,
                f"is {' and '.join(words)} by other users",
                "chmod go-rwx" if forbidden == 0o077 else "chmod go-w",
                exposed=secret and bool(open_bits & 0o055),
            )
        )


def permission_problems(
    nd: NodeDir, extra_secrets: Iterable[Path] = (), uid: int | None = None
) -> list[Problem]:
    """Every path of the node directory whose owner or mode lets another user in."""
    uid = os.geteuid() if uid is None else uid
    problems: list[Problem] = []
    for path in (nd.root, nd.config, *(nd.root / d for d in SHARED_DIRS)):
        _check(path, 0o022, uid, problems, secret=False)
    for name in PRIVATE_DIRS:
        _check(nd.root / name, 0o077, uid, problems, secret=True)
    try:
        entries = sorted(nd.private.iterdir())
    except OSError:
        entries = []  # missing or unreadable: the part that needs it says so
    for path in entries:
        public = path.name in PUBLIC_FILES
        _check(path, 0o022 if public else 0o077, uid, problems, secret=not public)
    for path in extra_secrets:
        _check(path, 0o077, uid, problems, secret=True)
    return problems


def check_permissions(nd: NodeDir, extra_secrets: Iterable[Path] = ()) -> None:
    """Raise :class:`UnsafePermissions` if another user could read the node's secrets or
    change the node directory."""
    problems = permission_problems(nd, extra_secrets)
    if problems:
        raise UnsafePermissions(problems)
