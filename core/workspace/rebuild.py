"""Rebuild a fork's patch stack on a new upstream base, in a dedicated worktree (ARCHITECTURE §4).

The operator's checkout is never touched (its untracked files never block a rebuild): every commit of every
patch is cherry-picked, in order and in one `git cherry-pick` sequence, in a worktree under
`DATA_DIR/worktrees/<event>`. `git rerere` runs with every pick (its cache is shared by all worktrees of the
fork), so a conflict resolved once, by a person or by the conflict command, is replayed at the next rebuild
that meets it. Each stop of the sequence is classified: a conflict (git reports unmerged paths of any kind),
a commit made empty (merged upstream, or emptied by a resolution), or a conflict rerere resolved.

On a conflict the optional conflict command runs in the worktree; otherwise the worktree is left with the
cherry-pick in progress and a state file beside it, so a retry of the same event resumes after the operator
resolves and `git add`s the files. Success publishes a candidate ref with the `git range-diff` of old vs new
stack and a series report: every source commit, what became of it, and its rebuilt sha (what `adopt` uses).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from patchmoi.core.config import redact_url
from patchmoi.core.fsutil import atomic_write, ensure_dir
from patchmoi.core.records import AttemptStatus
from patchmoi.core.workspace.forkconfig import ForkConfig, load_fork_config
from patchmoi.core.workspace.gitrun import CommandResult, GitError, GitRunner, RunLog, run_shell, trim
from patchmoi.core.workspace.patches import SeriesError, patch_series

# rerere records every conflict and its resolution and replays them (autoUpdate stages what it resolved).
PICK = ("-c", "rerere.enabled=true", "-c", "rerere.autoUpdate=true", "-c", "core.editor=true")
DROPPED_PREFIX = "refs/patchmoi/dropped/"
_REUSED = re.compile(r"^(?:Resolved|Staged) '(.+)' using previous resolution\.$", re.MULTILINE)


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

    def _result(self, status: str, message: str, **artifacts: Any) -> dict[str, Any]:
        return {
            "status": status,
            "message": message,
            "artifacts": {k: v for k, v in artifacts.items() if v is not None},
            "log": self.log.entries,
        }

    def run(self, base: str, *, label: str, key: str, kind: str = "tag") -> dict[str, Any]:
        try:
            return self._run(base, label=label, key=key, kind=kind)
        except GitError as exc:
            return self._result(AttemptStatus.FAILED, str(exc))

    # -- the rebuild -------------------------------------------------------------------------------------
    def _run(self, base: str, *, label: str, key: str, kind: str) -> dict[str, Any]:
        cfg, git = self.config, self.git
        if not self.repo.is_dir():
            return self._result(AttemptStatus.FAILED, f"workspace {self.repo} does not exist")
        top = git.try_out("rev-parse", "--show-toplevel")
        if top is None:
            return self._result(AttemptStatus.FAILED, f"workspace {self.repo} is not a git repository")
        if self.work_root.resolve().is_relative_to(Path(top).resolve()):
            return self._result(
                AttemptStatus.FAILED,
                f"the rebuild worktrees ({self.work_root}) would be inside "
                f"the fork checkout {top}; set DATA_DIR to a directory outside it",
            )
        if cfg.allow_fetch:
            args = ["fetch", cfg.upstream_remote]
            args += ["--tags"] if cfg.fetch_tags else []
            args += ["--prune"] if cfg.prune else []
            args += ["--prune-tags"] if cfg.prune_tags else []
            fetched = git.run(*args, check=False, timeout=300)
            if not fetched.ok:
                return self._result(
                    AttemptStatus.BLOCKED, f"git fetch {cfg.upstream_remote} failed: {trim(fetched.output, 300)}"
                )
        base_sha = (git.rev(f"refs/tags/{base}") if kind == "tag" else None) or git.rev(base)
        if base_sha is None:
            hint = "" if cfg.allow_fetch else " (fetch it first, or set [fetch] allowFetch = true)"
            return self._result(AttemptStatus.BLOCKED, f"cannot resolve upstream {kind} {base!r}{hint}")
        target_sha = git.rev(f"refs/heads/{cfg.target_branch}")
        if cfg.series == "linear" and target_sha is None:
            return self._result(AttemptStatus.BLOCKED, f'series = "linear" needs the {cfg.target_branch} branch')
        try:
            series = patch_series(git, cfg, base_sha)
        except SeriesError as exc:
            return self._result(AttemptStatus.BLOCKED, str(exc))
        if not series and cfg.series == "branches":
            return self._result(AttemptStatus.BLOCKED, f"no {cfg.patch_prefix} branches found in {self.repo}")
        common = {
            "upstreamKind": kind,
            "upstreamLabel": label,
            "upstreamSha": base_sha,
            "beforeSha": target_sha,
            "targetBranch": cfg.target_branch,
            "seriesMode": cfg.series,
            "workspace": str(self.repo),
        }

        ensure_dir(self.work_root)
        name = safe_name(key)
        path = self.work_root / name
        state_path = self.work_root / f"{name}.json"
        state = self._load_state(state_path)
        plan_key = hashlib.sha1(json.dumps([[p["name"], p["tip"]] for p in series]).encode()).hexdigest()
        resuming = bool(state) and path.is_dir() and state.get("base") == base_sha and state.get("planKey") == plan_key
        wt = git.at(path)
        if resuming:
            stop = self._resume(wt, state)
        else:
            self._discard(path, state_path)
            git.run("worktree", "add", "--detach", str(path), base_sha)
            state = {
                "key": key,
                "base": base_sha,
                "planKey": plan_key,
                "series": series,
                "dropped": [],
                "emptied": [],
                "resolved": [],
                "reused": [],
                "worktree": str(path),
                "repo": str(self.repo),
            }
            stop = self._start(wt, state)
        if stop is not None:
            return self._intervene(stop, wt, state, state_path, common)

        mapped = self._account(wt, state)
        if isinstance(mapped, str):
            self._save_state(state_path, state)
            return self._result(AttemptStatus.FAILED, mapped, **common, worktree=str(path))
        checks = []
        for command in cfg.verify_commands:
            result = run_shell(command, path, cfg.verify_timeout, self.log)
            checks.append({"command": command, "exitCode": result.exit_code})
            if not result.ok:
                self._save_state(state_path, state)
                return self._result(
                    AttemptStatus.NEEDS_INTERVENTION,
                    f"verify command `{command}` failed ({result.exit_code}) on the rebuilt stack: "
                    f"{trim(result.output, 600)}",
                    **common,
                    **self._summary(state),
                    checks=checks,
                    worktree=str(path),
                    failedCheck=command,
                    checkOutput=trim(result.output),
                )
        return self._publish(wt, path, state_path, state, label, common, checks)

    def _commits(self, state: dict[str, Any]) -> list[tuple[str, str]]:
        """(patch name, commit sha) for every source commit, in application order."""
        return [(p["name"], c["sha"]) for p in state["series"] for c in p["commits"]]

    def _patch_of(self, state: dict[str, Any], sha: str) -> str:
        return next((name for name, c in self._commits(state) if c == sha), "?")

    def _start(self, wt: GitRunner, state: dict[str, Any]) -> str | None:
        shas = [sha for _, sha in self._commits(state)]
        if not shas:
            return None
        picked = wt.run(*PICK, "cherry-pick", "--allow-empty", *shas, check=False)
        return self._drive(wt, state, picked)

    def _resume(self, wt: GitRunner, state: dict[str, Any]) -> str | None:
        """Pick up a stopped rebuild: the operator resolved (and `git add`ed) the conflict, or did not yet."""
        pending = state.get("pending")
        if pending is None:
            return None
        if not self._picking(wt):
            # The operator finished or aborted the cherry-pick by hand: if every expected commit is there,
            # go on; otherwise start the sequence again from the base (rerere replays recorded resolutions).
            expected = len(self._commits(state)) - len(state["dropped"]) - len(state["emptied"])
            count = int(wt.out("rev-list", "--count", f"{state['base']}..HEAD"))
            if count == expected and wt.out("rev-parse", "HEAD") != state.get("headAtConflict"):
                state.pop("pending", None)
                state["resolved"].append({**pending, "by": "operator"})
                return None
            wt.run("reset", "--hard", "-q", state["base"])
            for key in ("dropped", "emptied", "reused"):
                state[key] = []
            state.pop("pending", None)
            return self._start(wt, state)
        unmerged = self._unmerged(wt)
        if unmerged:
            return (
                f"patch {pending['patch']} still has unresolved files: {', '.join(unmerged)}; resolve them in "
                f"{wt.cwd}, `git add` (or `git rm`) them, then retry"
            )
        unstaged = [x for x in wt.out("diff", "--name-only").splitlines() if x]
        if unstaged:
            return (
                f"patch {pending['patch']}: {', '.join(unstaged)} changed in {wt.cwd} but not staged; "
                "`git add` or discard the changes, then retry"
            )
        wt.run(*PICK, "rerere")  # record the resolution (postimage) for every later rebuild
        state["resolved"].append({**pending, "by": "operator"})
        return self._continue(wt, state, pending)

    def _continue(self, wt: GitRunner, state: dict[str, Any], pending: dict[str, Any]) -> str | None:
        state.pop("pending", None)
        state["justResolved"] = pending["commit"]
        committed = wt.try_out("rev-parse", "--verify", "--quiet", "CHERRY_PICK_HEAD") is None  # by hand
        if not committed and not self._staged(wt):  # the resolution kept upstream's side: the commit is now empty
            state["emptied"].append(pending["commit"])
            return self._drive(wt, state, wt.run(*PICK, "cherry-pick", "--skip", check=False))
        return self._drive(wt, state, wt.run(*PICK, "cherry-pick", "--continue", check=False))

    def _drive(self, wt: GitRunner, state: dict[str, Any], last: CommandResult) -> str | None:
        """Classify each stop of the sequence until it finishes; a message when a person is needed."""
        seen: set[tuple[str | None, str | None]] = set()
        while self._picking(wt):
            head = wt.try_out("rev-parse", "--verify", "--quiet", "CHERRY_PICK_HEAD")
            where = (head, wt.try_out("rev-parse", "HEAD"))
            if where in seen:  # the same stop twice: git refuses to go on (local changes, say)
                raise GitError(last)
            seen.add(where)
            if head is None:  # stopped between commits (a commit was made by hand): go on
                last = wt.run(*PICK, "cherry-pick", "--continue", check=False)
                continue
            patch = self._patch_of(state, head)
            reused = sorted(set(_REUSED.findall(last.output)))
            unmerged = self._unmerged(wt)
            if unmerged:
                if reused:
                    state["reused"].append({"patch": patch, "commit": head, "files": reused, "partial": True})
                state["pending"] = {"patch": patch, "commit": head, "files": unmerged}
                message = self._try_conflict_command(wt, state)
                if message is not None:
                    return message
                pending = state["pending"]
                wt.run(*PICK, "rerere")
                state["resolved"].append({**pending, "by": "conflict-command", "command": self.config.conflict_command})
                last_stop = self._continue(wt, state, pending)
                return last_stop
            if not self._staged(wt):
                (state["emptied"] if head == state.get("justResolved") else state["dropped"]).append(head)
                last = wt.run(*PICK, "cherry-pick", "--skip", check=False)
                continue
            state["reused"].append({"patch": patch, "commit": head, "files": reused})  # rerere resolved it all
            last = wt.run(*PICK, "cherry-pick", "--continue", check=False)
        if not last.ok and not self._picking(wt):
            raise GitError(last)
        state.pop("justResolved", None)
        return None

    # -- conflicts ---------------------------------------------------------------------------------------
    def _unmerged(self, wt: GitRunner) -> list[str]:
        """Every unmerged path, whatever the kind (content, modify/delete, rename, add/add)."""
        out = wt.run("ls-files", "--unmerged", "-z").stdout
        return sorted({entry.split("\t", 1)[1] for entry in out.split("\0") if "\t" in entry})

    def _staged(self, wt: GitRunner) -> bool:
        return not wt.run("diff", "--cached", "--quiet", "HEAD", check=False).ok

    def _picking(self, wt: GitRunner) -> bool:
        git_dir = Path(wt.out("rev-parse", "--absolute-git-dir"))
        return (git_dir / "CHERRY_PICK_HEAD").exists() or (git_dir / "sequencer").exists()

    def _try_conflict_command(self, wt: GitRunner, state: dict[str, Any]) -> str | None:
        """Run the conflict command; None when git reports no unmerged path afterwards (it staged or removed
        every one). Nothing is staged on its behalf: a file it left in a modify/delete conflict stays one."""
        pending = state["pending"]
        files = ", ".join(pending["files"])
        command = self.config.conflict_command
        if not command:
            return (
                f"patch {pending['patch']} (commit {pending['commit'][:12]}) conflicts with the new upstream "
                f"base in {files}; resolve in {wt.cwd}, `git add` the files, then retry"
            )
        result = run_shell(command, wt.cwd, self.config.conflict_timeout, self.log)
        left = self._unmerged(wt)
        if result.ok and not left:
            return None
        why = f"exit {result.exit_code}" if not result.ok else f"left unmerged: {', '.join(left)}"
        return (
            f"patch {pending['patch']} conflicts in {files}; conflict command `{command}` did not resolve it "
            f"({why}; it must `git add` or `git rm` each file): {trim(result.output, 300)}"
        )

    def _intervene(
        self, message: str, wt: GitRunner, state: dict[str, Any], state_path: Path, common: dict[str, Any]
    ) -> dict[str, Any]:
        state["headAtConflict"] = wt.out("rev-parse", "HEAD")
        self._save_state(state_path, state)
        pending = state.get("pending") or {}
        return self._result(
            AttemptStatus.NEEDS_INTERVENTION,
            message,
            **common,
            **self._summary(state),
            failedPatch=pending.get("patch"),
            failedCommit=pending.get("commit"),
            unmergedFiles=self._unmerged(wt),
            worktree=str(wt.cwd),
            statusOutput=trim(wt.out("status", "--short"), 2000),
        )

    # -- accounting --------------------------------------------------------------------------------------
    def _account(self, wt: GitRunner, state: dict[str, Any]) -> dict[str, str] | str:
        """Map every applied source commit to its rebuilt commit; a message if anything went missing."""
        gone = set(state["dropped"]) | set(state["emptied"])
        applied = [sha for _, sha in self._commits(state) if sha not in gone]
        rebuilt = wt.out("rev-list", "--reverse", f"{state['base']}..HEAD").split()
        if len(rebuilt) != len(applied):
            return (
                f"rebuild accounting failed: {len(applied)} source commit(s) should be applied but "
                f"{len(rebuilt)} were found on the new base in {wt.cwd}; nothing was published"
            )
        state["map"] = dict(zip(applied, rebuilt, strict=True))
        return dict(state["map"])

    def _summary(self, state: dict[str, Any]) -> dict[str, Any]:
        """Patch-level lists plus the per-commit report (every source commit and what became of it)."""
        dropped, emptied = set(state["dropped"]), set(state["emptied"])
        mapping: dict[str, str] = state.get("map") or {}
        pending = (state.get("pending") or {}).get("commit")
        applied_names, dropped_names, report = [], [], []
        for patch in state["series"]:
            commits = []
            for c in patch["commits"]:
                fate = (
                    "dropped"
                    if c["sha"] in dropped
                    else "emptied"
                    if c["sha"] in emptied
                    else "applied"
                    if c["sha"] in mapping
                    else "conflict"
                    if c["sha"] == pending
                    else "pending"
                )
                entry = {**c, "fate": fate}
                if c["sha"] in mapping:
                    entry["rebuilt"] = mapping[c["sha"]]
                commits.append(entry)
            fates = {c["fate"] for c in commits}
            if "applied" in fates:
                applied_names.append(patch["name"])
            elif commits and fates <= {"dropped", "emptied"}:
                dropped_names.append(patch["name"])
            report.append({"patch": patch["name"], "tip": patch["tip"], "commits": commits})
        return {
            "applied": applied_names,
            "dropped": dropped_names,
            "series": report,
            "resolved": state["resolved"] or None,
            "reused": state["reused"] or None,
        }

    # -- success -----------------------------------------------------------------------------------------
    def _publish(
        self,
        wt: GitRunner,
        path: Path,
        state_path: Path,
        state: dict[str, Any],
        label: str,
        common: dict[str, Any],
        checks: list[dict[str, Any]],
    ) -> dict[str, Any]:
        cfg, git = self.config, self.git
        summary = self._summary(state)
        after = wt.out("rev-parse", "HEAD")
        target_sha = common.get("beforeSha")
        target_tree = git.try_out("rev-parse", f"{target_sha}^{{tree}}") if target_sha else None
        changed = wt.out("rev-parse", "HEAD^{tree}") != target_tree
        ref = cfg.candidate_prefix + ref_label(label)
        updates = [f"update {ref} {after}"]
        remembered = self._dropped_refs()
        reapplied = [n for n in summary["applied"] if n in remembered]
        by_name = {p["patch"]: p["tip"] for p in summary["series"]}
        updates += [f"update {DROPPED_PREFIX}{n} {by_name[n]}" for n in summary["dropped"] if cfg.series == "branches"]
        git.run("update-ref", "--stdin", input="\n".join(updates) + "\n")
        range_diff = None
        if target_sha:
            merge_base = git.try_out("merge-base", target_sha, state["base"])
            if merge_base:
                # a high creation factor pairs a patch with its rebuilt self even when a resolution rewrote it
                rd = git.run(
                    "range-diff",
                    "--no-color",
                    "--creation-factor=95",
                    f"{merge_base}..{target_sha}",
                    f"{state['base']}..{after}",
                    check=False,
                )
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
        n = len(summary["applied"])
        if changed:
            message = f"rebuilt {n} patch(es) on {label}; candidate {ref} differs from {cfg.target_branch}"
        else:
            message = f"{cfg.target_branch} already matches {n} patch(es) on {label}; candidate {ref}"
        if summary["dropped"]:
            message += f"; dropped (merged upstream): {', '.join(summary['dropped'])}"
        if state["resolved"]:
            by = sorted({r["by"] for r in state["resolved"]})
            message += f"; conflict resolved by {' and '.join(by)}"
            if "conflict-command" in by:
                message += ": review before adopting (patchmoi adopt --reviewed)"
        if state["reused"]:
            message += f"; reused recorded resolution for {', '.join(sorted({r['patch'] for r in state['reused']}))}"
        if reapplied:
            message += (
                f"; applies again after being dropped as merged upstream: {', '.join(reapplied)} (upstream "
                f"reworked or reverted it? delete {DROPPED_PREFIX}<patch> to accept, or the patch branch)"
            )
        by_command = [r for r in state["resolved"] if r["by"] == "conflict-command"]
        needs_review = bool(by_command or state["reused"] or reapplied)
        return self._result(
            AttemptStatus.CHANGED if changed else AttemptStatus.COMPLETED,
            message,
            **common,
            afterSha=after,
            **summary,
            reapplied=reapplied or None,
            needsReview=needs_review,
            checks=checks,
            rangeDiff=range_diff,
            candidateRefs=[candidate],
        )

    def _dropped_refs(self) -> set[str]:
        out = self.git.out("for-each-ref", "--format=%(refname)", DROPPED_PREFIX)
        return {line[len(DROPPED_PREFIX) :] for line in out.splitlines()}

    # -- state -------------------------------------------------------------------------------------------
    def _load_state(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) and isinstance(data.get("series"), list) else {}

    def _save_state(self, path: Path, state: dict[str, Any]) -> None:
        atomic_write(path, json.dumps(state, indent=2).encode())

    def _discard(self, path: Path, state_path: Path) -> None:
        if path.exists():
            self.git.run("worktree", "remove", "--force", str(path), check=False)
        elif state_path.exists():
            self.git.run("worktree", "prune", check=False)  # a worktree deleted by hand: forget it
        state_path.unlink(missing_ok=True)
