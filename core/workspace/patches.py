"""Patch-branch tools (spec §8): doctor, list, capture, setup fork."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from patchmoi.core.errors import PatchmoiError
from patchmoi.core.records import AttemptStatus
from patchmoi.core.workspace.forkconfig import ForkConfig, load_fork_config
from patchmoi.core.workspace.gitrun import GitRunner


def git_dir_state(git: GitRunner) -> dict[str, bool]:
    """Is a rebase, cherry-pick, merge or revert in progress in this checkout?"""
    git_dir = Path(git.out("rev-parse", "--absolute-git-dir"))
    return {
        "rebase": (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists(),
        "cherryPick": (git_dir / "CHERRY_PICK_HEAD").exists() or (git_dir / "sequencer").exists(),
        "merge": (git_dir / "MERGE_HEAD").exists(),
        "revert": (git_dir / "REVERT_HEAD").exists(),
    }


def natural_key(name: str) -> list[Any]:
    """`patch/9-y` before `patch/10-x`: digit runs compare as numbers, the rest as text."""
    return [(0, int(part), part) if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def list_patches(git: GitRunner, config: ForkConfig) -> list[dict[str, Any]]:
    """Patch branches under the prefix in natural order (`patch/9` before `patch/10`): the order they apply in."""
    out = git.out("for-each-ref", "--format=%(refname)\t%(objectname)\t%(subject)", f"refs/heads/{config.patch_prefix}")
    patches = []
    for line in out.splitlines():
        ref, sha, subject = [*line.split("\t", 2), "", ""][:3]
        patches.append({"name": ref[len("refs/heads/") :], "sha": sha, "subject": subject})
    return sorted(patches, key=lambda p: natural_key(p["name"]))


class SeriesError(PatchmoiError):
    """The patch series cannot be rebuilt as it stands (a merge commit inside a patch)."""

    code = "patch_series_invalid"


def patch_series(git: GitRunner, config: ForkConfig, base: str) -> list[dict[str, Any]]:
    """Every patch with all of its commits, oldest first, as they will be applied on `base`.

    Branch mode: a patch is a `patch/*` branch; its commits are those reachable from its tip but not from
    `base`, the upstream remote's refs, or an earlier patch's tip (so stacked branches, as `adopt` leaves
    them, and independent branches both work). Linear mode: each commit of the target branch above the
    upstream is one patch. One `git log` reads the whole graph; merge commits are refused by name.
    """
    if config.series == "linear":
        tips = [{"name": config.target_branch, "sha": git.out("rev-parse", f"refs/heads/{config.target_branch}")}]
    else:
        tips = list_patches(git, config)
    if not tips:
        return []
    out = git.out(
        "log",
        "--topo-order",
        "--reverse",
        "--format=%H%x00%P%x00%an <%ae>%x00%s",
        *[t["sha"] for t in tips],
        "--not",
        base,
        f"--remotes={config.upstream_remote}",
        "--",
    )
    commits: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for line in out.splitlines():
        sha, parents, author, subject = [*line.split("\0", 3), "", "", ""][:4]
        commits[sha] = {"sha": sha, "parents": parents.split(), "author": author, "subject": subject}
        order.append(sha)
    merges = [c for c in commits.values() if len(c["parents"]) > 1]
    if merges:
        m = merges[0]
        raise SeriesError(
            f"merge commit {m['sha'][:12]} ({m['subject']!r}) inside the patch series; patchmoi "
            "rebuilds linear patches only: rebase the patch branch to drop the merge"
        )
    position = {sha: i for i, sha in enumerate(order)}
    if config.series == "linear":
        return [
            {"name": f"{c['sha'][:12]} {c['subject']}", "tip": c["sha"], "commits": [_brief(c)]}
            for c in (commits[s] for s in order)
        ]
    taken: set[str] = set()
    series = []
    for tip in tips:
        mine: list[str] = []
        stack = [tip["sha"]]
        while stack:
            sha = stack.pop()
            if sha in commits and sha not in taken:
                taken.add(sha)
                mine.append(sha)
                stack.extend(commits[sha]["parents"])
        mine.sort(key=position.__getitem__)
        series.append({"name": tip["name"], "tip": tip["sha"], "commits": [_brief(commits[s]) for s in mine]})
    return series


def _brief(commit: dict[str, Any]) -> dict[str, str]:
    return {"sha": commit["sha"], "subject": commit["subject"], "author": commit["author"]}


def is_clean(git: GitRunner) -> bool:
    return git.out("status", "--porcelain", "--untracked-files=normal") == ""


def doctor(repo: Path, config: ForkConfig | None = None) -> dict[str, Any]:
    config = config or load_fork_config(repo)
    git = GitRunner(repo)
    if git.try_out("rev-parse", "--show-toplevel") is None:
        return {"path": str(repo), "ready": False, "issues": [f"{repo} is not a git repository"]}
    from git import Repo  # imported here: GitPython costs ~50 ms to import, and only doctor needs it

    remotes = [remote.name for remote in Repo(repo).remotes]
    issues = []
    if config.fork_remote not in remotes:
        issues.append(f"missing {config.fork_remote} remote")
    if config.upstream_remote not in remotes:
        issues.append(f"missing {config.upstream_remote} remote")
    upstream_sha = git.rev(config.upstream_ref)
    if upstream_sha is None:
        issues.append(f"missing {config.upstream_ref}; run git fetch {config.upstream_remote} {config.upstream_branch}")
    target_sha = git.rev(f"refs/heads/{config.target_branch}")
    if target_sha is None:
        issues.append(f"missing {config.target_branch} branch")
    patches = list_patches(git, config)
    if not patches and config.series == "branches":
        issues.append(f"no {config.patch_prefix} branches found")
    commits: dict[str, int] = {}
    if upstream_sha is not None and (patches or config.series == "linear") and target_sha is not None:
        try:
            commits = {p["name"]: len(p["commits"]) for p in patch_series(git, config, upstream_sha)}
        except SeriesError as exc:
            issues.append(str(exc))
    for patch in patches:
        patch["commits"] = commits.get(patch["name"])
    clean = is_clean(git)
    if not clean:
        issues.append("working tree has local changes or untracked files")
    in_progress = [k for k, v in git_dir_state(git).items() if v]
    if in_progress:
        issues.append(f"{', '.join(in_progress)} in progress")
    tags = git.out("for-each-ref", "--sort=-creatordate", "--count=20", "--format=%(refname:short)", "refs/tags")
    return {
        "path": str(repo),
        "config": str(config.path) if config.path else None,
        "remotes": remotes,
        "upstreamRef": config.upstream_ref,
        "upstreamSha": upstream_sha,
        "targetBranch": config.target_branch,
        "targetSha": target_sha,
        "series": config.series,
        "patches": patches,
        "tags": tags.split(),
        "clean": clean,
        "ready": not issues,
        "issues": issues,
    }


def capture(
    repo: Path,
    name: str,
    source: str,
    *,
    base: str | None = None,
    message: str | None = None,
    force: bool = False,
    config: ForkConfig | None = None,
) -> dict[str, Any]:
    """Make `name` one commit on `base` whose tree is `source`'s tree (spec §8 `patch capture`)."""
    config = config or load_fork_config(repo)
    git = GitRunner(repo)
    if not name.startswith(config.patch_prefix):
        return {"status": AttemptStatus.FAILED, "error": f"patch branch must start with {config.patch_prefix!r}"}
    if not is_clean(git):
        return {"status": AttemptStatus.BLOCKED, "error": "working tree has local changes or untracked files"}
    base_ref = base or config.target_branch
    base_sha = git.rev(base_ref)
    source_sha = git.rev(source)
    if base_sha is None or source_sha is None:
        return {"status": AttemptStatus.FAILED, "error": f"cannot resolve {base_ref if base_sha is None else source}"}
    existing = git.rev(f"refs/heads/{name}")
    if existing and not force:
        return {"status": AttemptStatus.FAILED, "error": f"{name} exists; pass --force to replace it"}
    tree = git.out("rev-parse", f"{source_sha}^{{tree}}")
    if tree == git.out("rev-parse", f"{base_sha}^{{tree}}"):
        return {"status": AttemptStatus.SKIPPED, "message": f"{source} does not differ from {base_ref}"}
    msg = message or "patch: " + name[len(config.patch_prefix) :].replace("-", " ")
    commit = git.out("commit-tree", tree, "-p", base_sha, "-m", msg)
    git.run("update-ref", f"refs/heads/{name}", commit)
    return {"status": AttemptStatus.CHANGED, "branch": name, "sha": commit, "base": base_sha, "commits": 1}


def setup_fork(
    repo: Path, upstream_url: str | None, *, apply: bool = False, config: ForkConfig | None = None
) -> dict[str, Any]:
    config = config or load_fork_config(repo)
    git = GitRunner(repo)
    remotes = git.out("remote").split()
    url = upstream_url or config.upstream_url
    added = False
    issues = []
    if config.upstream_remote not in remotes:
        if apply and url:
            git.run("remote", "add", config.upstream_remote, url)
            added = True
        elif not url:
            issues.append(f"missing {config.upstream_remote} remote and no --upstream-url to add it")
        else:
            issues.append(f"missing {config.upstream_remote} remote (run with --apply to add {url})")
    branch = git.try_out("symbolic-ref", "--short", "HEAD")
    clean = is_clean(git)
    if not clean:
        issues.append("working tree has local changes or untracked files")
    return {
        "path": str(repo),
        "branch": branch,
        "branchMatchesTarget": branch == config.target_branch,
        "origin": git.try_out("remote", "get-url", config.fork_remote),
        "upstream": git.try_out("remote", "get-url", config.upstream_remote),
        "upstreamRemote": config.upstream_remote,
        "upstreamUrl": url,
        "addedUpstream": added,
        "clean": clean,
        "ready": not issues,
        "issues": issues,
    }
