"""Records, feed state and leases behind one contract (`contract.RecordStore`); `Store` is what callers hold.

The JSONL files of a DATA_DIR (`local.JsonlStore`) are the embedded default; `store_for` opens PostgreSQL
(`postgres.PostgresStore`) instead when PATCHMOI_DATABASE_URL is set. Only this package knows how a
store keeps its data (files, offsets, indexes, locks).
"""

from patchmoi.core.store.contract import LATEST, Change, Cursor, Kind, RecordStore, Warming
from patchmoi.core.store.factory import shown_database_url, store_for
from patchmoi.core.store.store import DEFAULT_LIMIT, MAX_LIMIT, Store, parse_limit

__all__ = [
    "DEFAULT_LIMIT",
    "LATEST",
    "MAX_LIMIT",
    "Change",
    "Cursor",
    "Kind",
    "RecordStore",
    "Store",
    "Warming",
    "parse_limit",
    "shown_database_url",
    "store_for",
]
