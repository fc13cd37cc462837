"""Rebuild and adopt benchmark: patch stacks of 10, 50, 100 and 200 patches moved onto a new upstream tag.

For each stack size, three contenders do the same work, each on its own fresh copy of the fork:

- raw git: a bash script running the git commands by hand (below);
- engine: patchmoi's rebuild engine in-process (`Rebuild.run`), then its ref moves (`adopt_candidate`);
- step: the full local step (event -> attempt, `Dispatcher.retry`, which runs the built-in rebuild step in a
  subprocess), then the full adopt operation (`core.adopt.adopt`: store lookups, ref moves, adoption record).

The raw git script does the equivalent work: one `git for-each-ref` and one `git rev-list` to find the commits
of every patch branch (natural name order), `git worktree add --detach`, ONE `git cherry-pick` of all of them
(with rerere on, as the engine picks), `git rev-list` of the result, `update-ref` of a candidate,
`git range-diff` old vs new stack (with the engine's creation factor), `git worktree remove`; then, to adopt,
`git read-tree -m -u` of the checked-out main and ONE `git update-ref --stdin` transaction moving main and
every patch branch (each checked against its old value). All three pick the same commits, produce the same
tree and move the same refs; every contender runs git with the same environment and git configuration.

The fixture: an upstream with one `src<k>.txt` per patch (at least 200) and 20 `lib<i>.txt` files, tagged
v1.0.0, and v1.1.0 editing the 20 lib files, which no patch touches, so every stack of every size rebuilds
cleanly (an earlier version edited `src100..119.txt` upstream, the files patches 100-119 edit, and stacks over
100 patches stopped on a conflict). A fork whose patch branches `patch/<k>-change` each edit their own file,
every 5th with 3 commits and every 7th with 2, and whose main (checked out) is v1.0.0 plus the stack. It is
built once per size with `git fast-import` and copied afresh for every run, so each contender starts from the
same fork state (adoption moves main and the patch branches).

Timing, per size: a first round on the just-built fixture (the cold path: first git processes on fresh files,
first step subprocess), then `--repeat` rounds whose medians are the headline. The contenders' order rotates
from round to round (raw/engine/step, engine/step/raw, ...), so none always runs first or last on this noisy
machine. A ratio is the median of the rounds' patchmoi / raw git (each round's contenders ran back to back; the
range over the rounds is printed beside it); Δ is the median difference in milliseconds, the engine's own
overhead, which the ratio hides when the cherry-pick dominates. Target ratio <= 1.3. Wall time swings by tens
of percent from round to round when other work shares the machine, so CPU time (user + system of every
process a contender ran) is printed too: it barely moves with the load. `TMPDIR=/dev/shm` takes the disk's
noise out as well. Then one traced round (GIT_TRACE2_EVENT, untimed) counts every git process each contender
starts and the time spent in each git subcommand versus outside git (`--no-trace` skips it).

Temporary directories are always removed, on errors, Ctrl-C and SIGTERM too (`--keep` keeps them and prints
where they are).

    .venv/bin/python bench/rebuild_bench.py [--patches 10,50,100,200] [--repeat 5] [--no-trace] [--keep]
    TMPDIR=/dev/shm .venv/bin/python bench/rebuild_bench.py    # the fixtures in memory: no disk noise

`--patches` may be given several times or as a comma list.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
ENV.pop("GIT_TRACE2_EVENT", None)
DEFAULT_SIZES = (10, 50, 100, 200)
TARGET = 1.3
OLD, NEW = "v1.0.0", "v1.1.0"
UPSTREAM_EDITS = 20  # lib files v1.1.0 changes: no patch touches them
CONTENDERS = ("raw", "engine", "step")


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
    patch_files = {f"src{k}.txt" for k in range(1, n + 1)}
    upstream_edits = {f"lib{i:02d}.txt": f"changed upstream {i}\n".encode() for i in range(UPSTREAM_EDITS)}
    assert not patch_files & upstream_edits.keys(), "the upstream edit must not touch a patched file"
    fork.mkdir(parents=True)
    git(fork, "init", "-q", "-b", "main")
    git(fork, "config", "gc.auto", "0")  # no automatic gc inside a timed run
    git(fork, "remote", "add", "upstream", "https://example.invalid/acme/widget.git")  # never fetched
    s = Stream()
    files = {f"src{k}.txt": _content(k, 0) for k in range(1, max(200, n) + 1)}
    files.update({f"lib{i:02d}.txt": f"library {i}\n".encode() for i in range(UPSTREAM_EDITS)})
    initial = s.commit("refs/remotes/upstream/main", "initial", files)
    s.reset(f"refs/tags/{OLD}", initial)
    release = s.commit("refs/remotes/upstream/main", "release 1.1", upstream_edits, initial)
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
git range-diff --no-color --creation-factor=95 "$mb..$before" "$base..$after" >"$plan.range-diff"
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


def bash(script: str, *args: str, env: dict[str, str]) -> None:
    """Run the script in its own process group, killed as a whole if the bench is interrupted."""
    proc = subprocess.Popen(["bash", "-c", script, "bench", *args], env=env, start_new_session=True)
    try:
        code = proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if code:
        raise subprocess.CalledProcessError(code, "bash")


@dataclass
class Took:
    wall: float = 0.0
    cpu: float = 0.0  # user + system, of this process and of every process it started (and waited for)


def _cpu() -> float:
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


@contextlib.contextmanager
def timed() -> Iterator[Took]:
    """Wall and CPU time of the block. CPU time hardly moves when other work competes for the 2 cores, wall
    time does: the CPU ratio is the steadier measure of how much more work patchmoi does than raw git."""
    took = Took()
    wall, cpu = time.perf_counter(), _cpu()
    try:
        yield took
    finally:
        took.wall, took.cpu = time.perf_counter() - wall, _cpu() - cpu


# -- tracing (GIT_TRACE2_EVENT) -----------------------------------------------------------------------------
@contextlib.contextmanager
def environ(extra: dict[str, str]) -> Iterator[None]:
    """os.environ with `extra` set (the engine's GitRunner copies os.environ when it is made)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class Trace:
    """Every git process one contender started, from git's own trace2 events."""

    top: int = 0  # started by the contender (bash, Python)
    nested: int = 0  # started by git itself (worktree add runs a checkout, ...)
    in_git: float = 0.0  # seconds inside the top-level git processes (their own clock, start to exit)
    by: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def read_trace(path: Path) -> Trace:
    names: dict[str, str] = {}
    exits: dict[str, float] = {}
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            sid = str(ev.get("sid"))
            if ev.get("event") == "cmd_name":
                names[sid] = str(ev.get("name"))
            elif ev.get("event") == "exit":
                exits[sid] = float(ev.get("t_abs") or 0.0)
    trace = Trace()
    for sid, took in exits.items():
        if "/" in sid:
            trace.nested += 1
            continue
        trace.top += 1
        trace.in_git += took
        trace.by[names.get(sid, "?")].append(took)
    return trace


# -- the contenders -----------------------------------------------------------------------------------------
@dataclass
class Run:
    rebuild_took: Took
    adopt_took: Took
    tree: str
    trace_rebuild: Trace | None = None
    trace_adopt: Trace | None = None

    @property
    def rebuild(self) -> float:
        return self.rebuild_took.wall

    @property
    def adopt(self) -> float:
        return self.adopt_took.wall

    @property
    def rebuild_cpu(self) -> float:
        return self.rebuild_took.cpu

    @property
    def adopt_cpu(self) -> float:
        return self.adopt_took.cpu


def run_raw(template: Path, run_dir: Path, n: int, total: int, trace: bool) -> Run:
    fork = fresh_copy(template, run_dir / "fork-raw")
    before = refs(fork)
    plan = str(run_dir / "raw-plan")
    env_r, env_a = dict(ENV), dict(ENV)
    if trace:
        env_r["GIT_TRACE2_EVENT"] = str(run_dir / "trace-raw-rebuild.json")
        env_a["GIT_TRACE2_EVENT"] = str(run_dir / "trace-raw-adopt.json")
    with timed() as rebuild:
        bash(RAW_REBUILD, str(fork), str(run_dir / "wt-raw"), plan, NEW, env=env_r)
    after = git(fork, "rev-parse", "refs/heads/candidate/raw")
    assert git(fork, "rev-list", "--count", f"{NEW}..{after}") == str(total)
    with timed() as adopt:
        bash(RAW_ADOPT, str(fork), plan, env=env_a)
    check_adopted(fork, before, after, n)
    return Run(rebuild, adopt, git(fork, "rev-parse", f"{after}^{{tree}}"), *_traces(run_dir, "raw", trace))


def run_engine(template: Path, run_dir: Path, n: int, total: int, trace: bool) -> Run:
    from patchmoi.core.workspace.adopt import adopt_candidate
    from patchmoi.core.workspace.rebuild import Rebuild

    fork = fresh_copy(template, run_dir / "fork-engine")
    before = refs(fork)
    traced = {"GIT_TRACE2_EVENT": str(run_dir / "trace-engine-rebuild.json")} if trace else {}
    with environ(traced), timed() as rebuild:
        res = Rebuild(fork, run_dir / "data-engine" / "worktrees").run(NEW, label=NEW, key=f"bench-{n}")
    assert res["status"] == "changed", res["message"]
    artifacts = res["artifacts"]
    assert sum(len(p["commits"]) for p in artifacts["series"]) == total
    traced = {"GIT_TRACE2_EVENT": str(run_dir / "trace-engine-adopt.json")} if trace else {}
    with environ(traced), timed() as adopt:
        adopt_candidate(artifacts, label=artifacts["candidateRefs"][0]["ref"], reflog="bench adopt")
    check_adopted(fork, before, artifacts["afterSha"], n)
    tree = git(fork, "rev-parse", f"{artifacts['afterSha']}^{{tree}}")
    return Run(rebuild, adopt, tree, *_traces(run_dir, "engine", trace))


def run_step(template: Path, run_dir: Path, n: int, total: int, trace: bool) -> Run:
    from patchmoi.core.adopt import adopt
    from patchmoi.core.dispatch.dispatcher import Dispatcher
    from patchmoi.core.events import upstream_release_event
    from patchmoi.core.store import Store

    fork = fresh_copy(template, run_dir / "fork-step")
    before = refs(fork)
    store = Store(run_dir / "data-step")
    event = upstream_release_event("acme/widget", f"{NEW}-bench-{n}").to_dict()
    event["payload"]["tag"] = NEW
    store.record_event(event)
    # The step gets the environment the other contenders run git with (serve and the CLI pass theirs).
    env = dict(ENV)
    if trace:
        env["GIT_TRACE2_EVENT"] = str(run_dir / "trace-step-rebuild.json")
    dispatcher = Dispatcher(store, env, workspace=fork)
    with timed() as rebuild:
        outcome = asyncio.run(dispatcher.retry(event["id"]))
    assert outcome.attempt["status"] == "changed", outcome.attempt
    traced = {"GIT_TRACE2_EVENT": str(run_dir / "trace-step-adopt.json")} if trace else {}
    with environ(traced), timed() as took:
        adopted = adopt(store, str(outcome.attempt["id"]), by="bench")
    store.close()
    after = str(adopted["adoption"]["to"])
    assert git(fork, "rev-list", "--count", f"{NEW}..{after}") == str(total)
    check_adopted(fork, before, after, n)
    return Run(rebuild, took, git(fork, "rev-parse", f"{after}^{{tree}}"), *_traces(run_dir, "step", trace))


def _traces(run_dir: Path, who: str, trace: bool) -> tuple[Trace | None, Trace | None]:
    if not trace:
        return None, None
    return read_trace(run_dir / f"trace-{who}-rebuild.json"), read_trace(run_dir / f"trace-{who}-adopt.json")


RUNNERS: dict[str, Callable[[Path, Path, int, int, bool], Run]] = {
    "raw": run_raw,
    "engine": run_engine,
    "step": run_step,
}


# -- one stack size -----------------------------------------------------------------------------------------
@dataclass
class SizeResult:
    n: int
    commits: int
    first: dict[str, Run]
    rounds: list[dict[str, Run]]
    traced: dict[str, Run] | None

    def median(self, who: str, what: str) -> float:
        return statistics.median(float(getattr(r[who], what)) for r in self.rounds)

    def ratios(self, who: str, what: str) -> list[float]:
        """Per round: this contender / raw git of the same round (adjacent in time, so load swings cancel)."""
        return [float(getattr(r[who], what)) / float(getattr(r["raw"], what)) for r in self.rounds]

    def ratio(self, who: str, what: str) -> float:
        return statistics.median(self.ratios(who, what))

    def delta(self, who: str, what: str) -> float:
        return statistics.median(float(getattr(r[who], what)) - float(getattr(r["raw"], what)) for r in self.rounds)


def one_round(
    root: Path, label: str, template: Path, n: int, total: int, order: tuple[str, ...], trace: bool, keep: bool
) -> dict[str, Run]:
    run_dir = root / f"run-{n}-{label}"
    run_dir.mkdir()
    try:
        runs = {who: RUNNERS[who](template, run_dir, n, total, trace) for who in order}
    finally:
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    trees = {r.tree for r in runs.values()}
    assert len(trees) == 1, f"the contenders built different trees: {trees}"
    return runs


def bench_size(root: Path, n: int, repeat: int, trace: bool, keep: bool) -> SizeResult:
    template = root / f"template-{n}"
    total = build_fork(template, n)
    try:
        first = one_round(root, "first", template, n, total, CONTENDERS, False, keep)
        rounds = []
        for r in range(repeat):
            order = CONTENDERS[r % 3 :] + CONTENDERS[: r % 3]
            rounds.append(one_round(root, str(r), template, n, total, order, False, keep))
        traced = one_round(root, "traced", template, n, total, CONTENDERS, True, keep) if trace else None
    finally:
        if not keep:
            shutil.rmtree(template, ignore_errors=True)
    return SizeResult(n, total, first, rounds, traced)


# -- report -------------------------------------------------------------------------------------------------
def _cmp(res: SizeResult, who: str, what: str) -> str:
    ratios = res.ratios(who, what)
    spread = f"({min(ratios):4.2f}-{max(ratios):4.2f})" if len(ratios) > 1 else " " * 11
    return f"{res.median(who, what):7.3f} s {res.ratio(who, what):5.2f} {spread} {res.delta(who, what) * 1000:+7.0f} ms"


def _first(res: SizeResult, what: str) -> str:
    f = res.first
    raw = getattr(f["raw"], what)
    return f"{raw:7.3f} s {getattr(f['engine'], what) / raw:5.2f} {getattr(f['step'], what) / raw:5.2f}"


def table(results: list[SizeResult], what: str, names: tuple[str, str], repeat: int) -> None:
    print(
        f"\n{what}: medians of {repeat} rounds; ratio = median of the rounds' patchmoi / raw git (their range); "
        "Δ = median of patchmoi - raw git; first round = the cold path"
    )
    left, right = names
    print(f"patches commits |  raw git  | {left:^35} | {right:^35} | first round: raw git {left[:6]:>6} {right[:6]:>6}")
    for res in results:
        print(
            f"{res.n:7d} {res.commits:7d} | {res.median('raw', what):7.3f} s | {_cmp(res, 'engine', what)} | "
            f"{_cmp(res, 'step', what)} | {_first(res, what)}"
        )


def cpu_table(results: list[SizeResult]) -> None:
    print(
        "\nCPU time (user + system of every process; steadier than wall time when other work shares the cores): "
        "medians; ratio = median of the rounds' patchmoi / raw git"
    )
    print(
        "patches commits | rebuild: raw git     engine  ratio       step  ratio "
        "| adopt: raw git   engine  ratio  adopt op ratio"
    )
    for r in results:
        rb, ad = "rebuild_cpu", "adopt_cpu"
        print(
            f"{r.n:7d} {r.commits:7d} | {r.median('raw', rb):15.3f} s {r.median('engine', rb):7.3f} s "
            f"{r.ratio('engine', rb):5.2f} {r.median('step', rb):7.3f} s {r.ratio('step', rb):5.2f} | "
            f"{r.median('raw', ad):13.3f} s {r.median('engine', ad):6.3f} s {r.ratio('engine', ad):5.2f} "
            f"{r.median('step', ad):6.3f} s {r.ratio('step', ad):5.2f}"
        )


def trace_report(res: SizeResult) -> None:
    assert res.traced is not None
    for what in ("rebuild", "adopt"):
        traces = {who: getattr(res.traced[who], f"trace_{what}") for who in CONTENDERS}
        walls = {who: getattr(res.traced[who], what) for who in CONTENDERS}
        print(f"  {res.n} patches ({res.commits} commits), {what}:{'':<14}" + "".join(f"{w:>22}" for w in CONTENDERS))
        rows = [
            ("wall (traced, untimed)", {w: f"{walls[w]:.3f} s" for w in CONTENDERS}),
            ("git processes started", {w: str(traces[w].top) for w in CONTENDERS}),
            ("  ... and by git itself", {w: str(traces[w].nested) for w in CONTENDERS}),
            ("time inside git", {w: f"{traces[w].in_git:.3f} s" for w in CONTENDERS}),
            ("outside git", {w: f"{max(walls[w] - traces[w].in_git, 0):.3f} s" for w in CONTENDERS}),
        ]
        names = sorted(
            {k for t in traces.values() for k in t.by},
            key=lambda k: -max(sum(t.by.get(k, [])) for t in traces.values()),
        )
        for name in names:
            rows.append(
                (
                    f"  git {name}",
                    {
                        w: (f"x{len(v)} {sum(v) * 1000:8.1f} ms" if (v := traces[w].by.get(name)) else "-")
                        for w in CONTENDERS
                    },
                )
            )
        for label, cells in rows:
            print(f"    {label:<34}" + "".join(f"{cells[w]:>22}" for w in CONTENDERS))


def parse_sizes(values: list[str] | None) -> list[int]:
    if not values:
        return list(DEFAULT_SIZES)
    sizes = [int(x) for v in values for x in v.split(",") if x.strip()]
    if not sizes or min(sizes) < 1:
        raise SystemExit("--patches takes positive numbers (10,50,200)")
    return list(dict.fromkeys(sizes))


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: temporary directories are removed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--patches",
        action="append",
        metavar="N[,N...]",
        help="stack size(s); repeatable or a comma list (default: 10,50,100,200)",
    )
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds per size after the first (default 5)")
    ap.add_argument("--no-trace", action="store_true", help="skip the traced round (git processes per contender)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (its path is printed)")
    args = ap.parse_args()
    sizes = parse_sizes(args.patches)
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even when started in the background

    root = Path(tempfile.mkdtemp(prefix="patchmoi-rebuild-bench-"))
    results: list[SizeResult] = []
    try:
        print(
            f"patch stacks rebuilt on a new upstream tag and adopted; {len(sizes)} size(s), a first round and "
            f"{args.repeat} timed rounds each (contender order rotates), target ratio <= {TARGET}"
        )
        print("rebuild: engine = Rebuild.run in-process; step = event -> attempt (Dispatcher.retry, a subprocess)")
        print("adopt:   engine = adopt_candidate in-process; adopt op = core.adopt.adopt (store + record)")
        for n in sizes:
            t = time.perf_counter()
            results.append(bench_size(root, n, args.repeat, not args.no_trace, args.keep))
            r = results[-1]
            raw, engine, step = (r.median(who, "rebuild") for who in CONTENDERS)
            print(
                f"  {n:>4} patches: rebuild raw git {raw:.3f} s, engine {engine:.3f} s "
                f"(x{r.ratio('engine', 'rebuild'):.2f}), step {step:.3f} s (x{r.ratio('step', 'rebuild'):.2f})"
                f"   [{time.perf_counter() - t:.0f} s]",
                flush=True,
            )
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    table(results, "rebuild", ("engine", "step"), args.repeat)
    table(results, "adopt", ("engine", "adopt op"), args.repeat)
    cpu_table(results)
    names = {("engine", "rebuild"): "engine rebuild", ("step", "rebuild"): "step", ("engine", "adopt"): "engine adopt"}
    names[("step", "adopt")] = "adopt op"
    over = [
        f"{names[who, what]} at {r.n} ({r.ratio(who, what):.2f})"
        for r in results
        for what in ("rebuild", "adopt")
        for who in ("engine", "step")
        if r.ratio(who, what) > TARGET
    ]
    print(f"\ntarget ratio <= {TARGET} (wall): " + ("met" if not over else "exceeded by " + ", ".join(over)))
    if results and results[0].traced is not None:
        print("\nwhere the time goes: one traced round per size (GIT_TRACE2_EVENT; not in the timings above)")
        for r in results:
            trace_report(r)


if __name__ == "__main__":
    main()
