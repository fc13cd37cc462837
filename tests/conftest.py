"""Shared fixtures: real temp dirs, real processes, the project's own interpreter."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from patchmoi.core.log import logger
from tests.loopback import LoopbackServer

# `postgres_server` and `postgres_url`: a real PostgreSQL the suite starts itself (tests/pgfixture.py).
pytest_plugins = ("tests.pgfixture",)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

T = TypeVar("T")


def present(value: T | None) -> T:
    """The value a lookup must have found (a typed `assert value is not None`)."""
    assert value is not None
    return value


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never inherit an operator's patchmoi environment."""
    for name in list(os.environ):
        if name.startswith(("PATCH_", "DISCORD_", "CODEX_", "FEED_SOURCES")) or name in ("DATA_DIR", "HOST", "PORT"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """A real HTTP server on 127.0.0.1 (feeds, backends, Discord) for one test."""
    s = LoopbackServer().start()
    yield s
    s.stop()


class LogLines(logging.Handler):
    """The JSON log lines patchmoi writes (core.log), decoded, as a test sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    """Every log line written during the test (INFO and up)."""
    handler, level = LogLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)
