"""Which store a process opens: PostgreSQL when `PATCHMOI_DATABASE_URL` is set, DATA_DIR's JSONL files otherwise.

Every caller that opens records for a `Settings` (the service, the CLI, the dashboard's local mode, doctor)
comes through `store_for`, so one variable moves all of them at once.
"""

from __future__ import annotations

from pathlib import Path

from patchmoi.core.config import Settings
from patchmoi.core.errors import ConfigError
from patchmoi.core.store.contract import RecordStore
from patchmoi.core.store.store import Store


def postgres_records(url: str) -> RecordStore:
    """The PostgreSQL store for this connection string (nothing connects until the first call)."""
    if not url.startswith(("postgresql://", "postgres://")) and "=" not in url:
        raise ConfigError(
            "PATCHMOI_DATABASE_URL must be a PostgreSQL connection string "
            "(postgresql://user:password@host:5432/db, or host=... dbname=...)"
        )
    try:
        from patchmoi.core.store.postgres import PostgresStore
    except ImportError as exc:
        raise ConfigError(f"PATCHMOI_DATABASE_URL is set, but {exc}") from None
    return PostgresStore(url)


def store_for(settings: Settings, *, data_dir: Path | None = None) -> Store:
    """The store `settings` name. `data_dir` (default: the settings') stays the local working directory."""
    local = Path(data_dir if data_dir is not None else settings.data_dir)
    if settings.database_url:
        return Store(postgres_records(settings.database_url), data_dir=local)
    return Store(local)


def shown_database_url(url: str) -> str:
    """The connection string with its password as `***` (without the driver: only that one is set)."""
    try:
        from patchmoi.core.store.postgres import redact
    except ImportError:
        return "set (install patchmoi[postgres] to use it)"
    return redact(url)
