"""Rebuild benchmark: a 50-patch stack rebuilt on a new upstream tag.

Prints patchmoi's wall time (the built-in rebuild, in-process and as the full local step via a subprocess)
beside the wall time of the same git commands run directly from a shell script. Target ratio <= 1.3.

    .venv/bin/python bench/rebuild_bench.py [--patches 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.invalid", "GIT_COMMITTER_NAME": "b",
       "GIT_COMMITTER_EMAIL": "b@example.invalid"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True).stdout.strip()


def build(root: Path, n: int) -> Path:
    up, fork = root / "upstream", root / "fork"
    up.mkdir(parents=True)
    git(up, "init", "-q", "-b", "main")
    for i in range(200):
        (up / f"src{i:03d}.txt").write_text("".join(f"line {j}\n" for j in range(50)))
    git(up, "add", "-A")
    git(up, "commit", "-q", "-m", "initial")
    git(up, "tag", "v1.0.0")
    git(root, "clone", "-q", "-o", "upstream", str(up), str(fork))
    (fork / ".git" / "info" / "exclude").write_text(".patchmoi.toml\n")
    (fork / ".patchmoi.toml").write_text("")
    for i in range(n):
        name = f"patch/{i:03d}-change"
        git(fork, "checkout", "-q", "-b", name, "v1.0.0")
        (fork / f"src{i:03d}.txt").write_text("".join(f"line {j}{' (fork)' if j == 10 else ''}\n" for j in range(50)))
        git(fork, "commit", "-q", "-am", f"patch {i}")
    git(fork, "checkout", "-q", "-B", "main", "v1.0.0")
    for i in range(n):
        git(fork, "cherry-pick", f"patch/{i:03d}-change")
    for i in range(100, 120):  # upstream moves: unrelated edits
        (up / f"src{i:03d}.txt").write_text("changed upstream\n")
    git(up, "commit", "-q", "-am", "release 1.1")
    git(up, "tag", "v1.1.0")
    git(fork, "fetch", "-q", "upstream", "--tags")
    return fork


DIRECT = """set -e
cd "$1"; wt="$2"
git worktree add --detach "$wt" v1.1.0 -q
for b in $(git for-each-ref --sort=refname --format='%(refname)' refs/heads/patch/); do
  git -C "$wt" cherry-pick "$(git rev-parse "$b")" >/dev/null
done
after=$(git -C "$wt" rev-parse HEAD)
git update-ref refs/heads/candidate/direct "$after"
mb=$(git merge-base main v1.1.0)
git range-diff --no-color "$mb..main" "v1.1.0..$after" >/dev/null
git worktree remove --force "$wt"
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patches", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from core.dispatch.dispatcher import Dispatcher
    from core.events import upstream_release_event
    from core.store import Store
    from core.workspace.rebuild import Rebuild

    root = Path(tempfile.mkdtemp(prefix="patchmoi-rebuild-bench-"))
    fork = build(root, args.patches)
    direct, inproc, step = [], [], []
    for r in range(args.repeat):
        t = time.perf_counter()
        subprocess.run(["bash", "-c", DIRECT, "bench", str(fork), str(root / f"wt-direct-{r}")], check=True, env=ENV)
        direct.append(time.perf_counter() - t)

        t = time.perf_counter()
        res = Rebuild(fork, root / f"data-{r}" / "worktrees").run("v1.1.0", label="v1.1.0", key=f"bench-{r}")
        inproc.append(time.perf_counter() - t)
        assert res["status"] == "changed", res["message"]

        store = Store(root / f"data-step-{r}")
        event = upstream_release_event("acme/widget", f"v1.1.0-{r}").to_dict()
        event["payload"]["tag"] = "v1.1.0"
        store.record_event(event)
        dispatcher = Dispatcher(store, {}, workspace=fork)
        t = time.perf_counter()
        outcome = asyncio.run(dispatcher.retry(event["id"]))
        step.append(time.perf_counter() - t)
        assert outcome.attempt["status"] == "changed", outcome.attempt
    d, i, s = statistics.median(direct), statistics.median(inproc), statistics.median(step)
    print(f"{args.patches}-patch stack rebuilt on a new upstream tag (median of {args.repeat})")
    print(f"git commands run directly (bash)          {d:7.3f} s")
    print(f"patchmoi rebuild engine (in-process)      {i:7.3f} s   ratio {i / d:4.2f}")
    print(f"patchmoi local step (event -> attempt)    {s:7.3f} s   ratio {s / d:4.2f}   (target <= 1.3)")


if __name__ == "__main__":
    main()
