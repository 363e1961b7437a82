"""Shared pytest fixtures, and the guard that the suite tests the installed package."""

from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway
import storage
from tests.nodes import reaper  # noqa: F401

CHECKOUT = Path(__file__).resolve().parent.parent


def _from_checkout(name: str, module_file: str | None) -> bool:
    return module_file is not None and Path(module_file).resolve().is_relative_to(CHECKOUT / name)


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run against the source tree: the suite tests what users install."""
    for package in (gateway, storage):
        if _from_checkout(package.__name__, package.__file__):
            raise pytest.UsageError(
                f"{package.__name__} was imported from the checkout ({package.__file__}), "
                "not from an installed package: run misc/test, which builds the wheel and "
                "installs it into .venv (see docs/contributing.rst)"
            )


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run every test in its own temporary directory (trial's mktemp() writes relative paths)."""
    monkeypatch.chdir(tmp_path)
    yield
