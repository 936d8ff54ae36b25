"""Dependencies point one way: the import rules of the layout, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gateway"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def importers_of(prefix: str) -> set[str]:
    found = set()
    for path in modules():
        if any(name == prefix or name.startswith(prefix + ".") for name in imports_of(path)):
            found.add(path.relative_to(PACKAGE).as_posix())
    return found


def test_the_package_has_modules() -> None:
    assert len(modules()) > 15


@pytest.mark.parametrize(
    ("library", "allowed"),
    [
        ("aiosqlite", {"store/sqlite.py", "store/tx.py", "store/inbox.py"}),
        ("sqlite3", {"store/sqlite.py", "store/tx.py", "store/records.py", "store/inbox.py"}),
        ("starlette", {"app.py"}),
        ("uvicorn", {"cli.py"}),
        ("gateway.app", {"cli.py"}),
    ],
)
def test_only_one_place_uses(library: str, allowed: set[str]) -> None:
    assert importers_of(library) <= allowed


def test_carriers_never_touch_storage() -> None:
    for path in (PACKAGE / "carriers").glob("*.py"):
        assert not any(name.startswith("gateway.store") for name in imports_of(path)), path


def test_pure_modules_do_no_io() -> None:
    io_libraries = {"httpx", "aiosqlite", "sqlite3", "starlette", "socket", "asyncio"}
    for name in ("segments.py", "signing.py", "models.py", "clock.py", "errors.py"):
        assert not imports_of(PACKAGE / name) & io_libraries, name
