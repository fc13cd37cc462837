"""Deterministic ids and payloads: feed signals, fork-sync jobs and flow events (spec §2 and §3)."""

from __future__ import annotations

from typing import Any

from patchmoi.core.feeds.entries import FeedEntry
from patchmoi.core.feeds.shapes import commit_sha, feed_branch, release_tag
from patchmoi.core.records import FeedJob, FeedSignal, FlowEvent, now_iso
from patchmoi.core.sources import FeedSource


def entry_tag(source: FeedSource, entry: FeedEntry) -> str | None:
    """The upstream tag of a release entry: as the source knows it (git), from the entry's link or id by the
    host's shape (GitHub, GitLab, Forgejo), or else its title (spec §2)."""
    return entry.tag or release_tag(entry.url, entry.id, source.provider) or entry.title or None


def signal_ref(source: FeedSource, entry: FeedEntry) -> str | None:
    if source.event == "push":
        if entry.ref:
            return entry.ref
        branch = source.repo.default_branch or feed_branch(source.url)
        return f"refs/heads/{branch}" if branch else None
    return entry_tag(source, entry)


def signal_sha(entry: FeedEntry) -> str | None:
    return entry.sha or commit_sha(entry.url, entry.id)


def build_signal(
    source: FeedSource,
    entry: FeedEntry,
    received_at: str | None = None,
    *,
    tag: str | None = None,
    version: str | None = None,
    filtered: str | None = None,
) -> FeedSignal:
    """The signal of one entry. `tag`/`version` come from the source's policy (a registry version mapped by
    `tagTemplate`, or a tag with the template taken off); `filtered` says why the policy turned it down."""
    raw: dict[str, Any] = {
        "id": entry.id,
        "title": entry.title,
        "url": entry.url,
        "author": entry.author,
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
        ref=tag if tag is not None and source.event == "release" else signal_ref(source, entry),
        sha=signal_sha(entry),
        target=dict(source.target.raw) if source.target else None,
        raw={k: v for k, v in raw.items() if v is not None},
        received_at=received_at or now_iso(),
    )
    if version is not None:
        signal.extra["version"] = version
    if filtered is not None:
        signal.extra["filtered"] = filtered
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
    version = signal.extra.get("version")
    if source.kind in ("npm", "pypi") and tag:
        payload["packageName"] = repo.full_name
        payload["version"] = version if isinstance(version, str) else tag
    elif isinstance(version, str) and version != tag:
        payload["version"] = version
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
    return FlowEvent(
        id=f"patch:upstream.release:{repo}:{tag}",
        type="upstream.release",
        received_at=now_iso(),
        payload={"repo": repo, "tag": tag},
    )


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
    return FlowEvent(
        id=f"patch:downstream.release:{package_name}:{version}",
        type="downstream.release",
        received_at=now_iso(),
        payload=payload,
    )


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
