"""The import contract of ARCHITECTURE §1: core stays headless; server and dashboard never import each other."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from .conftest import PYTHON, ROOT

# Folder -> the import roots it must not use. `patchmoi.X` counts as X (core, server, tui).
FORBIDDEN = {
    "core": {"textual", "starlette", "uvicorn", "server", "tui"},
    "server": {"tui", "textual"},
    "patchmoi_tui": {"server", "starlette", "uvicorn"},
}
# The folders' own names are not import names: everything goes through the one package, `patchmoi`.
OLD_ROOTS = {"core", "server", "patchmoi_tui"}
CODE = ("patchmoi", "core", "server", "patchmoi_tui", "tests", "bench")


def imported_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for name in imported_names(path):
        parts = name.split(".")
        roots.add(parts[1] if parts[0] == "patchmoi" and len(parts) > 1 else parts[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_layers(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if imported_roots(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_nothing_imports_the_folder_names() -> None:
    """Importing `core` (say) would load a second copy of the module, or another distribution's `core`."""
    files = [path for folder in CODE for path in (ROOT / folder).rglob("*.py") if folder != "patchmoi"]
    offenders = {
        str(p.relative_to(ROOT)): sorted(n for n in imported_names(p) if n.split(".")[0] in OLD_ROOTS) for p in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_core_loads_no_ui_or_http_framework() -> None:
    code = (
        "import sys, importlib, pkgutil, patchmoi.core as core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'patchmoi.core.'): importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in {'textual','starlette','uvicorn'})\n"
        "print(bad); raise SystemExit(1 if bad else 0)\n"
    )
    result = subprocess.run([PYTHON, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
