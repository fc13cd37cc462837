"""`patchmoi doctor`: PASS / WARN / FAIL checks of everything a deployment depends on."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchmoi.core.config import Settings, is_loopback
from patchmoi.core.dispatch.selection import select_backend
from patchmoi.core.dispatch.transports import backend_for_url
from patchmoi.core.errors import ConfigError, PatchmoiError
from patchmoi.core.recovery import recovery_report
from patchmoi.core.sources import FeedSource, load_sources
from patchmoi.core.store import Store, store_for
from patchmoi.core.workspace.flows import doctor_findings as flow_findings
from patchmoi.core.workspace.steps import reads_flows


@dataclass(frozen=True)
class Check:
    status: str  # PASS | WARN | FAIL
    name: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"status": self.status, "name": self.name, "detail": self.detail}


def run_checks(settings: Settings, *, timeout: float = 5.0) -> list[Check]:
    checks: list[Check] = []
    add = checks.append

    sources: list[FeedSource] = []
    if settings.feed_sources_path is None:
        add(Check("WARN", "feed sources", "FEED_SOURCES_PATH is not set: nothing will be polled"))
    else:
        try:
            sources = load_sources(settings.feed_sources_path)
            add(Check("PASS", "feed sources", f"{settings.feed_sources_path}: {len(sources)} valid source(s)"))
        except ConfigError as exc:
            add(Check("FAIL", "feed sources", str(exc)))

    data = Path(settings.data_dir)
    if settings.database_url:
        _database_checks(settings, add)
    elif not data.exists():
        add(Check("WARN", "data dir", f"{data} does not exist yet (it is created on first write)"))
    elif not os.access(data, os.W_OK):
        add(Check("FAIL", "data dir", f"{data} is not writable by this user"))
    else:
        loose = [p.name for p in data.iterdir() if p.is_file() and stat.S_IMODE(p.stat().st_mode) & 0o077]
        if loose:
            add(Check("WARN", "data dir", f"{data}: readable by others: {', '.join(sorted(loose)[:5])} (chmod 600)"))
        else:
            add(Check("PASS", "data dir", f"{data} exists, writable, files private"))
        health = Store(data).health()
        if health["skippedLines"] or health["quarantinedBytes"]:
            damaged = [
                f"{name} ({info['skippedLines']} bad lines, {info['quarantinedBytes']} bytes quarantined)"
                for name, info in health["files"].items()
                if info["skippedLines"] or info["quarantinedBytes"]
            ]
            add(Check("WARN", "store", "damage skipped by readers: " + "; ".join(damaged)))
        else:
            add(Check("PASS", "store", f"{sum(f['records'] for f in health['files'].values())} records, no damage"))
        if health.get("stateProblem"):
            add(Check("WARN", "feed state", str(health["stateProblem"])))
        _recovery_check(Store(data), add)

    git = shutil.which("git")
    if git is None:
        add(Check("FAIL", "git", "git is not on PATH: the local runner cannot rebuild patch stacks"))
    else:
        version = subprocess.run([git, "--version"], capture_output=True, text=True).stdout.strip()
        add(Check("PASS", "git", version))

    for source in sources:
        target = source.target
        if target is None or not target.is_workflow:
            continue
        try:
            backend = select_backend(target, settings.env)
        except ConfigError as exc:
            add(Check("FAIL", f"backend {source.id}", str(exc)))
            continue
        for finding in backend.handler.doctor(backend, timeout):
            add(Check(finding.status, f"{finding.what} {source.id}", finding.detail))
        if backend.runs_here and backend.workspace is not None and backend.workspace.is_dir():
            # the workspace's codex-flows (flow.toml): invalid manifests or schemas, code-mode steps, no `bun`
            try:
                read = reads_flows(backend.workspace)
            except ConfigError as exc:
                add(Check("FAIL", f"flows {source.id}", str(exc)))
                continue
            if read:
                for status, detail in flow_findings(backend.workspace, settings.env):
                    add(Check(status, f"flows {source.id}", detail))
    if settings.backend_url and not any(c.name.startswith("backend ") for c in checks):
        try:
            backend = backend_for_url(settings.backend_url, settings.backend_secret)
        except ConfigError as exc:
            add(Check("FAIL", "backend", str(exc)))
        else:
            for finding in backend.handler.doctor(backend, timeout):
                add(Check(finding.status, finding.what, finding.detail))

    if settings.discord_enabled and not settings.discord_webhook_url:
        add(Check("FAIL", "discord", "DISCORD_OUTPUT_ENABLED is on but DISCORD_WEBHOOK_URL is empty"))
    elif settings.discord_enabled:
        url = settings.discord_webhook_url or ""
        status = "PASS" if url.startswith("https://") else "WARN"
        add(
            Check(
                status,
                "discord",
                f"enabled for {', '.join(settings.discord_notify_events)}"
                + ("" if status == "PASS" else "; the webhook URL is not https"),
            )
        )
    else:
        add(Check("PASS", "discord", "disabled"))

    if not is_loopback(settings.host) and not settings.admin_token:
        add(Check("FAIL", "admin token", f"HOST={settings.host} is not loopback and PATCH_ADMIN_TOKEN is unset"))
    elif settings.admin_token and len(settings.admin_token) < 16:
        add(Check("WARN", "admin token", "PATCH_ADMIN_TOKEN is shorter than 16 characters"))
    else:
        detail = "set" if settings.admin_token else f"unset (HOST {settings.host} is loopback)"
        add(Check("PASS", "admin token", detail))
    return checks


def summary(checks: list[Check]) -> dict[str, Any]:
    return {"ok": not any(c.status == "FAIL" for c in checks), "checks": [c.to_dict() for c in checks]}


def _recovery_check(store: Store, add: Callable[[Check], None]) -> None:
    left = recovery_report(store)
    if left["stuckAttempts"] or left["undispatchedEvents"]:
        more = "+" if left["atLeast"] else ""
        add(
            Check(
                "WARN",
                "recovery",
                f"{left['stuckAttempts']} local attempt(s) left started by a stopped process"
                f", {left['undispatchedEvents']}{more} flow event(s) never dispatched: start `patchmoi serve` "
                "or run `patchmoi poll --once` to finish recovery",
            )
        )
    else:
        add(Check("PASS", "recovery", "nothing left behind by a crash"))


def _database_checks(settings: Settings, add: Callable[[Check], None]) -> None:
    """PATCHMOI_DATABASE_URL: the server reachable, the schema current, the feed state readable."""
    try:
        store = store_for(settings)
    except ConfigError as exc:
        add(Check("FAIL", "database", str(exc)))
        return
    try:
        health = store.health()
        if health.get("degraded"):
            add(Check("FAIL", "database", f"{health['location']}: " + "; ".join(map(str, health["degraded"]))))
            return
        records = sum(int(n) for n in (health.get("records") or {}).values())
        add(
            Check(
                "PASS",
                "database",
                f"{health['location']}: PostgreSQL {health.get('serverVersion')}, schema "
                f"{health.get('schemaVersion')}, {records} records",
            )
        )
        if health.get("stateProblem"):
            add(Check("WARN", "feed state", str(health["stateProblem"])))
        _recovery_check(store, add)
    except PatchmoiError as exc:
        add(Check("FAIL", "database", str(exc)))
    finally:
        store.close()
