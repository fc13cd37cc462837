"""Nothing outside core/store/ knows how the store keeps its data: no files, offsets, indexes or locks.

A second store (PostgreSQL) must be a new implementation of core.store.contract, not a rewrite of its callers.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .conftest import ROOT

OUTSIDE = [
    p
    for folder in ("core", "server", "patchmoi_tui")
    for p in (ROOT / folder).rglob("*.py")
    if not p.is_relative_to(ROOT / "core" / "store")
]
# The store package's public face; its other modules (files, indexes, tailing, the JSONL store) are private.
# `factory` opens a store by URL (PostgreSQL without importing the driver until then); `transfer` copies every
# record between two stores through the contract (`patchmoi db import|export`).
PUBLIC_MODULES = {
    "patchmoi.core.store",
    "patchmoi.core.store.contract",
    "patchmoi.core.store.factory",
    "patchmoi.core.store.transfer",
}
# Attributes and methods of the JSONL store's insides.
PRIVATE_NAMES = {
    "logs",
    "flow_events",
    "feed_events",
    "feed_jobs",
    "legacy_dispatches",
    "list_with_offsets",
    "scan_records",
    "select_raw",
    "iter_all",
    "state_path",
    "index_dir",
    "records",
    "append_with_unique_id",
    "read_at",
    "span_of",
}
STORE_FILES = re.compile(r"\.jsonl\b|feed-state\.json|\.recovery\.json|poller\.lock|\.index\b")
FORBIDDEN_IMPORTS = {"fcntl", "sqlite3"}
# Files that lock files of their own, which are not the store's: the Actions state lives in the workspace
# (`.codex/workspace/actions/flow-client/state.json`, the original's path), not under DATA_DIR.
OWN_LOCKS = {"core/dispatch/actions.py": {"fcntl"}}


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []
    allowed = OWN_LOCKS.get(str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else "", set())
    forbidden = FORBIDDEN_IMPORTS - allowed
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("patchmoi.core.store") and node.module not in PUBLIC_MODULES:
                found.append(f"{where} imports {node.module}")
            if node.module.split(".")[0] in forbidden:
                found.append(f"{where} imports {node.module}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in forbidden or (
                    alias.name.startswith("patchmoi.core.store.") and alias.name not in PUBLIC_MODULES
                ):
                    found.append(f"{where} imports {alias.name}")
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_NAMES:
            found.append(f"{where} uses .{node.attr}")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and STORE_FILES.search(node.value)
            and not _is_docstring(tree, node)
        ):
            found.append(f"{where} names a store file: {node.value[:60]!r}")
    return found


def _is_docstring(tree: ast.AST, node: ast.Constant) -> bool:
    for parent in ast.walk(tree):
        body = getattr(parent, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and body[0].value is node:
            return True
    return False


def test_nothing_outside_the_store_package_touches_its_insides() -> None:
    assert len(OUTSIDE) > 40
    found = [v for path in OUTSIDE for v in violations(path)]
    assert found == []


def test_the_check_catches_what_it_forbids(tmp_path: Path) -> None:
    bad = tmp_path / "probe.py"
    bad.write_text(
        "import fcntl\nfrom patchmoi.core.store.log import Log\n"
        "def f(store):\n    store.attempts_log = store.logs\n    return 'flow-events.jsonl'\n"
    )
    assert len(violations(bad)) == 4, violations(bad)
