"""The adopt operation, shared by the CLI, the server, the dashboard and `adopt = "clean"` forks.

It finds the attempt (an attempt id, or an event id: its newest successful attempt), reads the rebuild
report of its local run, moves the fork (core.workspace.adopt), and appends the attempt again with an
`adoption` record: who adopted what and when. Attempts are never edited: the latest record per id wins.
"""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from patchmoi.core.attempt_states import SUCCESS
from patchmoi.core.attempts import result_payload
from patchmoi.core.errors import NotFoundError, PatchmoiError
from patchmoi.core.gc import collect
from patchmoi.core.records import AttemptJson, now_iso
from patchmoi.core.store import Kind, Store
from patchmoi.core.workspace.adopt import AdoptRefused, adopt_candidate, already_based
from patchmoi.core.workspace.gitrun import GitError


def default_actor(prefix: str = "cli") -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = os.environ.get("USER") or "unknown"
    return f"{prefix}:{user}"


def find_attempt(store: Store, ident: str) -> AttemptJson:
    """An attempt by id, or the newest successful attempt of an event id."""
    attempt = store.get_attempt(ident)
    if attempt is not None:
        return attempt
    if store.get_event(ident) is None:
        raise NotFoundError(f"no maintenance attempt or flow event with id {ident!r}")
    for candidate in store.list_attempts(event_id=ident, limit=500):
        if candidate.get("status") in SUCCESS and candidate.get("candidateRefs"):
            return candidate
    raise AdoptRefused(f"flow event {ident!r} has no successful attempt with a candidate to adopt")


def rebuild_report(store: Store, attempt: Mapping[str, Any]) -> dict[str, Any]:
    """The artifacts of the attempt's local rebuild (the run that produced its candidate)."""
    for run_id in reversed([str(r) for r in attempt.get("workspaceRunIds") or []]):
        run = store.get_run(run_id)
        payload = result_payload(run) if run else None
        artifacts = payload.get("artifacts") if payload else None
        if isinstance(artifacts, dict) and artifacts.get("afterSha") and artifacts.get("workspace"):
            return artifacts
    where = attempt.get("workspaceBackendUrl")
    if where:
        raise AdoptRefused(
            f"attempt {attempt.get('id')} ran on the workspace backend {where}; adopt its candidate "
            "there (patchmoi adopts the rebuilds of its local runner)"
        )
    raise AdoptRefused(
        f"attempt {attempt.get('id')} has no rebuild report with a candidate (it was not a local "
        "patch-stack rebuild, or it predates adoption support: retry the event)"
    )


def check_adoptable(store: Store, attempt: Mapping[str, Any], *, reviewed: bool) -> dict[str, Any]:
    adoption = attempt.get("adoption")
    if isinstance(adoption, dict):
        raise AdoptRefused(
            f"attempt {attempt.get('id')} was adopted at {adoption.get('adoptedAt')} by {adoption.get('by')}"
        )
    if attempt.get("status") not in SUCCESS:
        raise AdoptRefused(
            f"attempt {attempt.get('id')} is {attempt.get('status')}: only a changed or completed "
            "rebuild has a candidate to adopt"
        )
    artifacts = rebuild_report(store, attempt)
    if not reviewed and already_based(artifacts):
        raise AdoptRefused(
            f"attempt {attempt.get('id')} rebuilt on upstream {str(artifacts.get('upstreamSha'))[:12]}, which the "
            "fork's main already contains: adopting would move main back to an older release (or rewrite it on "
            "the same one); adopt with --reviewed if that is what you want"
        )
    if artifacts.get("needsReview") and not reviewed:
        raise AdoptRefused(
            f"attempt {attempt.get('id')} needs review before adoption: "
            f"{review_reason(artifacts)}; inspect it (`patchmoi show {attempt.get('id')}`), then adopt "
            "with --reviewed"
        )
    return artifacts


def review_reason(artifacts: dict[str, Any]) -> str:
    reasons = []
    by_command = [r for r in artifacts.get("resolved") or [] if r.get("by") == "conflict-command"]
    if by_command:
        reasons.append("the conflict command resolved " + ", ".join(sorted({str(r.get("patch")) for r in by_command})))
    if artifacts.get("reused"):
        reasons.append(
            "a recorded resolution was reused for "
            + ", ".join(sorted({str(r.get("patch")) for r in artifacts["reused"]}))
        )
    if artifacts.get("reapplied"):
        reasons.append("applies again after being dropped as merged upstream: " + ", ".join(artifacts["reapplied"]))
    return "; ".join(reasons) or "flagged by the rebuild"


def adopt(store: Store, ident: str, *, by: str, reason: str | None = None, reviewed: bool = False) -> dict[str, Any]:
    """Adopt the attempt's candidate; returns the attempt as appended (with its `adoption`)."""
    attempt = find_attempt(store, ident)
    artifacts = check_adoptable(store, attempt, reviewed=reviewed)
    refs = attempt.get("candidateRefs") or []
    label = str(refs[-1].get("ref")) if refs else str(artifacts["afterSha"])
    record = adopt_candidate(artifacts, label=label, reflog=f"patchmoi adopt {attempt.get('id')} by {by}")
    record["by"] = by
    if reason:
        record["reason"] = reason
    if reviewed and artifacts.get("needsReview"):
        record["reviewed"] = True
    updated = {**attempt, "adoption": record, "adoptedAt": record["adoptedAt"], "updatedAt": now_iso()}
    updated.pop("adoptionError", None)
    updated.pop("state", None)
    store.append(Kind.ATTEMPTS, updated)
    with contextlib.suppress(PatchmoiError, GitError, OSError):  # housekeeping is best effort; adoption is done
        collect(store, workspace=Path(str(artifacts["workspace"])))
    return updated


def auto_adopt_reason(artifacts: dict[str, Any]) -> str | None:
    """Why a `changed` rebuild is not clean enough to adopt without a person (None: it is)."""
    if artifacts.get("resolved"):
        return "it needed a conflict resolution"
    if artifacts.get("reused") or artifacts.get("reapplied") or artifacts.get("needsReview"):
        return review_reason(artifacts)
    if any(c.get("exitCode") != 0 for c in artifacts.get("checks") or []):
        return "a verify command failed"
    return None
