"""Structured logs: one JSON object per line on stderr (`{"type": "feed.accepted", ...}`), never secrets."""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any

from patchmoi.core.records import now_iso

logger = logging.getLogger("patchmoi")


def log_event(type_: str, *, exc: BaseException | None = None, **fields: Any) -> None:
    """One JSON line; with `exc`, its type, message and traceback (for internal errors, never expected)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    record = {"ts": now_iso(), "type": type_, **{k: v for k, v in fields.items() if v is not None}}
    if exc is not None:
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = "".join(traceback.format_exception(exc)).rstrip()
    logger.info(json.dumps(record, ensure_ascii=False, default=str))


def configure(level: int = logging.INFO) -> None:
    """Send patchmoi's JSON lines to stderr (the CLI and server call this once)."""
    if logger.handlers:
        logger.setLevel(level)
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
