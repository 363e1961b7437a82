"""What every subcommand shares: the command's name as the user types it, and usage errors."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path


def program_name() -> str:
    """How the user can type this command: ``gateway``, or its full path when not on PATH."""
    invoked = Path(sys.argv[0])
    if invoked.name == "gateway" and invoked.is_absolute():
        found = shutil.which("gateway")
        if found is None or Path(found).resolve() != invoked.resolve():
            return shlex.quote(str(invoked))
    return "gateway"


class UsageError(Exception):
    """A command-line argument is invalid; the message says which and why."""
