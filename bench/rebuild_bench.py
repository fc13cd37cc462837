"""Rebuild and adopt benchmark: patch stacks of 10, 50 and 200 patches moved onto a new upstream tag.

For each stack size it times, against the same work done by raw git from a bash script:

- rebuild: patchmoi's rebuild engine in-process (`Rebuild.run`), and the full local step (event -> attempt,
  `Dispatcher.retry`, which runs the built-in rebuild step in a subprocess);
- adopt: the engine's ref moves in-process (`adopt_candidate` on the rebuild's artifacts), and the full
  operation (`core.adopt.adopt`: store lookups, ref moves, adoption record) on the step's attempt.

The raw git script does the equivalent work by hand: one `git for-each-ref` and one `git rev-list` to find the
commits of every patch branch (natural name order), `git worktree add --detach`, ONE `git cherry-pick` of all
of them (with rerere on, as the engine picks), `git rev-list` of the result, `update-ref` of a candidate,
`git range-diff` old vs new stack, `git worktree remove`; then, to adopt, `git read-tree -m -u` of the checked-out
main and ONE `git update-ref --stdin` transaction moving main and every patch branch (each checked against its
old value). Both sides pick the same commits and move the same refs.

The fixture: an upstream with 200 files (more for bigger stacks) tagged v1.0.0, and v1.1.0 editing 20 other
files no patch touches (so every stack rebuilds cleanly); a fork whose patch branches `patch/<k>-change` each
edit their own file, every 5th with 3 commits and every 7th with 2, and whose main (checked out) is v1.0.0
plus the stack. It is built once per size with `git fast-import` and copied afresh for every timed run, so
each contender starts from the same fork state (adoption moves main and the patch branches). Medians of
`--repeat` runs; target ratio <= 1.3. Temporary directories are always removed.

    .venv/bin/python bench/rebuild_bench.py [--patches 10,50,200] [--repeat 3]

`--patches` may be given several times or as a comma list (default: 10, 50 and 200).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@example.invalid",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@example.invalid",
}
DEFAULT_SIZES = (10, 50, 200)
TARGET = 1.3
OLD, NEW = "v1.0.0", "v1.1.0"
UPSTREAM_EDITS = 20  # lib files v1.1.0 changes: no patch touches them


def git(cwd: Path, *args: str, input: bytes | None = None) -> str:
    return (
        subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, input=input)
        .stdout.decode()
        .strip()
    )


def commits_in(k: int) -> int:
    """Commits of patch k (1-based): every 5th patch has 3, every 7th 2, the rest 1."""
    return 3 if k % 5 == 0 else 2 if k % 7 == 0 else 1


# -- fixture -----------------------------------------------------------------------------------------------
def _content(k: int, parts: int) -> bytes:
    """src<k>.txt after the first `parts` commits of patch k (commit j edits line 10 + 10*j)."""
    edited = {10 + 10 * j: j for j in range(parts)}
    return "".join(
        f"line {i}" + (f" (fork: patch {k} part {edited[i] + 1})" if i in edited else "") + "\n" for i in range(50)
    ).encode()


class Stream:
    """A `git fast-import` stream: every commit of the fixture in one process."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.marks = 0
        self.clock = 1_700_000_000

    def commit(self, ref: str, message: str, files: dict[str, bytes], parent: int | None = None) -> int:
        self.marks += 1
        self.clock += 1
        who = f"b <b@example.invalid> {self.clock} +0000"
        out = [
            f"commit {ref}\nmark :{self.marks}\nauthor {who}\ncommitter {who}\n".encode(),
            f"data {len(message.encode())}\n{message}\n".encode(),
        ]
        if parent is not None:
            out.append(f"from :{parent}\n".encode())
        for path, data in files.items():
            out.append(f"M 100644 inline {path}\ndata {len(data)}\n".encode() + data + b"\n")
        self.parts.append(b"".join(out) + b"\n")
        return self.marks

    def reset(self, ref: str, mark: int) -> None:
        self.parts.append(f"reset {ref}\nfrom :{mark}\n\n".encode())


def build_fork(fork: Path, n: int) -> int:
    """The fork checkout (main checked out); returns the number of patch commits."""
    fork.mkdir(parents=True)
    git(fork, "init", "-q", "-b", "main")
    git(fork, "config", "gc.auto", "0")  # no automatic gc inside a timed run
    git(fork, "remote", "add", "upstream", "https://example.invalid/acme/widget.git")  # never fetched
    s = Stream()
    files = {f"src{k}.txt": _content(k, 0) for k in range(1, max(200, n) + 1)}
    files.update({f"lib{i:02d}.txt": f"library {i}\n".encode() for i in range(UPSTREAM_EDITS)})
    initial = s.commit("refs/remotes/upstream/main", "initial", files)
    s.reset(f"refs/tags/{OLD}", initial)
    release = s.commit(
        "refs/remotes/upstream/main",
        "release 1.1",
        {f"lib{i:02d}.txt": f"changed upstream {i}\n".encode() for i in range(UPSTREAM_EDITS)},
    )
    s.reset(f"refs/tags/{NEW}", release)
    total, main_parent = 0, initial
    for k in range(1, n + 1):  # main: v1.0.0 plus the stack, as a previous rebuild left it
        for j in range(commits_in(k)):
            main_parent = s.commit(
                "refs/heads/main", f"patch {k}: part {j + 1}", {f"src{k}.txt": _content(k, j + 1)}, main_parent
            )
            total += 1
    for k in range(1, n + 1):  # each patch branch on v1.0.0, independent of the others
        parent = initial
        for j in range(commits_in(k)):
            parent = s.commit(
                f"refs/heads/patch/{k}-change", f"patch {k}: part {j + 1}", {f"src{k}.txt": _content(k, j + 1)}, parent
            )
    git(fork, "fast-import", "--quiet", input=b"".join(s.parts))
    git(fork, "reset", "-q", "--hard", "refs/heads/main")
    (fork / ".git" / "info" / "exclude").write_text(".patchmoi.toml\n")
    (fork / ".patchmoi.toml").write_text("")
    return total


def fresh_copy(template: Path, dest: Path) -> Path:
    """A copy of the fixture fork with a refreshed index (a copied index has stale stat data)."""
    shutil.copytree(template, dest, symlinks=True)
    git(dest, "update-index", "-q", "--refresh")
    return dest


def refs(fork: Path) -> dict[str, str]:
    out = git(fork, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/")
    return {ref: sha for ref, sha in (line.split(" ", 1) for line in out.splitlines())}


def check_adopted(fork: Path, before: dict[str, str], after_sha: str, n: int) -> None:
    """main is at the candidate (files too) and every patch branch moved onto the new base."""
    now = refs(fork)
    assert now["refs/heads/main"] == after_sha, (fork, now["refs/heads/main"], after_sha)
    moved = [r for r in before if r.startswith("refs/heads/patch/") and now.get(r) != before[r]]
    assert len(moved) == n, f"{len(moved)} of {n} patch branches moved in {fork}"
    new_base = git(fork, "rev-parse", f"refs/tags/{NEW}^{{commit}}")
    assert all(git(fork, "merge-base", "--is-ancestor", new_base, now[r]) == "" for r in moved[:3] + moved[-3:])
    assert git(fork, "status", "--porcelain", "--untracked-files=no") == "", f"{fork} has local changes after adopt"
    assert git(fork, "rev-parse", "HEAD^{tree}") == git(fork, "rev-parse", f"{after_sha}^{{tree}}")


# -- raw git -----------------------------------------------------------------------------------------------
RAW_REBUILD = r"""set -euo pipefail
cd "$1"; wt=$2; plan=$3
base=$(git rev-parse --verify --quiet "refs/tags/$4^{commit}")
before=$(git rev-parse --verify --quiet refs/heads/main)
mapfile -t tips < <(git for-each-ref --format='%(objectname) %(refname)' refs/heads/patch/ | sort -V -k2)
declare -A parent
while read -r c p; do parent[$c]=$p; done < <(git rev-list --parents "${tips[@]%% *}" --not "$base" --remotes=upstream)
picks=(); ends=()
for t in "${tips[@]}"; do
  chain=(); c=${t%% *}
  while [[ -n ${parent[$c]:-} ]]; do chain=("$c" "${chain[@]}"); c=${parent[$c]}; done
  picks+=("${chain[@]}"); ends+=("${#picks[@]}")
done
git worktree add -q --detach "$wt" "$base"
git -C "$wt" -c rerere.enabled=true -c rerere.autoUpdate=true cherry-pick --allow-empty "${picks[@]}" >/dev/null
mapfile -t rebuilt < <(git -C "$wt" rev-list --reverse "$base..HEAD")
(( ${#rebuilt[@]} == ${#picks[@]} ))
after=${rebuilt[-1]}
git update-ref refs/heads/candidate/raw "$after"
mb=$(git merge-base "$before" "$base")
git range-diff --no-color "$mb..$before" "$base..$after" >"$plan.range-diff"
git worktree remove --force "$wt"
{
  echo start
  echo "update refs/heads/main $after $before"
  for i in "${!tips[@]}"; do echo "update ${tips[i]#* } ${rebuilt[ends[i]-1]} ${tips[i]%% *}"; done
  echo prepare; echo commit
} >"$plan"
echo "$before $after" >"$plan.main"
"""

RAW_ADOPT = r"""set -euo pipefail
cd "$1"; read -r before after <"$2.main"
if [[ $(git symbolic-ref -q HEAD) == refs/heads/main ]]; then git read-tree -m -u "$before" "$after"; fi
git update-ref -m "raw adopt" --stdin <"$2" >/dev/null
"""


def bash(script: str, *args: str) -> float:
    t = time.perf_counter()
    subprocess.run(["bash", "-c", script, "bench", *args], check=True, env=ENV)
    return time.perf_counter() - t


# -- engine instrumentation ---------------------------------------------------------------------------------
@contextlib.contextmanager
def git_calls() -> Iterator[list[dict[str, Any]]]:
    """Every git process any GitRunner starts meanwhile (adopt_candidate keeps no log of its own)."""
    from patchmoi.core.workspace.gitrun import RunLog

    seen: list[dict[str, Any]] = []
    original = RunLog.add

    def add(self: RunLog, result: Any, cwd: Path) -> None:
        original(self, result, cwd)
        seen.append(self.entries[-1])

    RunLog.add = add  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        RunLog.add = original  # type: ignore[method-assign]


def subcommand(command: str) -> str:
    words = shlex.split(command)[1:]
    while len(words) > 1 and words[0] == "-c":
        words = words[2:]
    if words[:1] == ["-C"]:
        words = words[2:]
    return words[0] if words else "?"


def where_time_goes(entries: list[dict[str, Any]], wall: float) -> str:
    by: dict[str, list[float]] = defaultdict(list)
    for e in entries:
        by[subcommand(str(e["command"]))].append(float(e["durationMs"]))
    in_git = sum(sum(v) for v in by.values()) / 1000
    top = sorted(by.items(), key=lambda kv: -sum(kv[1]))[:5]
    parts = ", ".join(f"{name} x{len(v)} {sum(v) / 1000:.3f} s" for name, v in top)
    return f"{len(entries)} git processes, {in_git:.3f} s in git, {max(wall - in_git, 0):.3f} s elsewhere ({parts})"


# -- one stack size -----------------------------------------------------------------------------------------
def bench_size(root: Path, n: int, repeat: int) -> dict[str, Any]:
    from patchmoi.core.adopt import adopt
    from patchmoi.core.dispatch.dispatcher import Dispatcher
    from patchmoi.core.events import upstream_release_event
    from patchmoi.core.store import Store
    from patchmoi.core.workspace.adopt import adopt_candidate
    from patchmoi.core.workspace.rebuild import Rebuild

    template = root / f"template-{n}"
    total = build_fork(template, n)
    times: dict[str, list[float]] = defaultdict(list)
    logs: dict[str, tuple[list[dict[str, Any]], float]] = {}
    for r in range(repeat):
        run_dir = root / f"run-{n}-{r}"
        try:
            # raw git
            fork = fresh_copy(template, run_dir / "fork-raw")
            before = refs(fork)
            plan = str(run_dir / "raw-plan")
            times["raw_rebuild"].append(bash(RAW_REBUILD, str(fork), str(run_dir / "wt-raw"), plan, NEW))
            raw_after = git(fork, "rev-parse", "refs/heads/candidate/raw")
            raw_tree = git(fork, "rev-parse", f"{raw_after}^{{tree}}")
            assert git(fork, "rev-list", "--count", f"{NEW}..{raw_after}") == str(total)
            times["raw_adopt"].append(bash(RAW_ADOPT, str(fork), plan))
            check_adopted(fork, before, raw_after, n)

            # the engine, in-process
            fork = fresh_copy(template, run_dir / "fork-engine")
            t = time.perf_counter()
            res = Rebuild(fork, run_dir / "data-engine" / "worktrees").run(NEW, label=NEW, key=f"bench-{n}-{r}")
            times["engine_rebuild"].append(time.perf_counter() - t)
            assert res["status"] == "changed", res["message"]
            artifacts = res["artifacts"]
            assert sum(len(p["commits"]) for p in artifacts["series"]) == total
            assert git(fork, "rev-parse", f"{artifacts['afterSha']}^{{tree}}") == raw_tree, "different trees"
            logs["rebuild"] = (res["log"], times["engine_rebuild"][-1])
            with git_calls() as calls:
                t = time.perf_counter()
                adopt_candidate(artifacts, label=artifacts["candidateRefs"][0]["ref"], reflog="bench adopt")
                times["engine_adopt"].append(time.perf_counter() - t)
            logs["adopt"] = (calls, times["engine_adopt"][-1])
            check_adopted(fork, before, artifacts["afterSha"], n)

            # the full local step (subprocess), then the full adopt operation
            fork = fresh_copy(template, run_dir / "fork-step")
            store = Store(run_dir / "data-step")
            event = upstream_release_event("acme/widget", f"{NEW}-bench-{r}").to_dict()
            event["payload"]["tag"] = NEW
            store.record_event(event)
            dispatcher = Dispatcher(store, {}, workspace=fork)
            t = time.perf_counter()
            outcome = asyncio.run(dispatcher.retry(event["id"]))
            times["step_rebuild"].append(time.perf_counter() - t)
            assert outcome.attempt["status"] == "changed", outcome.attempt
            t = time.perf_counter()
            adopted = adopt(store, str(outcome.attempt["id"]), by="bench")
            times["op_adopt"].append(time.perf_counter() - t)
            check_adopted(fork, before, adopted["adoption"]["to"], n)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(template, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"n": n, "commits": total, "median": med, "logs": logs}


# -- report -------------------------------------------------------------------------------------------------
HEADER = (
    "patches commits | raw git rebuild   engine  ratio     step  ratio | raw git adopt   engine  ratio  adopt op  ratio"
)


def row(result: dict[str, Any]) -> str:
    m = result["median"]
    rr, ra = m["raw_rebuild"], m["raw_adopt"]
    return (
        f"{result['n']:7d} {result['commits']:7d} | {rr:13.3f} s {m['engine_rebuild']:6.3f} s "
        f"{m['engine_rebuild'] / rr:5.2f} {m['step_rebuild']:6.3f} s {m['step_rebuild'] / rr:5.2f} "
        f"| {ra:11.3f} s {m['engine_adopt']:6.3f} s {m['engine_adopt'] / ra:5.2f} "
        f"{m['op_adopt']:7.3f} s {m['op_adopt'] / ra:5.2f}"
    )


def parse_sizes(values: list[str] | None) -> list[int]:
    if not values:
        return list(DEFAULT_SIZES)
    sizes = [int(x) for v in values for x in v.split(",") if x.strip()]
    if not sizes or min(sizes) < 1:
        raise SystemExit("--patches takes positive numbers (10,50,200)")
    return list(dict.fromkeys(sizes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--patches",
        action="append",
        metavar="N[,N...]",
        help="stack size(s); repeatable or a comma list (default: 10,50,200)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per size (median reported; default 3)")
    args = ap.parse_args()
    sizes = parse_sizes(args.patches)
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")

    root = Path(tempfile.mkdtemp(prefix="patchmoi-rebuild-bench-"))
    results = []
    try:
        print(
            f"patch stacks rebuilt on a new upstream tag and adopted (median of {args.repeat}; "
            f"ratio = patchmoi / raw git, target <= {TARGET})"
        )
        print("rebuild: engine = Rebuild.run in-process, step = event -> attempt (Dispatcher.retry, subprocess)")
        print("adopt:   engine = adopt_candidate in-process, adopt op = core.adopt.adopt (store + record)")
        print(HEADER, flush=True)
        for n in sizes:
            results.append(bench_size(root, n, args.repeat))
            print(row(results[-1]), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    over = [
        (r["n"], k)
        for r in results
        for k in ("engine_rebuild", "step_rebuild", "engine_adopt", "op_adopt")
        if r["median"][k] / r["median"]["raw_" + k.split("_")[1]] > TARGET
    ]
    print(
        f"target ratio <= {TARGET}: "
        + ("met" if not over else "exceeded by " + ", ".join(f"{k.replace('_', ' ')} at {n}" for n, k in over))
    )
    print("where the engine's time goes (last run of each size):")
    for r in results:
        for what in ("rebuild", "adopt"):
            entries, wall = r["logs"][what]
            print(f"  {r['n']:>4} patches, {what:<7} {wall:6.3f} s: {where_time_goes(entries, wall)}")


if __name__ == "__main__":
    main()
