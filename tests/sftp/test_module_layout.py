"""The layout of gateway/sftp: modules within the size limit, no import cycle, and the seam
between the SFTP protocol (the wire) and its ISFTPServer adapter (the filesystem)."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway.sftp

PACKAGE = "gateway.sftp"
SOURCE = Path(gateway.sftp.__file__).parent
MAX_LINES = 500


def modules() -> dict[str, Path]:
    """Every module of the package (installed copy), by dotted name."""
    found = {f"{PACKAGE}.{path.stem}": path for path in SOURCE.glob("*.py")}
    found[PACKAGE] = found.pop(f"{PACKAGE}.__init__")
    return found


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any level (inside ``if TYPE_CHECKING:`` too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def graph() -> dict[str, set[str]]:
    """Which of the package's modules each of its modules imports."""
    known = modules()
    return {
        name: {other for other in imports(path) if other in known and other != name}
        for name, path in known.items()
    }


def test_no_module_exceeds_the_size_limit() -> None:
    """Every module of gateway/sftp is at most 500 lines."""
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_no_import_cycle() -> None:
    """The package's modules import each other without a cycle (the package itself, which
    only re-exports, is left out: each module imports it on the way to its own name)."""
    edges = {name: deps - {PACKAGE} for name, deps in graph().items() if name != PACKAGE}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for dep in edges[name]:
            visit(dep, (*path, name))
        done.add(name)

    for name in edges:
        visit(name, ())


def test_protocol_and_adapter_stay_apart() -> None:
    """The protocol knows no filesystem; the adapter knows no packet format or protocol."""
    protocol = imports(modules()[f"{PACKAGE}.protocol"])
    adapter = imports(modules()[f"{PACKAGE}.server"])
    assert not {name for name in protocol if name.startswith("gateway.fs")}
    assert not {name for name in protocol if name.startswith(f"{PACKAGE}.server")}
    assert not {name for name in adapter if name.startswith(f"{PACKAGE}.packets")}
    assert not {name for name in adapter if name.startswith(f"{PACKAGE}.protocol")}
    assert not {name for name in adapter if name.startswith("twisted.conch.ssh.common")}
