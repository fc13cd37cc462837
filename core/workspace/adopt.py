"""Adopt a rebuilt candidate: move the fork forward (ARCHITECTURE §4, "the loop closes").

The target branch moves to the candidate and each patch branch to its rebuilt commits on the new base (the
commits the rebuild cherry-picked, so every author and message is kept). Patch branches then form a stack in
application order, each on the one before it, exactly as they appear in the target branch (what `git rebase
--update-refs` leaves); the next rebuild reads either shape. A patch whose commits all went away (merged
upstream, or emptied by a resolution) is retired: its branch is deleted and its old tip kept under
`refs/patchmoi/retired/<name>`. Every ref moves in one `git update-ref --stdin` transaction, each checked
against the value the rebuild saw, so a branch that moved since is never overwritten. A checked-out branch
has its worktree updated too (refused when it has local changes). With a push remote, every moved ref is
pushed in one atomic push with `--force-with-lease`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchmoi.core.errors import PatchmoiError
from patchmoi.core.records import now_iso
from patchmoi.core.workspace.forkconfig import ForkConfig, load_fork_config
from patchmoi.core.workspace.gitrun import GitRunner, trim
from patchmoi.core.workspace.rebuild import DROPPED_PREFIX

RETIRED_PREFIX = "refs/patchmoi/retired/"
ZERO = "0" * 40


class AdoptRefused(PatchmoiError):
    """The candidate cannot be adopted as things stand; the message says why and what to do."""

    code = "adopt_refused"


@dataclass
class Move:
    ref: str
    old: str | None
    new: str | None  # None: delete

    def line(self) -> str:
        if self.new is None:
            return f"delete {self.ref} {self.old or ''}".rstrip()
        return f"update {self.ref} {self.new} {self.old or ZERO}"


def plan_moves(
    artifacts: dict[str, Any], config: ForkConfig
) -> tuple[list[Move], list[dict[str, Any]], list[dict[str, Any]]]:
    """The ref moves of an adoption: (moves, patch branch changes, retired patches)."""
    target = f"refs/heads/{artifacts['targetBranch']}"
    moves = [Move(target, artifacts.get("beforeSha"), str(artifacts["afterSha"]))]
    patches: list[dict[str, Any]] = []
    retired: list[dict[str, Any]] = []
    if artifacts.get("seriesMode", "branches") != "branches":
        return moves, patches, retired
    for patch in artifacts.get("series") or []:
        name, tip = str(patch["patch"]), str(patch["tip"])
        rebuilt = [c["rebuilt"] for c in patch.get("commits") or [] if c.get("rebuilt")]
        ref = f"refs/heads/{name}"
        if rebuilt:
            patches.append({"name": name, "from": tip, "to": rebuilt[-1], "commits": len(rebuilt)})
            moves.append(Move(ref, tip, rebuilt[-1]))
        else:
            fates = sorted({str(c.get("fate")) for c in patch.get("commits") or []}) or ["empty"]
            retired.append({"name": name, "ref": RETIRED_PREFIX + name, "sha": tip, "why": "/".join(fates)})
            moves.append(Move(ref, tip, None))
            moves.append(Move(RETIRED_PREFIX + name, None, tip))
    return moves, patches, retired


def adopt_candidate(artifacts: dict[str, Any], *, label: str, reflog: str) -> dict[str, Any]:
    """Move the fork's refs (and checked-out worktrees) to the candidate; the adoption record."""
    repo = Path(str(artifacts["workspace"]))
    if not repo.is_dir():
        raise AdoptRefused(f"the fork checkout {repo} does not exist any more")
    config = load_fork_config(repo)
    git = GitRunner(repo)
    moves, patches, retired = plan_moves(artifacts, config)
    candidate = str(artifacts["afterSha"])
    if git.rev(candidate) is None:
        raise AdoptRefused(f"candidate commit {candidate[:12]} is not in {repo} any more (was it garbage collected?)")
    # One read of every ref (not a rev-parse per ref: 200 patches would cost 200 processes).
    listing = git.out("for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/", "refs/patchmoi/")
    refs = dict(line.split(" ", 1) for line in listing.splitlines() if " " in line)
    if all(refs.get(m.ref) == m.new for m in moves):  # already done: a crash before the record was written
        record = _record(repo, artifacts, label, patches, retired, [], recovered=True)
        if config.adopt_push_remote:
            record.update(_push(git, config.adopt_push_remote, moves))
        return record
    for move in moves:
        current = refs.get(move.ref)
        if current != move.old and not move.ref.startswith(RETIRED_PREFIX):
            what = move.ref.removeprefix("refs/heads/")
            was, now = (move.old or "absent")[:12], (current or "absent")[:12]
            raise AdoptRefused(
                f"{what} moved since the rebuild (was {was}, now {now}); retry the event to rebuild "
                "on it, then adopt the new candidate"
            )
    moves = [m for m in moves if not (m.ref.startswith(RETIRED_PREFIX) and m.ref in refs)]  # retired once is kept

    # Branches checked out in a worktree (the operator's checkout, usually main) need their files moved too.
    checked_out = _checked_out(git)
    touched = []
    for move in moves:
        path = checked_out.get(move.ref)
        if path is None:
            continue
        if move.new is None:
            raise AdoptRefused(
                f"{move.ref.removeprefix('refs/heads/')} is checked out in {path}; switch branch there "
                "first (it is retired by this adoption)"
            )
        local = GitRunner(path).out("status", "--porcelain", "--untracked-files=no")
        if local:
            raise AdoptRefused(
                f"{path} has local changes on {move.ref.removeprefix('refs/heads/')}: commit or stash "
                f"them, then adopt ({trim(local, 200)})"
            )
        touched.append((path, move))
    for i, (path, move) in enumerate(touched):
        done = GitRunner(path).run("read-tree", "-m", "-u", str(move.old), str(move.new), check=False)
        if not done.ok:
            _restore(touched[:i])
            raise AdoptRefused(f"cannot update the files in {path}: {trim(done.output, 300)}")
    lines = [
        "start",
        *(m.line() for m in moves),
        *(f"delete {DROPPED_PREFIX}{r['name']}" for r in retired if DROPPED_PREFIX + r["name"] in refs),
        "prepare",
        "commit",
    ]
    applied = git.run("update-ref", "-m", reflog, "--stdin", input="\n".join(lines) + "\n", check=False)
    if not applied.ok:
        _restore(touched)
        raise AdoptRefused(f"a branch moved while adopting; nothing was changed: {trim(applied.output, 300)}")
    record = _record(repo, artifacts, label, patches, retired, [p for p, _ in touched])
    remote = config.adopt_push_remote
    if remote:
        record.update(_push(git, remote, moves))
    return record


def _record(
    repo: Path,
    artifacts: dict[str, Any],
    label: str,
    patches: list[dict[str, Any]],
    retired: list[dict[str, Any]],
    touched: list[Path],
    *,
    recovered: bool = False,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "adoptedAt": now_iso(),
        "workspace": str(repo),
        "candidate": label,
        "targetBranch": artifacts["targetBranch"],
        "from": artifacts.get("beforeSha"),
        "to": artifacts["afterSha"],
        "patches": patches,
        "retired": retired,
        "worktreesUpdated": [str(p) for p in touched],
    }
    if recovered:
        record["recovered"] = "the refs had already moved (an adoption interrupted before it was recorded)"
    return record


def already_based(artifacts: dict[str, Any]) -> bool:
    """Is the target branch already on this rebuild's upstream base? (Then a same-tree candidate moves nothing.)"""
    before, base = artifacts.get("beforeSha"), artifacts.get("upstreamSha")
    if not before or not base:
        return False
    git = GitRunner(Path(str(artifacts["workspace"])))
    return git.run("merge-base", "--is-ancestor", str(base), str(before), check=False).ok


def _checked_out(git: GitRunner) -> dict[str, Path]:
    out = git.out("worktree", "list", "--porcelain")
    found: dict[str, Path] = {}
    path: Path | None = None
    for line in out.splitlines():
        if line.startswith("worktree "):
            path = Path(line[len("worktree ") :])
        elif line.startswith("branch ") and path is not None:
            found[line[len("branch ") :]] = path
    return found


def _restore(touched: list[tuple[Path, Move]]) -> None:
    for path, move in reversed(touched):
        GitRunner(path).run("read-tree", "-m", "-u", str(move.new), str(move.old), check=False)


def _push(git: GitRunner, remote: str, moves: list[Move]) -> dict[str, Any]:
    """One atomic push of every moved branch, each leased on what we last saw of the remote."""
    args = ["push", "--atomic", "--porcelain", remote]
    specs = []
    for move in moves:
        if not move.ref.startswith("refs/heads/"):
            continue
        branch = move.ref[len("refs/heads/") :]
        seen = git.rev(f"refs/remotes/{remote}/{branch}")
        if move.new is None and seen is None:
            continue  # never pushed: nothing to delete there
        args.append(f"--force-with-lease={move.ref}:{seen or ''}")
        specs.append(f"{move.new}:{move.ref}" if move.new else f":{move.ref}")
    pushed = git.run(*args, *specs, check=False, timeout=300)
    out: dict[str, Any] = {"pushRemote": remote, "pushed": pushed.ok, "pushedRefs": [s.split(":", 1)[1] for s in specs]}
    if not pushed.ok:
        out["pushError"] = trim(pushed.output, 1000)
    return out
