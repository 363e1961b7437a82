"""The project's checkout as a user gets it: its tracked files, copied somewhere else."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]

#: Never part of what a user clones, even in a checkout that is not a git repository.
_LOCAL_ONLY = {".git", "build", "dist", "__pycache__", ".mypy_cache", ".ruff_cache"}


def tracked_files() -> list[str]:
    """The checkout's files as a fresh clone has them (git's list, or a walk without venvs)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=CHECKOUT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return sorted(
            str(path.relative_to(CHECKOUT))
            for path in CHECKOUT.rglob("*")
            if path.is_file()
            and not any(
                part in _LOCAL_ONLY or part.startswith(".venv") or part.endswith(".egg-info")
                for part in path.relative_to(CHECKOUT).parts
            )
        )
    return sorted(name for name in listed.decode().split("\0") if name)


def copy_checkout(target: Path) -> Path:
    """Copy the tracked files (and their modes) to ``target``, a clean clone of the checkout."""
    for name in tracked_files():
        source = CHECKOUT / name
        if not source.is_file():  # deleted in the working tree, not yet committed
            continue
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    return target


def package_files() -> list[str]:
    """Every tracked file of the two packages, ``gateway/`` and ``storage/``, but bytecode."""
    return [
        name
        for name in tracked_files()
        if name.split("/", 1)[0] in ("gateway", "storage")
        and not name.endswith(".pyc")
        and (CHECKOUT / name).is_file()
    ]
