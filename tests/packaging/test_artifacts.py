"""The built artifacts hold the whole product: every package, module and data file, and the docs.

A directory that is not a package (no ``__init__.py``) still imports from a
checkout or an editable install, but is left out of the wheel: these tests
build the sdist and the wheel (from the sdist, as pip does), read what they
hold, and import every module from the wheel alone, away from the checkout.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path, PurePosixPath

import attrs
import pytest

import gateway
from tests.packaging.checkout import copy_checkout, package_files, tracked_files


@attrs.frozen
class Artifacts:
    """An sdist and the wheel built from it."""

    sdist: Path
    wheel: Path

    def wheel_names(self) -> set[str]:
        with zipfile.ZipFile(self.wheel) as archive:
            return set(archive.namelist())

    def sdist_names(self) -> set[str]:
        """Paths inside the sdist, without its top folder (``grid_gateway-X.Y.Z/``)."""
        with tarfile.open(self.sdist) as archive:
            return {
                str(PurePosixPath(*PurePosixPath(name).parts[1:]))
                for name in archive.getnames()
                if len(PurePosixPath(name).parts) > 1
            }

    def wheel_text(self, suffix: str) -> str:
        with zipfile.ZipFile(self.wheel) as archive:
            (name,) = [n for n in archive.namelist() if n.endswith(suffix)]
            return archive.read(name).decode()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """Build the sdist from a clean copy of the checkout, then the wheel from the sdist."""
    source = copy_checkout(tmp_path_factory.mktemp("clone"))
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Artifacts(sdist=sdist, wheel=wheel)


def test_wheel_holds_every_module_and_data_file(artifacts: Artifacts) -> None:
    """Every tracked file of gateway/ and storage/ is in the wheel, at the same path."""
    names = artifacts.wheel_names()
    expected = package_files()
    assert expected, "no package files found"
    missing = [name for name in expected if name not in names]
    assert missing == []


def test_every_package_directory_is_a_package(artifacts: Artifacts) -> None:
    """Each directory of gateway/ and storage/ that holds Python code has an __init__.py."""
    names = artifacts.wheel_names()
    directories = {str(PurePosixPath(name).parent) for name in package_files()}
    directories = {d for d in directories if "__pycache__" not in d}
    not_packages = sorted(d for d in directories if f"{d}/__init__.py" not in names)
    assert not_packages == []


def test_wheel_alone_imports_every_module_and_runs(artifacts: Artifacts, tmp_path: Path) -> None:
    """With only the wheel's files on the path (no checkout), every module imports; --version."""
    site = tmp_path / "site"
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(artifacts.wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    script = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        site = sys.argv[1]
        failed = []
        count = 0
        for top in ("gateway", "storage"):
            package = importlib.import_module(top)
            assert package.__file__.startswith(site), package.__file__
            count += 1
            for info in pkgutil.walk_packages(package.__path__, top + "."):
                if info.name.endswith(".__main__"):
                    continue
                try:
                    module = importlib.import_module(info.name)
                except Exception as e:
                    failed.append(f"{info.name}: {type(e).__name__}: {e}")
                    continue
                assert module.__file__.startswith(site), module.__file__
                count += 1
        print(count)
        print("\\n".join(failed))
        """
    )
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(site)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    count, *failed = result.stdout.split("\n")
    modules = [n for n in package_files() if n.endswith(".py") and not n.endswith("__main__.py")]
    assert int(count) == len(modules)
    assert [line for line in failed if line] == []
    version = subprocess.run(
        [sys.executable, "-m", "gateway", "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"gateway {gateway.__version__}"


def test_sdist_holds_readme_docs_licence_scripts_and_unit(artifacts: Artifacts) -> None:
    """The sdist has the README, every doc, the licence, misc/ (the systemd unit) and the tests."""
    names = artifacts.sdist_names()
    wanted = [
        name
        for name in tracked_files()
        if name.split("/", 1)[0] in ("docs", "misc", "gateway", "storage", "tests")
    ]
    wanted += ["README.rst", "LICENSE", "setup.cfg", "pyproject.toml", "misc/gateway@.service"]
    missing = sorted(name for name in set(wanted) if name not in names)
    assert missing == []
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_wheel_metadata_names_the_command_and_licence(artifacts: Artifacts) -> None:
    """The wheel installs the ``gateway`` command and carries the licence text."""
    entry_points = artifacts.wheel_text(".dist-info/entry_points.txt")
    assert "gateway = gateway.cli.main:main" in entry_points
    metadata = artifacts.wheel_text(".dist-info/METADATA")
    assert f"Version: {gateway.__version__}" in metadata
    assert "License-File: LICENSE" in metadata
    licence = artifacts.wheel_text("LICENSE")
    assert "GNU GENERAL PUBLIC LICENSE" in licence and "Version 2" in licence


def test_sdist_builds_a_wheel_with_the_registry_only(artifacts: Artifacts, tmp_path: Path) -> None:
    """pip builds the sdist in an isolated environment (its build tools from the registry)."""
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--wheel-dir",
            str(tmp_path),
            str(artifacts.sdist),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        rebuilt = set(archive.namelist())

    def product(names: set[str]) -> set[str]:
        # The build tools' versions may differ: compare what is not their metadata.
        return {name for name in names if ".dist-info/" not in name}

    assert product(rebuilt) == product(artifacts.wheel_names())
