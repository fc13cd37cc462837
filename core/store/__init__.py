"""The JSONL store: authoritative append-only files plus derived, rebuildable indexes."""

from patchmoi.core.store.log import Log
from patchmoi.core.store.store import DEFAULT_LIMIT, MAX_LIMIT, Store, parse_limit

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Log", "Store", "parse_limit"]
