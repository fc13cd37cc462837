"""Housekeeping: prune rebuild worktrees and old candidate refs by a retention policy (`patchmoi gc`).

Kept: the worktree of any event with an open or running attempt (someone may be resolving in it), the
candidate ref of any attempt that waits for adoption (`ready`), and the newest `[candidate] keep` candidate
refs of each fork. Everything else (worktrees of adopted, resolved and superseded attempts, older
candidates) is removed. Runs after each adoption and each local attempt, and by hand with `patchmoi gc`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from patchmoi.core.attempt_states import derive_states
from patchmoi.core.errors import ConfigError
from patchmoi.core.store import Store
from patchmoi.core.workspace.forkconfig import load_fork_config
from patchmoi.core.workspace.gitrun import GitRunner

KEEP_WORKTREE_STATES = frozenset({"open", "running"})


def collect(store: Store, *, dry_run: bool = False, workspace: Path | None = None) -> dict[str, Any]:
    """Prune what the policy allows; with `workspace`, only that fork's. Returns what was (or would be) removed."""
    attempts = store.all_attempts()
    states = derive_states(attempts)
    busy_events = {str(a.get("eventId")) for a in attempts if states.get(str(a.get("id"))) in KEEP_WORKTREE_STATES}
    known_events = {str(a.get("eventId")) for a in attempts}
    report: dict[str, Any] = {"dryRun": dry_run, "worktrees": [], "candidateRefs": [], "errors": []}
    work_root = store.data_dir / "worktrees"
    if work_root.is_dir():
        for state_path in sorted(work_root.glob("*.json")):
            _prune_worktree(state_path, busy_events, known_events, workspace, dry_run, report)
    forks = {Path(str(a["workspace"])) for a in attempts if isinstance(a.get("workspace"), str)}
    if workspace is not None:
        forks = {f for f in forks if f == workspace} or {workspace}
    waiting = {
        (str(ref.get("ref")), str(ref.get("sha")))
        for a in attempts
        if states.get(str(a.get("id"))) == "ready"
        for ref in a.get("candidateRefs") or []
    }
    newest_first = sorted(attempts, key=lambda a: str(a.get("createdAt") or ""), reverse=True)
    for fork in sorted(forks):
        ranked = [
            str(ref.get("ref"))
            for a in newest_first
            if a.get("workspace") == str(fork)
            for ref in a.get("candidateRefs") or []
        ]
        _prune_candidates(fork, waiting, ranked, dry_run, report)
    return report


def _prune_worktree(
    state_path: Path, busy: set[str], known: set[str], workspace: Path | None, dry_run: bool, report: dict[str, Any]
) -> None:
    """Remove one rebuild worktree unless its event still needs it (or it is not an event's: `patch rebuild`)."""
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        state = {}
    key = str(state.get("key"))
    path = Path(str(state.get("worktree") or state_path.with_suffix("")))
    repo = state.get("repo")
    if key in busy or key not in known or (workspace is not None and repo and Path(str(repo)) != workspace):
        return
    report["worktrees"].append({"eventId": key, "path": str(path)})
    if dry_run:
        return
    if path.exists():
        common = GitRunner(path).try_out("rev-parse", "--path-format=absolute", "--git-common-dir")
        if common:
            GitRunner(Path(common)).run("worktree", "remove", "--force", str(path), check=False)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        if common:
            GitRunner(Path(common)).run("worktree", "prune", check=False)
    state_path.unlink(missing_ok=True)


def _prune_candidates(
    fork: Path, waiting: set[tuple[str, str]], ranked: list[str], dry_run: bool, report: dict[str, Any]
) -> None:
    """Keep the newest candidates (by their attempts' creation, in ms; then by commit date) and waiting ones."""
    if not fork.is_dir():
        return
    try:
        config = load_fork_config(fork)
    except ConfigError as exc:
        report["errors"].append(str(exc))
        return
    git = GitRunner(fork)
    listing = git.try_out(
        "for-each-ref", "--sort=-creatordate", "--format=%(refname) %(objectname)", config.candidate_prefix
    )
    if listing is None:
        return
    refs = [tuple(line.split(" ", 1)) for line in listing.splitlines() if " " in line]
    rank = {ref: i for i, ref in reversed(list(enumerate(ranked)))}
    refs.sort(key=lambda r: rank.get(r[0], len(ranked)))  # stable: unranked keep their commit-date order
    doomed = [
        (ref, sha) for i, (ref, sha) in enumerate(refs) if i >= config.keep_candidates and (ref, sha) not in waiting
    ]
    for ref, sha in doomed:
        report["candidateRefs"].append({"workspace": str(fork), "ref": ref, "sha": sha})
    if doomed and not dry_run:
        git.run("update-ref", "--stdin", input="".join(f"delete {ref} {sha}\n" for ref, sha in doomed), check=False)
