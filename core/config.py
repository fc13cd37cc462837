"""Settings from the environment (spec §9), overridable by CLI flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})


def env_flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in TRUE_WORDS


def first_nonempty(*values: str | None) -> str | None:
    for value in values:
        if value is not None and value.strip():
            return value.strip()
    return None


@dataclass(frozen=True)
class AccessLog:
    """`PATCHMOI_ACCESS_LOG`: which requests `serve` writes an `http.request` line for.

    `errors` (the default): status 400 and up, and requests slower than `SLOW_SECONDS`; `all`: every request;
    `sample:N`: errors and slow ones, plus one in N of the rest (`sample:1` is `all`); `off`: none.
    """

    mode: str = "errors"  # "all", "errors", "sample" or "off"
    every: int = 0  # with "sample": one line per `every` ordinary requests

    MODES: ClassVar[tuple[str, ...]] = ("all", "errors", "off")
    SLOW_SECONDS: ClassVar[float] = 1.0

    @classmethod
    def parse(cls, text: str | None) -> AccessLog:
        value = (text or "").strip().lower()
        if not value:
            return cls()
        if value in cls.MODES:
            return cls(value)
        kind, _, count = value.partition(":")
        if kind == "sample" and count.strip().isdigit() and int(count) >= 1:
            return cls("all") if int(count) == 1 else cls("sample", int(count))
        from patchmoi.core.errors import ConfigError

        raise ConfigError(f"PATCHMOI_ACCESS_LOG must be all, errors, off or sample:N (N >= 1), got {text!r}")

    def __str__(self) -> str:
        return f"sample:{self.every}" if self.mode == "sample" else self.mode


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 3000
    data_dir: Path = Path("data")
    feed_sources_path: Path | None = None
    admin_token: str | None = None
    discord_enabled: bool = False
    discord_webhook_url: str | None = None
    discord_notify_events: tuple[str, ...] = ("push", "release")
    backend_url: str | None = None
    backend_secret: str | None = None
    workspace_mode: str | None = None
    fetch_deadline: float = 20.0
    max_feed_bytes: int = 5 * 1024 * 1024
    min_poll_seconds: float = 30.0
    access_log: AccessLog = AccessLog()
    # PATCHMOI_DATABASE_URL: records, feed state and leases in PostgreSQL instead of DATA_DIR's JSONL files
    # (DATA_DIR still holds worktrees and local state). Never printed whole: `describe()` redacts its password.
    database_url: str | None = field(default=None, repr=False)
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read spec §9's variables. HOST defaults to loopback (the Bun service bound 0.0.0.0 open)."""
        e = dict(os.environ if env is None else env)
        port_text = first_nonempty(e.get("PORT")) or "3000"
        try:
            port = int(port_text)
            if not 0 <= port <= 65535:
                raise ValueError
        except ValueError:
            from patchmoi.core.errors import ConfigError

            raise ConfigError(f"PORT must be a port number 0..65535, got {port_text!r}") from None
        events = tuple(
            item.strip() for item in (e.get("DISCORD_NOTIFY_EVENTS") or "push,release").split(",") if item.strip()
        )
        sources = first_nonempty(e.get("FEED_SOURCES_PATH"))
        deadline = _positive(e, "PATCHMOI_FETCH_DEADLINE", 20.0)
        max_bytes = int(_positive(e, "PATCHMOI_MAX_FEED_BYTES", 5 * 1024 * 1024))
        return cls(
            host=first_nonempty(e.get("HOST")) or "127.0.0.1",
            port=port,
            data_dir=Path(first_nonempty(e.get("DATA_DIR")) or "data").absolute(),  # once, at start-up
            feed_sources_path=Path(sources) if sources else None,
            admin_token=first_nonempty(e.get("PATCH_ADMIN_TOKEN")),
            discord_enabled=env_flag(e.get("DISCORD_OUTPUT_ENABLED")),
            discord_webhook_url=first_nonempty(e.get("DISCORD_WEBHOOK_URL")),
            discord_notify_events=events,
            backend_url=first_nonempty(
                e.get("PATCH_WORKSPACE_BACKEND_URL"), e.get("PATCH_FLOW_BACKEND_URL"), e.get("PATCH_FLOW_DISPATCH_URL")
            ),
            backend_secret=first_nonempty(e.get("PATCH_WORKSPACE_BACKEND_SECRET"), e.get("PATCH_FLOW_DISPATCH_SECRET")),
            workspace_mode=first_nonempty(e.get("CODEX_WORKSPACE_MODE")),
            fetch_deadline=deadline,
            max_feed_bytes=max_bytes,
            min_poll_seconds=_positive(e, "PATCHMOI_MIN_POLL_SECONDS", 30.0),
            access_log=AccessLog.parse(e.get("PATCHMOI_ACCESS_LOG")),
            database_url=first_nonempty(e.get("PATCHMOI_DATABASE_URL")),
            env=e,
        )

    def with_overrides(self, **overrides: Any) -> Settings:
        """Apply CLI flags; `None` means "flag not given"."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if "data_dir" in given:
            given["data_dir"] = Path(given["data_dir"]).absolute()
        if "feed_sources_path" in given:
            given["feed_sources_path"] = Path(given["feed_sources_path"])
        return replace(self, **given)

    def describe(self) -> dict[str, Any]:
        """A secret-free view for `status`, `doctor` and health."""
        return {
            "host": self.host,
            "port": self.port,
            "dataDir": str(self.data_dir),
            "feedSourcesPath": str(self.feed_sources_path) if self.feed_sources_path else None,
            "adminToken": "set" if self.admin_token else "unset",
            "discord": {
                "enabled": self.discord_enabled,
                "webhook": "set" if self.discord_webhook_url else "unset",
                "notifyEvents": list(self.discord_notify_events),
            },
            "backendUrl": redact_url(self.backend_url) if self.backend_url else None,
            "backendSecret": "set" if self.backend_secret else "unset",
            "workspaceMode": self.workspace_mode,
            "database": _shown_database(self.database_url) if self.database_url else None,
        }


def _shown_database(url: str) -> str:
    from patchmoi.core.store import shown_database_url  # (the store imports this module)

    return shown_database_url(url)


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    text = first_nonempty(env.get(name))
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        from patchmoi.core.errors import ConfigError

        raise ConfigError(f"{name} must be a positive number, got {text!r}")
    return value


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1): binding there needs no admin token."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """Drop userinfo and query (tokens hide there) before a URL reaches a log or record."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = "<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
