"""The local maintenance runner on real git: rebuild, conflicts, resume, verify, drop, block, time out."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from patchmoi.core.dispatch.dispatcher import Dispatcher, DispatchOutcome
from patchmoi.core.events import upstream_release_event
from patchmoi.core.store import Store

from .conftest import PYTHON, ROOT
from .gitfixture import Forge, git


async def release_event(store: Store, forge: Forge, tag: str) -> DispatchOutcome:
    event = upstream_release_event("acme/widget", tag).to_dict()
    store.record_event(event)
    dispatcher = Dispatcher(store, {}, workspace=forge.fork)
    try:
        return await dispatcher.retry(event["id"])
    finally:
        await dispatcher.aclose()


def result(store: Store, outcome: DispatchOutcome) -> dict[str, Any]:
    run = store.get_run(outcome.record["runIds"][0])
    assert run is not None
    payload = run["resultPayload"]
    assert isinstance(payload, dict)
    return payload


async def test_noop_release_completes(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path)
    main_before = forge.rev("main")
    store = Store(data_dir)
    outcome = await release_event(store, forge, "v1.0.0")
    assert outcome.attempt["status"] == "completed", outcome.attempt
    payload = result(store, outcome)
    art = payload["artifacts"]
    assert art["applied"] == forge.patch_names and art["dropped"] == []
    cand = art["candidateRefs"][0]
    assert cand["ref"] == "refs/heads/candidate/v1.0.0" and cand["pushed"] is False and cand["remote"] == "local"
    assert forge.rev("refs/heads/candidate/v1.0.0") == cand["sha"]
    assert forge.rev("main") == main_before  # the operator's checkout is never moved
    assert git(forge.fork, "status", "--porcelain") == ""
    assert outcome.attempt["candidateRefs"][0]["ref"] == "refs/heads/candidate/v1.0.0"
    run = store.get_run(outcome.record["runIds"][0])
    assert run is not None and any("cherry-pick --allow-empty" in e["command"] for e in run["log"])
    assert list((data_dir / "worktrees").iterdir()) == []  # worktree and its state removed on success


async def test_clean_upstream_change_is_changed_with_range_diff(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path, config="[fetch]\nallowFetch = true\n")
    git(forge.upstream, "tag", "-d", "v1.0.0")  # irrelevant; ensure fetch works without it
    from .gitfixture import commit_files

    commit_files(forge.upstream, {"README": "upstream project, now better\n"}, "docs")
    git(forge.upstream, "tag", "v1.1.0")  # the fork has NOT fetched: allowFetch makes the step do it
    store = Store(data_dir)
    outcome = await release_event(store, forge, "v1.1.0")
    assert outcome.attempt["status"] == "changed", outcome.attempt
    art = result(store, outcome)["artifacts"]
    assert art["upstreamSha"] == git(forge.upstream, "rev-parse", "v1.1.0")
    assert "patch: maintained greeting" in art["rangeDiff"] and "patch: shout mode" in art["rangeDiff"]
    after = forge.rev("refs/heads/candidate/v1.1.0")
    assert git(forge.fork, "show", f"{after}:README") == "upstream project, now better"
    assert git(forge.fork, "show", f"{after}:greeting.txt").startswith("hello from the fork")


async def test_conflict_needs_intervention_then_resumes_after_manual_fix(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path, patches=3)
    forge.release("v2.0.0", {"greeting.txt": "hello upstream v2\nworld\n"})
    store = Store(data_dir)
    first = await release_event(store, forge, "v2.0.0")
    assert first.attempt["status"] == "needs_intervention", first.attempt
    art = result(store, first)["artifacts"]
    assert art["failedPatch"] == "patch/010-maintained-greeting" and art["unmergedFiles"] == ["greeting.txt"]
    worktree = Path(art["worktree"])
    assert worktree.is_dir() and worktree.is_relative_to(data_dir)
    assert "<<<<<<<" in (worktree / "greeting.txt").read_text()
    # the operator resolves in the worktree, then retries the same event
    (worktree / "greeting.txt").write_text("hello from the fork, on v2\nworld\n")
    git(worktree, "add", "greeting.txt")
    # a plain retry (no --workspace): the event's last local dispatch says which checkout to use
    dispatcher = Dispatcher(store, {})
    second = await dispatcher.retry(first.event["id"])
    await dispatcher.aclose()
    assert second.attempt["status"] == "changed", second.attempt
    art2 = result(store, second)["artifacts"]
    assert art2["applied"] == forge.patch_names
    assert art2["resolved"] == [
        {
            "patch": "patch/010-maintained-greeting",
            "commit": forge.rev(forge.patch_names[0]),
            "files": ["greeting.txt"],
            "by": "operator",
        }
    ]
    cand = forge.rev("refs/heads/candidate/v2.0.0")
    assert git(forge.fork, "show", f"{cand}:greeting.txt") == "hello from the fork, on v2\nworld"
    assert git(forge.fork, "show", f"{cand}:IDENTITY") == "fork of upstream"
    assert not worktree.exists()


async def test_retry_while_still_unresolved_stays_needs_intervention(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path)
    forge.release("v2.0.0", {"greeting.txt": "hello upstream v2\nworld\n"})
    store = Store(data_dir)
    await release_event(store, forge, "v2.0.0")
    again = await release_event(store, forge, "v2.0.0")
    assert again.attempt["status"] == "needs_intervention"
    assert "still has unresolved files: greeting.txt" in again.attempt["error"]


async def test_conflict_command_resolves(tmp_path: Path, data_dir: Path) -> None:
    config = (
        "[conflict]\ncommand = \"printf 'hello resolved by agent\\\\nworld\\\\n' > greeting.txt"
        ' && git add greeting.txt"\ntimeout = 30\n'
    )
    forge = Forge(tmp_path, config=config)
    forge.release("v2.0.0", {"greeting.txt": "hello upstream v2\nworld\n"})
    store = Store(data_dir)
    outcome = await release_event(store, forge, "v2.0.0")
    assert outcome.attempt["status"] == "changed", outcome.attempt
    art = result(store, outcome)["artifacts"]
    assert art["resolved"][0]["patch"] == "patch/010-maintained-greeting"
    assert git(forge.fork, "show", "candidate/v2.0.0:greeting.txt") == "hello resolved by agent\nworld"


async def test_failing_verify_needs_intervention(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path, config='[verify]\ncommands = ["test -f shout.txt", "grep -q upstream README && exit 3"]\n')
    store = Store(data_dir)
    outcome = await release_event(store, forge, "v1.0.0")
    assert outcome.attempt["status"] == "needs_intervention"
    assert "verify command `grep -q upstream README && exit 3` failed (3)" in outcome.attempt["error"]
    art = result(store, outcome)["artifacts"]
    assert art["checks"] == [
        {"command": "test -f shout.txt", "exitCode": 0},
        {"command": "grep -q upstream README && exit 3", "exitCode": 3},
    ]


async def test_dirty_checkout_or_rebase_in_progress_never_block_a_worktree_rebuild(
    tmp_path: Path, data_dir: Path
) -> None:
    forge = Forge(tmp_path)
    store = Store(data_dir)
    (forge.fork / "scratch.txt").write_text("wip")  # untracked, like an untracked .patchmoi.toml
    (forge.fork / "README").write_text("local edit\n")
    dirty = await release_event(store, forge, "v1.0.0")
    assert dirty.attempt["status"] == "completed", dirty.attempt
    assert git(forge.fork, "status", "--porcelain") == "M README\n?? scratch.txt".strip()
    git(forge.fork, "checkout", "--", "README")
    (forge.fork / "scratch.txt").unlink()
    forge.release("v2.0.0", {"greeting.txt": "other\nworld\n"})
    subprocess.run(["git", "rebase", "v2.0.0"], cwd=forge.fork, capture_output=True)  # stops on the conflict
    busy = await release_event(store, forge, "v2.0.0")
    assert busy.attempt["status"] == "needs_intervention", busy.attempt  # the rebuild's own conflict, not the rebase
    unknown = await release_event(store, forge, "v9.9.9")
    assert unknown.attempt["status"] == "blocked" and "cannot resolve upstream tag 'v9.9.9'" in unknown.attempt["error"]


async def test_patch_merged_upstream_is_dropped(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path)
    forge.release("v1.1.0", {"shout.txt": "LOUD\n"})  # upstream took our patch/020
    store = Store(data_dir)
    outcome = await release_event(store, forge, "v1.1.0")
    art = result(store, outcome)["artifacts"]
    assert art["dropped"] == ["patch/020-shout-mode"] and art["applied"] == ["patch/010-maintained-greeting"]
    assert "dropped (merged upstream): patch/020-shout-mode" in outcome.attempt["message"]


async def test_hanging_step_is_killed_at_its_timeout(tmp_path: Path, data_dir: Path) -> None:
    config = (
        '[[steps]]\nname = "rebuild"\non = ["upstream.release"]\nbuiltin = "rebuild"\ntimeout = 2\n'
        '[verify]\ncommands = ["sleep 60"]\n'
    )
    forge = Forge(tmp_path, config=config)
    store = Store(data_dir)
    outcome = await release_event(store, forge, "v1.0.0")
    assert outcome.attempt["status"] == "failed"
    assert "timed out after 2s" in outcome.attempt["error"]


def test_cli_patch_tools_and_run_by_hand(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "patchmoi", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "/usr/bin:/bin"},
        )

    doctor = cli("patch", "doctor", "--repo", str(forge.fork), "--json")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert json.loads(doctor.stdout)["ready"] is True
    listing = cli("patch", "list", "--repo", str(forge.fork))
    assert "patch/010-maintained-greeting" in listing.stdout and "patch: maintained greeting" in listing.stdout
    forge.release("v1.1.0", {"README": "new\n"})
    out = cli(
        "run",
        "upstream-release",
        "--repo",
        "acme/widget",
        "--tag",
        "v1.1.0",
        "--workspace",
        str(forge.fork),
        "--data-dir",
        str(data_dir),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "✚ changed" in out.stdout and "refs/heads/candidate/v1.1.0" in out.stdout
    show = cli(
        "show",
        "patch:upstream.release:acme/widget:v1.1.0:dispatch:" + Store(data_dir).list_attempts()[0]["createdAt"],
        "--data-dir",
        str(data_dir),
    )
    assert show.returncode == 0
    run_id = Store(data_dir).list_runs()[0]["id"]
    run_show = cli("show", run_id, "--data-dir", str(data_dir))
    assert "cherry-pick --allow-empty" in run_show.stdout
    (forge.fork / "dirt").write_text("x")
    not_ready = cli("patch", "doctor", "--repo", str(forge.fork))
    assert not_ready.returncode == 1 and "working tree has local changes" in not_ready.stdout
    setup = cli(
        "setup", "fork", "--repo", str(forge.upstream), "--upstream-url", str(forge.upstream), "--apply", "--json"
    )
    assert json.loads(setup.stdout)["addedUpstream"] is True


async def test_candidate_push_with_force_with_lease(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path, config='[candidate]\npush = true\npushRemote = "origin"\n')
    store = Store(data_dir)
    outcome = await release_event(store, forge, "v1.0.0")
    cand = result(store, outcome)["artifacts"]["candidateRefs"][0]
    assert cand["pushed"] is True and cand["remote"] == "origin"
    assert git(forge.origin, "rev-parse", "refs/heads/candidate/v1.0.0") == cand["sha"]
