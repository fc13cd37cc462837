"""Rebuild a fork's patch stack on a new upstream base, in a dedicated worktree (ARCHITECTURE §4).

The operator's checkout is never touched: the stack is cherry-picked in a worktree under
`DATA_DIR/worktrees/<event>`; success publishes a candidate ref (e.g. `refs/heads/candidate/v1.2.0`) with the
`git range-diff` of old vs new stack. A patch that became empty (merged upstream) is dropped and listed.
On a conflict the optional `conflict_command` runs in the worktree; otherwise the worktree is left with the
cherry-pick in progress and a state file beside it, so a retry of the same event resumes after the
operator resolves (`git add` the files; `git cherry-pick --continue` is optional).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from core.config import redact_url
from core.fsutil import atomic_write, ensure_dir
from core.workspace.forkconfig import ForkConfig, load_fork_config
from core.workspace.gitrun import GitError, GitRunner, RunLog, run_shell, trim
from core.workspace.patches import git_dir_state, is_clean, list_patches


def safe_name(key: str) -> str:
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key)[-80:].strip("._") + "-" + digest


def ref_label(label: str) -> str:
    """A label usable inside a ref name (tags like `v1.2.0` stay as they are)."""
    cleaned = re.sub(r"[^A-Za-z0-9._/-]+", "-", label).strip("-./")
    cleaned = re.sub(r"\.\.+|/\.|\.lock(?=/|$)|//+", "-", cleaned)
    return cleaned or "unnamed"


class Rebuild:
    def __init__(self, repo: Path, work_root: Path, config: ForkConfig | None = None) -> None:
        self.repo = repo
        self.config = config or load_fork_config(repo)
        self.log = RunLog()
        self.git = GitRunner(repo, self.log)
        self.work_root = work_root

    # -- result helpers ----------------------------------------------------------------------------------
    def _result(self, status: str, message: str, **artifacts: Any) -> dict[str, Any]:
        return {"status": status, "message": message,
                "artifacts": {k: v for k, v in artifacts.items() if v is not None}, "log": self.log.entries}

    def run(self, base: str, *, label: str, key: str, kind: str = "tag") -> dict[str, Any]:
        try:
            return self._run(base, label=label, key=key, kind=kind)
        except GitError as exc:
            return self._result("failed", str(exc))

    def _run(self, base: str, *, label: str, key: str, kind: str) -> dict[str, Any]:
        cfg, git = self.config, self.git
        if git.try_out("rev-parse", "--show-toplevel") is None:
            return self._result("blocked", f"{self.repo} is not a git repository")
        if cfg.allow_fetch:
            args = ["fetch", cfg.upstream_remote]
            args += ["--tags"] if cfg.fetch_tags else []
            args += ["--prune"] if cfg.prune else []
            args += ["--prune-tags"] if cfg.prune_tags else []
            fetched = git.run(*args, check=False, timeout=300)
            if not fetched.ok:
                return self._result("blocked", f"git fetch {cfg.upstream_remote} failed: {trim(fetched.output, 300)}")
        busy = [k for k, v in git_dir_state(git).items() if v]
        if busy:
            return self._result("blocked", f"{' and '.join(busy)} in progress in {self.repo}; finish or abort it first")
        if not is_clean(git):
            return self._result("blocked", f"{self.repo} has local changes or untracked files; commit or stash them")
        base_sha = (git.rev(f"refs/tags/{base}") if kind == "tag" else None) or git.rev(base)
        if base_sha is None:
            hint = "" if cfg.allow_fetch else " (fetch it first, or set [fetch] allowFetch = true)"
            return self._result("blocked", f"cannot resolve upstream {kind} {base!r}{hint}")
        patches = list_patches(git, cfg)
        if not patches:
            return self._result("blocked", f"no {cfg.patch_prefix} branches found in {self.repo}")
        target_sha = git.rev(f"refs/heads/{cfg.target_branch}")
        common = {"upstreamKind": kind, "upstreamLabel": label, "upstreamSha": base_sha, "beforeSha": target_sha}

        ensure_dir(self.work_root)
        name = safe_name(key)
        path = self.work_root / name
        state_path = self.work_root / f"{name}.json"
        state = self._load_state(state_path)
        plan = [[p["name"], p["sha"]] for p in patches]
        resuming = bool(state) and path.is_dir() and state.get("base") == base_sha and state.get("plan") == plan
        if not resuming:
            self._discard(path, state_path)
            git.run("worktree", "add", "--detach", str(path), base_sha)
            state = {"key": key, "base": base_sha, "plan": plan, "next": 0, "applied": [], "dropped": [],
                     "resolved": [], "worktree": str(path)}
        wt = git.at(path)

        if state.get("pending"):
            outcome = self._resume_pending(wt, state)
            if outcome is not None:
                return self._intervene(outcome, wt, state, state_path, common)
        for index in range(int(state["next"]), len(plan)):
            patch_name, sha = plan[index]
            picked = wt.run("cherry-pick", sha, check=False)
            if picked.ok:
                state["applied"].append(patch_name)
            else:
                unmerged = self._unmerged(wt)
                if not unmerged and self._picking(wt):
                    wt.run("cherry-pick", "--skip")
                    state["dropped"].append(patch_name)  # empty now: upstream already has it
                elif unmerged:
                    state["pending"] = patch_name
                    state["next"] = index
                    message = self._try_conflict_command(wt, state)
                    if message is not None:
                        return self._intervene(message, wt, state, state_path, common)
                else:
                    return self._result("failed", f"cherry-pick of {patch_name} failed: {trim(picked.output, 300)}",
                                        **common)
            state["next"] = index + 1
            state.pop("pending", None)
            self._save_state(state_path, state)

        checks = []
        for command in self.config.verify_commands:
            result = run_shell(command, path, self.config.verify_timeout, self.log)
            checks.append({"command": command, "exitCode": result.exit_code})
            if not result.ok:
                self._save_state(state_path, state)
                return self._result(
                    "needs_intervention",
                    f"verify command `{command}` failed ({result.exit_code}) on the rebuilt stack: "
                    f"{trim(result.output, 600)}",
                    **common, applied=state["applied"], dropped=state["dropped"], checks=checks,
                    worktree=str(path), failedCheck=command, checkOutput=trim(result.output),
                )
        return self._publish(wt, path, state_path, state, label, common, checks)

    # -- conflicts ---------------------------------------------------------------------------------------
    def _unmerged(self, wt: GitRunner) -> list[str]:
        return [x for x in wt.out("diff", "--name-only", "--diff-filter=U").splitlines() if x]

    def _picking(self, wt: GitRunner) -> bool:
        return bool(git_dir_state(wt)["cherryPick"])

    def _continue(self, wt: GitRunner, state: dict[str, Any]) -> None:
        """Finish an in-progress cherry-pick whose conflicts are resolved (empty → dropped)."""
        wt.run("add", "-A")
        done = wt.run("-c", "core.editor=true", "cherry-pick", "--continue", check=False)
        if not done.ok and self._picking(wt) and not self._unmerged(wt):
            wt.run("cherry-pick", "--skip")
            state["dropped"].append(state["pending"])
        elif not done.ok:
            raise GitError(done)
        else:
            state["applied"].append(state["pending"])

    def _try_conflict_command(self, wt: GitRunner, state: dict[str, Any]) -> str | None:
        """Run `conflict_command`; None when it resolved the conflict (the pick is then continued)."""
        files = self._unmerged(wt)
        command = self.config.conflict_command
        if not command:
            return (f"patch {state['pending']} conflicts with the new upstream base in {', '.join(files)}; resolve "
                    f"in {wt.cwd}, `git add` the files, then retry")
        result = run_shell(command, wt.cwd, self.config.conflict_timeout, self.log)
        if result.ok and not self._unmerged_after_add(wt):
            self._continue(wt, state)
            state.setdefault("resolved", []).append({"patch": state["pending"], "by": command})
            state.pop("pending", None)
            return None
        return (f"patch {state['pending']} conflicts in {', '.join(files)}; conflict command `{command}` did not "
                f"resolve it (exit {result.exit_code}): {trim(result.output, 300)}")

    def _unmerged_after_add(self, wt: GitRunner) -> list[str]:
        """Files still holding conflict markers; the rest are staged."""
        marked = [f for f in self._unmerged(wt) if _has_markers(wt.cwd / f)]
        if not marked:
            wt.run("add", "-A")
        return marked

    def _resume_pending(self, wt: GitRunner, state: dict[str, Any]) -> str | None:
        pending = state["pending"]
        if self._picking(wt):
            still = self._unmerged(wt)
            if still:
                return (f"patch {pending} still has unresolved files: {', '.join(still)}; resolve them in {wt.cwd}, "
                        "`git add` them, then retry")
            self._continue(wt, state)
        else:
            head_subject = wt.out("log", "-1", "--format=%H")
            if head_subject == state.get("headAtConflict"):
                return None  # aborted by hand: the loop re-applies the patch
            state["applied"].append(pending)  # committed by hand
        state["resolved"].append({"patch": pending, "by": "operator"})
        state["next"] = int(state["next"]) + 1
        state.pop("pending", None)
        return None

    def _intervene(self, message: str, wt: GitRunner, state: dict[str, Any], state_path: Path,
                   common: dict[str, Any]) -> dict[str, Any]:
        info = self._conflict_info(wt, state)
        self._save_state(state_path, state)
        return self._result("needs_intervention", message, **common, **info)

    def _conflict_info(self, wt: GitRunner, state: dict[str, Any]) -> dict[str, Any]:
        state["headAtConflict"] = wt.out("rev-parse", "HEAD")
        return {"failedPatch": state.get("pending"), "unmergedFiles": self._unmerged(wt), "worktree": str(wt.cwd),
                "applied": state["applied"], "dropped": state["dropped"],
                "statusOutput": trim(wt.out("status", "--short"), 2000)}

    # -- success -----------------------------------------------------------------------------------------
    def _publish(self, wt: GitRunner, path: Path, state_path: Path, state: dict[str, Any], label: str,
                 common: dict[str, Any], checks: list[dict[str, Any]]) -> dict[str, Any]:
        cfg, git = self.config, self.git
        after = wt.out("rev-parse", "HEAD")
        target_sha = common.get("beforeSha")
        target_tree = git.try_out("rev-parse", f"{target_sha}^{{tree}}") if target_sha else None
        changed = wt.out("rev-parse", "HEAD^{tree}") != target_tree
        ref = cfg.candidate_prefix + ref_label(label)
        git.run("update-ref", ref, after)
        range_diff = None
        if target_sha:
            merge_base = git.try_out("merge-base", target_sha, state["base"])
            if merge_base:
                rd = git.run("range-diff", "--no-color", f"{merge_base}..{target_sha}", f"{state['base']}..{after}",
                             check=False)
                range_diff = trim(rd.stdout, 20000) if rd.ok else None
        pushed = False
        remote = "local"
        if cfg.push:
            push = git.run("push", "--force-with-lease", cfg.push_remote, f"{after}:{ref}", check=False, timeout=300)
            pushed, remote = push.ok, cfg.push_remote
        origin = git.try_out("remote", "get-url", cfg.fork_remote)
        candidate = {"kind": "branch", "ref": ref, "sha": after, "remote": remote, "pushed": pushed}
        if origin:
            candidate["repo"] = redact_url(origin) if "://" in origin else origin
        self._discard(path, state_path)
        n = len(state["applied"])
        if changed:
            message = f"rebuilt {n} patch(es) on {label}; candidate {ref} differs from {cfg.target_branch}"
        else:
            message = f"{cfg.target_branch} already matches {n} patch(es) on {label}; candidate {ref}"
        if state["dropped"]:
            message += f"; dropped (merged upstream): {', '.join(state['dropped'])}"
        return self._result(
            "changed" if changed else "completed", message, **common, afterSha=after, applied=state["applied"],
            dropped=state["dropped"], resolved=state.get("resolved") or None, checks=checks, rangeDiff=range_diff,
            candidateRefs=[candidate],
        )

    # -- state -------------------------------------------------------------------------------------------
    def _load_state(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_state(self, path: Path, state: dict[str, Any]) -> None:
        atomic_write(path, json.dumps(state, indent=2).encode())

    def _discard(self, path: Path, state_path: Path) -> None:
        if path.exists():
            self.git.run("worktree", "remove", "--force", str(path), check=False)
        self.git.run("worktree", "prune", check=False)
        state_path.unlink(missing_ok=True)


def _has_markers(path: Path) -> bool:
    try:
        text = path.read_bytes()
    except OSError:
        return False
    return b"\n<<<<<<< " in b"\n" + text or b"\n>>>>>>> " in text
