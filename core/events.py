"""Deterministic ids and payloads: feed signals, fork-sync jobs and flow events (spec §2 and §3)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit

from core.feeds.parse import FeedEntry
from core.records import FeedJob, FeedSignal, FlowEvent, now_iso
from core.sources import FeedSource

_SHA = re.compile(r"[0-9a-f]{40}", re.IGNORECASE)
_RELEASE_PATH = re.compile(r"/releases/tag/([^/?#]+)")
_GITHUB_TAG_ID = re.compile(r"^tag:github\.com,\d{4}:Repository/[^/]+/(.+)$")


def signal_ref(source: FeedSource, entry: FeedEntry) -> str | None:
    if source.event == "push":
        return f"refs/heads/{source.repo.default_branch}" if source.repo.default_branch else None
    if entry.url:
        match = _RELEASE_PATH.search(urlsplit(entry.url).path)
        if match:
            return unquote(match.group(1))
    if source.provider == "github":
        match = _GITHUB_TAG_ID.match(entry.id)
        if match:
            return match.group(1)
    return entry.title or None


def signal_sha(entry: FeedEntry) -> str | None:
    match = _SHA.search(entry.url) if entry.url else _SHA.search(entry.id)
    return match.group(0) if match else None


def build_signal(source: FeedSource, entry: FeedEntry, received_at: str | None = None) -> FeedSignal:
    raw: dict[str, Any] = {
        "id": entry.id, "title": entry.title, "url": entry.url, "author": entry.author,
        "publishedAt": entry.published_raw,
    }
    raw.update(entry.extra)
    signal = FeedSignal(
        source_id=source.id,
        provider=source.provider,
        event=source.event,
        entry_id=entry.id,
        title=entry.title,
        url=entry.url,
        author=entry.author,
        published_at=entry.published_at,
        repo=source.repo.to_dict(),
        ref=signal_ref(source, entry),
        sha=signal_sha(entry),
        target=dict(source.target.raw) if source.target else None,
        raw={k: v for k, v in raw.items() if v is not None},
        received_at=received_at or now_iso(),
    )
    if entry.error:
        signal.extra["warning"] = entry.error
    return signal


def build_job(source: FeedSource, signal: FeedSignal) -> FeedJob | None:
    """A fork_sync job for release signals of `fork_sync` targets (kept for compatibility; nothing consumes it)."""
    target = source.target
    if target is None or target.mode != "fork_sync" or source.event != "release":
        return None
    return FeedJob(
        id=f"{source.provider}:{source.id}:{signal.entry_id}:fork_sync",
        kind="fork_sync",
        source_id=source.id,
        provider=source.provider,
        upstream_repo_full_name=source.repo.full_name,
        target_repo_full_name=target.repo_full_name,
        branch=target.branch,
        upstream_ref=signal.ref,
        upstream_sha=signal.sha,
        entry_id=signal.entry_id,
        url=signal.url,
        created_at=now_iso(),
    )


def flow_event_id(source_id: str, entry_id: str, event_type: str) -> str:
    return f"patch:{source_id}:{entry_id}:{event_type}"


def build_flow_event(source: FeedSource, signal: FeedSignal) -> FlowEvent | None:
    target = source.target
    if target is None or not target.is_workflow or not target.event_type:
        return None
    repo = source.repo
    tag = None
    if source.event == "release":
        tag = (signal.ref or "").strip() or signal.title.strip() or None
    payload: dict[str, Any] = {
        "provider": signal.provider,
        "event": signal.event,
        "sourceId": signal.source_id,
        "entryId": signal.entry_id,
        "title": signal.title,
        "url": signal.url,
        "author": signal.author,
        "publishedAt": signal.published_at,
        "repo": repo.full_name,
        "repoOwner": repo.owner,
        "repoName": repo.name,
        "ref": signal.ref,
        "sha": signal.sha,
        "tag": tag,
    }
    if source.provider == "npm" and tag:
        payload["packageName"] = repo.full_name
        payload["version"] = tag
    payload["raw"] = signal.raw
    payload = {k: v for k, v in payload.items() if v is not None}
    payload.update(target.payload)
    return FlowEvent(
        id=flow_event_id(source.id, signal.entry_id, target.event_type),
        type=target.event_type,
        source="patch",
        occurred_at=signal.published_at,
        received_at=now_iso(),
        payload=payload,
    )


# -- helper-built events (CLI): deterministic ids, no occurredAt --------------------------------------------
def upstream_release_event(repo: str, tag: str) -> FlowEvent:
    return FlowEvent(id=f"patch:upstream.release:{repo}:{tag}", type="upstream.release", received_at=now_iso(),
                     payload={"repo": repo, "tag": tag})


def upstream_branch_event(repo: str, ref: str = "refs/heads/main", sha: str | None = None) -> FlowEvent:
    event_id = f"patch:upstream.branch_update:{repo}:{ref}" + (f":{sha}" if sha else "")
    payload: dict[str, Any] = {"repo": repo, "ref": ref}
    if sha:
        payload["sha"] = sha
    return FlowEvent(id=event_id, type="upstream.branch_update", received_at=now_iso(), payload=payload)


def downstream_release_event(package_name: str, version: str, repo: str | None = None) -> FlowEvent:
    payload: dict[str, Any] = {"packageName": package_name, "version": version, "tag": version}
    if repo:
        payload["repo"] = repo
    return FlowEvent(id=f"patch:downstream.release:{package_name}:{version}", type="downstream.release",
                     received_at=now_iso(), payload=payload)


def branch_key(event: dict[str, Any]) -> str | None:
    """Updates of the same upstream branch share this key (so only the newest waiting one is rebuilt)."""
    if event.get("type") != "upstream.branch_update":
        return None
    payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
    assert isinstance(payload, dict)
    ref = payload.get("ref") or payload.get("branch")
    if not ref:
        return None
    return f"{payload.get('sourceId') or '-'}|{payload.get('repo') or '-'}|{ref}"
