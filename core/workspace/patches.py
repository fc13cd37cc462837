"""Patch-branch tools (spec §8): doctor, list, capture, setup fork."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.workspace.forkconfig import ForkConfig, load_fork_config
from core.workspace.gitrun import GitRunner


def git_dir_state(git: GitRunner) -> dict[str, bool]:
    """Is a rebase, cherry-pick, merge or revert in progress in this checkout?"""
    git_dir = Path(git.out("rev-parse", "--absolute-git-dir"))
    return {
        "rebase": (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists(),
        "cherryPick": (git_dir / "CHERRY_PICK_HEAD").exists() or (git_dir / "sequencer").exists(),
        "merge": (git_dir / "MERGE_HEAD").exists(),
        "revert": (git_dir / "REVERT_HEAD").exists(),
    }


def list_patches(git: GitRunner, config: ForkConfig) -> list[dict[str, str]]:
    """Patch branches under the prefix, sorted by name: the order they are applied in."""
    out = git.out("for-each-ref", "--sort=refname", "--format=%(refname)\t%(objectname)\t%(subject)",
                  f"refs/heads/{config.patch_prefix}")
    patches = []
    for line in out.splitlines():
        ref, sha, subject = [*line.split("\t", 2), "", ""][:3]
        patches.append({"name": ref[len("refs/heads/"):], "sha": sha, "subject": subject})
    return patches


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
    if not patches:
        issues.append(f"no {config.patch_prefix} branches found")
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
        "patches": patches,
        "tags": tags.split(),
        "clean": clean,
        "ready": not issues,
        "issues": issues,
    }


def capture(repo: Path, name: str, source: str, *, base: str | None = None, message: str | None = None,
            force: bool = False, config: ForkConfig | None = None) -> dict[str, Any]:
    """Make `name` one commit on `base` whose tree is `source`'s tree (spec §8 `patch capture`)."""
    config = config or load_fork_config(repo)
    git = GitRunner(repo)
    if not name.startswith(config.patch_prefix):
        return {"status": "failed", "error": f"patch branch must start with {config.patch_prefix!r}"}
    if not is_clean(git):
        return {"status": "blocked", "error": "working tree has local changes or untracked files"}
    base_ref = base or config.target_branch
    base_sha = git.rev(base_ref)
    source_sha = git.rev(source)
    if base_sha is None or source_sha is None:
        return {"status": "failed", "error": f"cannot resolve {base_ref if base_sha is None else source}"}
    existing = git.rev(f"refs/heads/{name}")
    if existing and not force:
        return {"status": "failed", "error": f"{name} exists; pass --force to replace it"}
    tree = git.out("rev-parse", f"{source_sha}^{{tree}}")
    if tree == git.out("rev-parse", f"{base_sha}^{{tree}}"):
        return {"status": "skipped", "message": f"{source} does not differ from {base_ref}"}
    msg = message or "patch: " + name[len(config.patch_prefix):].replace("-", " ")
    commit = git.out("commit-tree", tree, "-p", base_sha, "-m", msg)
    git.run("update-ref", f"refs/heads/{name}", commit)
    return {"status": "changed", "branch": name, "sha": commit, "base": base_sha, "commits": 1}


def setup_fork(repo: Path, upstream_url: str | None, *, apply: bool = False,
               config: ForkConfig | None = None) -> dict[str, Any]:
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
        "path": str(repo), "branch": branch, "branchMatchesTarget": branch == config.target_branch,
        "origin": git.try_out("remote", "get-url", config.fork_remote),
        "upstream": git.try_out("remote", "get-url", config.upstream_remote),
        "upstreamRemote": config.upstream_remote, "upstreamUrl": url, "addedUpstream": added, "clean": clean,
        "ready": not issues, "issues": issues,
    }
