"""The maintenance loop closes, on real git: patch series, adopt, resolutions carried forward, the open queue."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from patchmoi.core.adopt import adopt
from patchmoi.core.dispatch.dispatcher import Dispatcher, DispatchOutcome
from patchmoi.core.errors import ConfigError
from patchmoi.core.events import upstream_branch_event, upstream_release_event
from patchmoi.core.gc import collect
from patchmoi.core.store import Store
from patchmoi.core.workspace.adopt import AdoptRefused
from patchmoi.core.workspace.forkconfig import load_fork_config

from .conftest import PYTHON, ROOT, present
from .gitfixture import ENV, Forge, commit_files, git

AUTHOR = {"GIT_AUTHOR_NAME": "Patch Author", "GIT_AUTHOR_EMAIL": "author@fork.invalid"}


def commit_as(repo: Path, files: dict[str, str], message: str, env: dict[str, str]) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    run = {**ENV, **env}
    subprocess.run(["git", "add", "-A"], cwd=repo, env=run, check=True)
    subprocess.run(["git", "commit", "-q", "-m", message], cwd=repo, env=run, check=True)
    return git(repo, "rev-parse", "HEAD")


def add_patch(forge: Forge, name: str, commits: list[tuple[dict[str, str], str]], base: str = "v1.0.0") -> None:
    git(forge.fork, "checkout", "-q", "-b", name, base)
    for files, message in commits:
        commit_as(forge.fork, files, message, AUTHOR)
    git(forge.fork, "checkout", "-q", "main")


async def release(store: Store, forge: Forge, tag: str, workspace: Path | None = None) -> DispatchOutcome:
    event = upstream_release_event("acme/widget", tag).to_dict()
    store.record_event(event)
    dispatcher = Dispatcher(store, {}, workspace=workspace or forge.fork)
    try:
        return await dispatcher.retry(event["id"])
    finally:
        await dispatcher.aclose()


def artifacts(store: Store, outcome: DispatchOutcome) -> dict[str, Any]:
    run = store.get_run(outcome.record["runIds"][-1])
    assert run is not None
    art = run["resultPayload"]["artifacts"]
    assert isinstance(art, dict)
    return art


def subjects(repo: Path, rev_range: str) -> list[str]:
    return git(repo, "log", "--reverse", "--format=%s|%an", rev_range).splitlines()


async def test_multi_commit_patch_keeps_every_commit_and_adopt_keeps_author_and_message(
    tmp_path: Path, data_dir: Path
) -> None:
    forge = Forge(tmp_path, patches=1)
    add_patch(
        forge,
        "patch/020-two-commits",
        [({"two.txt": "one\n"}, "two: first"), ({"two.txt": "one\ntwo\n"}, "two: second")],
    )
    forge.release("v1.1.0", {"README": "upstream 1.1\n"})
    store = Store(data_dir)
    outcome = await release(store, forge, "v1.1.0")
    assert outcome.attempt["status"] == "changed", outcome.attempt
    art = artifacts(store, outcome)
    two = next(p for p in art["series"] if p["patch"] == "patch/020-two-commits")
    assert [c["subject"] for c in two["commits"]] == ["two: first", "two: second"]
    assert {c["fate"] for c in two["commits"]} == {"applied"}
    cand = art["candidateRefs"][0]["sha"]
    assert subjects(forge.fork, f"v1.1.0..{cand}") == [
        "patch: maintained greeting|t",
        "two: first|Patch Author",
        "two: second|Patch Author",
    ]
    adopted = adopt(store, outcome.attempt["id"], by="tester")
    assert forge.rev("main") == cand
    assert forge.rev("patch/020-two-commits") == cand  # the stack, in application order
    assert subjects(forge.fork, "patch/010-maintained-greeting..patch/020-two-commits") == [
        "two: first|Patch Author",
        "two: second|Patch Author",
    ]
    record = adopted["adoption"]
    assert record["by"] == "tester" and record["to"] == cand
    assert [p["commits"] for p in record["patches"]] == [1, 2]
    assert present(store.get_attempt(outcome.attempt["id"]))["adoption"]["adoptedAt"] == record["adoptedAt"]
    # the next release reads the stacked branches: every commit once, in order
    forge.release("v1.2.0", {"README": "upstream 1.2\n"})
    again = await release(store, forge, "v1.2.0")
    assert again.attempt["status"] == "changed", again.attempt
    series = artifacts(store, again)["series"]
    assert [len(p["commits"]) for p in series] == [1, 2]


async def test_patches_apply_in_natural_order(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path, patches=0)
    add_patch(forge, "patch/9-y", [({"order.txt": "nine\n"}, "nine")])
    add_patch(forge, "patch/10-x", [({"order.txt": "ten\n"}, "ten")], base="patch/9-y")
    store = Store(data_dir)
    outcome = await release(store, forge, "v1.0.0")
    assert outcome.attempt["status"] == "changed", outcome.attempt
    art = artifacts(store, outcome)
    assert art["applied"] == ["patch/9-y", "patch/10-x"]
    assert git(forge.fork, "show", f"{art['afterSha']}:order.txt") == "ten"


async def test_merge_commit_inside_a_patch_is_refused_by_name(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path, patches=1)
    git(forge.fork, "checkout", "-q", "-b", "patch/020-merged", "v1.0.0")
    commit_files(forge.fork, {"a.txt": "a\n"}, "side a")
    git(forge.fork, "checkout", "-q", "-b", "side", "v1.0.0")
    commit_files(forge.fork, {"b.txt": "b\n"}, "side b")
    git(forge.fork, "checkout", "-q", "patch/020-merged")
    git(forge.fork, "merge", "-q", "--no-edit", "side")
    merge = forge.rev("HEAD")
    git(forge.fork, "checkout", "-q", "main")
    store = Store(data_dir)
    outcome = await release(store, forge, "v1.0.0")
    assert outcome.attempt["status"] == "blocked"
    assert f"merge commit {merge[:12]}" in outcome.attempt["error"]
    doctor = subprocess.run(
        [PYTHON, "-m", "patchmoi", "patch", "doctor", "--repo", str(forge.fork)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert doctor.returncode == 1 and f"merge commit {merge[:12]}" in doctor.stdout


async def test_conflict_resolved_once_then_adopted_does_not_come_back(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path, patches=0)
    add_patch(forge, "patch/010-greeting", [({"greeting.txt": "hello from the fork\nworld\n"}, "fork greeting")])
    add_patch(forge, "patch/020-shout", [({"shout.txt": "LOUD\n"}, "shout")])
    store = Store(data_dir)
    forge.release("v2.0.0", {"greeting.txt": "hello upstream v2\nworld\n"})
    first = await release(store, forge, "v2.0.0")
    assert first.attempt["status"] == "needs_intervention"
    assert store.list_attempts_in_state("open")[0]["id"] == first.attempt["id"]
    worktree = Path(artifacts(store, first)["worktree"])
    (worktree / "greeting.txt").write_text("hello from the fork, on v2\nworld\n")
    git(worktree, "add", "greeting.txt")
    dispatcher = Dispatcher(store, {})
    second = await dispatcher.retry(first.event["id"], reason="resolved by hand")
    await dispatcher.aclose()
    assert second.attempt["status"] == "changed", second.attempt
    assert [a["id"] for a in store.list_attempts_in_state("open")] == []  # resolved: the queue drained
    assert store.list_attempts_in_state("resolved")[0]["id"] == first.attempt["id"]
    assert store.list_attempts_in_state("ready")[0]["id"] == second.attempt["id"]
    adopt(store, second.attempt["id"], by="tester")
    assert store.list_attempts_in_state("adopted")[0]["id"] == second.attempt["id"]
    assert git(forge.fork, "show", "patch/010-greeting:greeting.txt") == "hello from the fork, on v2\nworld"
    assert (
        git(forge.fork, "log", "-1", "--format=%an|%ae|%s", "patch/010-greeting")
        == "Patch Author|author@fork.invalid|fork greeting"
    )
    assert git(forge.fork, "show", "main:greeting.txt") == "hello from the fork, on v2\nworld"
    assert git(forge.fork, "status", "--porcelain") == ""  # the checked-out main was updated with it
    # the next release does not touch those lines: it rebuilds clean, no resolution needed
    forge.release("v2.1.0", {"README": "upstream 2.1\n"})
    third = await release(store, forge, "v2.1.0")
    assert third.attempt["status"] == "changed", third.attempt
    art = artifacts(store, third)
    assert "resolved" not in art and "reused" not in art and art["needsReview"] is False
    assert store.count_states().get("open", 0) == 0


async def test_recorded_resolution_is_reused_by_a_replay_and_reported(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path, patches=2)
    forge.release("v2.0.0", {"greeting.txt": "hello upstream v2\nworld\n"})
    store = Store(data_dir)
    first = await release(store, forge, "v2.0.0")
    worktree = Path(artifacts(store, first)["worktree"])
    (worktree / "greeting.txt").write_text("resolved once\nworld\n")
    git(worktree, "add", "greeting.txt")
    assert (await release(store, forge, "v2.0.0")).attempt["status"] == "changed"
    # not adopted; a later release meets the same conflict: rerere replays the resolution and says so
    forge.release("v2.0.1", {"README": "a docs fix\n"})
    later = await release(store, forge, "v2.0.1")
    assert later.attempt["status"] == "changed", later.attempt
    art = artifacts(store, later)
    assert art["reused"] == [
        {"patch": "patch/010-maintained-greeting", "commit": forge.rev(forge.patch_names[0]), "files": ["greeting.txt"]}
    ]
    assert "reused recorded resolution for patch/010-maintained-greeting" in later.attempt["message"]
    assert git(forge.fork, "show", f"{art['afterSha']}:greeting.txt") == "resolved once\nworld"
    with pytest.raises(AdoptRefused, match="needs review"):
        adopt(store, later.attempt["id"], by="tester")
    adopt(store, later.attempt["id"], by="tester", reviewed=True)
    assert forge.rev("main") == art["afterSha"]


async def test_conflict_command_leaving_modify_delete_stays_needs_intervention(tmp_path: Path, data_dir: Path) -> None:
    big = "".join(f"line {i}\n" for i in range(670))
    config = '[conflict]\ncommand = "echo resolved, I promise"\ntimeout = 30\n'
    forge = Forge(tmp_path, config=config, patches=0)
    git(forge.upstream, "checkout", "-q", "main")
    commit_files(forge.upstream, {"legacy.py": big}, "legacy module")
    git(forge.upstream, "tag", "v1.1.0")
    git(forge.fork, "fetch", "-q", "upstream", "--tags")
    add_patch(forge, "patch/010-legacy-fix", [({"legacy.py": big + "fork fix\n"}, "fix legacy")], base="v1.1.0")
    git(forge.upstream, "rm", "-q", "legacy.py")
    git(forge.upstream, "commit", "-q", "-m", "remove legacy")
    git(forge.upstream, "tag", "v2.0.0")
    git(forge.fork, "fetch", "-q", "upstream", "--tags")
    store = Store(data_dir)
    outcome = await release(store, forge, "v2.0.0")
    assert outcome.attempt["status"] == "needs_intervention", outcome.attempt
    art = artifacts(store, outcome)
    assert art["unmergedFiles"] == ["legacy.py"]
    assert "left unmerged: legacy.py" in outcome.attempt["error"]
    assert not [r for r in store.list_runs() if (r.get("resultPayload") or {}).get("status") == "changed"]
    assert git(forge.fork, "for-each-ref", "refs/heads/candidate/") == ""  # nothing published


async def test_dropped_patch_that_applies_again_is_flagged(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path, patches=2)
    forge.release("v1.1.0", {"shout.txt": "LOUD\n"})  # upstream takes patch/020
    store = Store(data_dir)
    first = await release(store, forge, "v1.1.0")
    assert artifacts(store, first)["dropped"] == ["patch/020-shout-mode"]
    git(forge.upstream, "rm", "-q", "shout.txt")  # ... and reverts it in the next release
    git(forge.upstream, "commit", "-q", "-m", "revert shout")
    git(forge.upstream, "tag", "v1.2.0")
    git(forge.fork, "fetch", "-q", "upstream", "--tags")
    second = await release(store, forge, "v1.2.0")
    art = artifacts(store, second)
    assert art["reapplied"] == ["patch/020-shout-mode"] and art["needsReview"] is True
    assert "applies again after being dropped as merged upstream: patch/020-shout-mode" in second.attempt["message"]


async def test_adopt_retires_merged_patches_and_refuses_when_main_moved_or_checkout_dirty(
    tmp_path: Path, data_dir: Path
) -> None:
    forge = Forge(tmp_path, patches=2)
    forge.release("v1.1.0", {"shout.txt": "LOUD\n"})
    store = Store(data_dir)
    outcome = await release(store, forge, "v1.1.0")
    old_tip = forge.rev("patch/020-shout-mode")
    (forge.fork / "greeting.txt").write_text("uncommitted\n")
    with pytest.raises(AdoptRefused, match="local changes"):
        adopt(store, outcome.attempt["id"], by="tester")
    git(forge.fork, "checkout", "--", "greeting.txt")
    main_before = forge.rev("main")
    commit_files(forge.fork, {"hotfix.txt": "x\n"}, "hotfix on main")
    with pytest.raises(AdoptRefused, match="main moved since the rebuild"):
        adopt(store, outcome.attempt["id"], by="tester")
    git(forge.fork, "reset", "-q", "--hard", main_before)
    adopted = adopt(store, outcome.event["id"], by="tester")  # an event id adopts its newest success
    assert adopted["adoption"]["retired"] == [
        {
            "name": "patch/020-shout-mode",
            "ref": "refs/patchmoi/retired/patch/020-shout-mode",
            "sha": old_tip,
            "why": "dropped",
        }
    ]
    assert (
        git(forge.fork, "for-each-ref", "--format=%(refname)", "refs/heads/patch/")
        == "refs/heads/patch/010-maintained-greeting"
    )
    assert forge.rev("refs/patchmoi/retired/patch/020-shout-mode") == old_tip
    with pytest.raises(AdoptRefused, match="was adopted"):
        adopt(store, outcome.attempt["id"], by="tester")


async def test_clean_adoption_moves_main_and_pushes_with_a_lease(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path, config='[adopt]\nmode = "clean"\npushRemote = "origin"\n', patches=2)
    git(forge.fork, "push", "-q", "origin", *forge.patch_names)
    forge.release("v1.1.0", {"README": "upstream 1.1\n"})
    store = Store(data_dir)
    outcome = await release(store, forge, "v1.1.0")
    attempt = store.get_attempt(outcome.attempt["id"])
    assert attempt is not None and attempt["adoption"]["by"] == 'patchmoi (adopt = "clean")', attempt
    cand = artifacts(store, outcome)["afterSha"]
    assert forge.rev("main") == cand and attempt["adoption"]["pushed"] is True
    assert git(forge.origin, "rev-parse", "main") == cand
    assert git(forge.origin, "rev-parse", "patch/020-shout-mode") == cand
    # someone else pushes to origin: the next adoption's lease refuses to overwrite it, and says so
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", "-b", "main", str(forge.origin), str(other))
    commit_files(other, {"theirs.txt": "x\n"}, "their commit")
    git(other, "push", "-q", "origin", "main")
    forge.release("v1.2.0", {"README": "upstream 1.2\n"})
    second = await release(store, forge, "v1.2.0")
    record = present(store.get_attempt(second.attempt["id"]))["adoption"]
    assert record["pushed"] is False and "stale info" in record["pushError"]
    assert git(forge.origin, "log", "-1", "--format=%s", "main") == "their commit"


async def test_clean_adoption_skips_a_conflict_command_resolution(tmp_path: Path, data_dir: Path) -> None:
    config = (
        '[adopt]\nmode = "clean"\n[conflict]\ncommand = "printf \'agent\\\\nworld\\\\n\' > greeting.txt && '
        'git add greeting.txt"\n'
    )
    forge = Forge(tmp_path, config=config)
    forge.release("v2.0.0", {"greeting.txt": "hello upstream v2\nworld\n"})
    store = Store(data_dir)
    main_before = forge.rev("main")
    outcome = await release(store, forge, "v2.0.0")
    attempt = store.get_attempt(outcome.attempt["id"])
    assert attempt is not None and attempt["status"] == "changed" and "adoption" not in attempt
    assert "not adopted automatically: it needed a conflict resolution" in attempt["adoptionError"]
    assert forge.rev("main") == main_before
    art = artifacts(store, outcome)
    assert art["resolved"][0]["by"] == "conflict-command" and art["needsReview"] is True


async def test_open_queue_drains_when_a_later_release_succeeds(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path)
    forge.release("v2.0.0", {"greeting.txt": "hello upstream v2\nworld\n"})
    store = Store(data_dir)
    failed = await release(store, forge, "v2.0.0")
    assert [a["id"] for a in store.list_attempts_in_state("open")] == [failed.attempt["id"]]
    git(forge.fork, "checkout", "-q", "-B", forge.patch_names[0], "v2.0.0")  # the operator re-captures the patch
    commit_files(forge.fork, {"greeting.txt": "hello from the fork, v2\nworld\n"}, "patch: greeting on v2")
    git(forge.fork, "checkout", "-q", "main")
    forge.release("v2.1.0", {"README": "upstream 2.1\n"})
    later = await release(store, forge, "v2.1.0")
    assert later.attempt["status"] == "changed", later.attempt
    assert store.list_attempts_in_state("open") == []
    assert store.list_attempts_in_state("superseded")[0]["id"] == failed.attempt["id"]


async def test_linear_series_rebuilds_each_commit_of_main(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path, config='[git]\nseries = "linear"\n', patches=2)
    for name in forge.patch_names:
        git(forge.fork, "branch", "-q", "-D", name)  # linear forks have no patch branches
    forge.release("v1.1.0", {"README": "upstream 1.1\n"})
    store = Store(data_dir)
    outcome = await release(store, forge, "v1.1.0")
    assert outcome.attempt["status"] == "changed", outcome.attempt
    art = artifacts(store, outcome)
    assert [c["subject"] for p in art["series"] for c in p["commits"]] == [
        "patch: maintained greeting",
        "patch: shout mode",
    ]
    adopt(store, outcome.attempt["id"], by="tester")
    assert subjects(forge.fork, "v1.1.0..main") == ["patch: maintained greeting|t", "patch: shout mode|t"]


async def test_a_burst_of_branch_updates_rebuilds_only_the_newest(tmp_path: Path, data_dir: Path) -> None:
    from patchmoi.core.config import Settings
    from patchmoi.core.service import Service

    forge = Forge(tmp_path)
    shas = []
    for i in range(29):
        shas.append(commit_files(forge.upstream, {"README": f"push {i}\n"}, f"push {i}"))
    git(forge.fork, "fetch", "-q", "upstream")
    service = Service(Settings.from_env({"DATA_DIR": str(data_dir)}), workspace=forge.fork)
    events = []
    for sha in shas:  # as the poller emits them, oldest first
        event = upstream_branch_event("acme/widget", "refs/heads/main", sha).to_dict()
        event["payload"]["sourceId"] = "acme-main"
        service.store.record_event(event)
        service.enqueue(event)
        events.append(event)
    await service.drain_dispatches()
    await service.dispatcher.drain()
    await service.stop()
    store = Store(data_dir)
    attempts = store.list_attempts_in_state(None, limit=100)
    rebuilt = [a for a in attempts if a.get("status") == "changed"]
    assert [a["eventId"] for a in rebuilt] == [events[-1]["id"]]
    assert len([a for a in attempts if a["state"] == "superseded"]) == 28
    assert len(store.list_runs(limit=100)) == 1
    refs = git(forge.fork, "for-each-ref", "--format=%(refname)", "refs/heads/candidate/").splitlines()
    assert refs == [f"refs/heads/candidate/{shas[-1][:12]}"]


async def test_gc_prunes_done_worktrees_and_old_candidates_but_never_open_ones(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path, config="[candidate]\nkeep = 1\n")
    store = Store(data_dir)
    for tag in ("v1.1.0", "v1.2.0", "v1.3.0"):
        forge.release(tag, {"README": f"upstream {tag}\n"})
        await release(store, forge, tag)
    forge.release("v2.0.0", {"greeting.txt": "hello upstream v2\nworld\n"})
    conflict = await release(store, forge, "v2.0.0")
    worktree = Path(artifacts(store, conflict)["worktree"])
    report = collect(store)
    assert worktree.is_dir()  # open: someone may be resolving in it
    refs = git(forge.fork, "for-each-ref", "--format=%(refname)", "refs/heads/candidate/").splitlines()
    ready = {r["ref"] for a in store.list_attempts_in_state("ready") for r in a["candidateRefs"]}
    assert set(refs) == ready | {"refs/heads/candidate/v1.3.0"}
    assert report["worktrees"] == []
    # the conflict is superseded by a later success: its worktree goes
    git(forge.fork, "checkout", "-q", "-B", forge.patch_names[0], "v2.0.0")
    commit_files(forge.fork, {"greeting.txt": "fork v2\nworld\n"}, "patch: greeting")
    git(forge.fork, "checkout", "-q", "main")
    forge.release("v2.1.0", {"README": "2.1\n"})
    await release(store, forge, "v2.1.0")  # housekeeping runs after every local attempt
    assert not worktree.exists()


def test_fork_config_rejects_unknown_tables_and_keys(tmp_path: Path) -> None:
    (tmp_path / ".patchmoi.toml").write_text('[verfy]\ncommands = ["make test"]\n')
    with pytest.raises(ConfigError, match=r"unknown table \[verfy\] \(did you mean 'verify'\?\)"):
        load_fork_config(tmp_path)
    (tmp_path / ".patchmoi.toml").write_text('[verify]\ncomands = ["make test"]\n')
    with pytest.raises(ConfigError, match=r"unknown key 'comands' in \[verify\] \(did you mean 'commands'\?\)"):
        load_fork_config(tmp_path)
    (tmp_path / ".patchmoi.toml").write_text('[adopt]\nmode = "always"\n')
    with pytest.raises(ConfigError, match="'mode' must be one of 'manual', 'clean'"):
        load_fork_config(tmp_path)
    (tmp_path / ".patchmoi.toml").write_text('[git]\nupstream_remote = "up"\n[adopt]\npush_remote = "origin"\n')
    config = load_fork_config(tmp_path)
    assert config.upstream_remote == "up" and config.adopt_push_remote == "origin"


def test_relative_data_dir_never_puts_worktrees_inside_the_fork(tmp_path: Path) -> None:
    forge = Forge(tmp_path)
    forge.release("v2.0.0", {"greeting.txt": "hello upstream v2\nworld\n"})  # a conflict leaves a worktree
    env = {"PATH": os.environ["PATH"], "DATA_DIR": "data", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [
            PYTHON,
            "-m",
            "patchmoi",
            "run",
            "upstream-release",
            "--repo",
            "acme/widget",
            "--tag",
            "v2.0.0",
            "--workspace",
            "fork",
            "--json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stderr
    worktree = Path(json.loads(out.stdout)["attempt"]["error"].split(" resolve in ")[1].split(",")[0])
    assert worktree.is_relative_to(tmp_path / "data" / "worktrees")
    assert git(forge.fork, "status", "--porcelain") == ""


def test_wrong_workspace_fails_the_attempt_and_poll_once_exits_1(tmp_path: Path, server: Any) -> None:
    from .feeds import atom_releases, source
    from .loopback import Reply

    feed = {"body": atom_releases(["v1"])}
    server.route("/r.atom", lambda _r: Reply(body=feed["body"]))
    missing = tmp_path / "no-such-fork"
    target = {
        "mode": "workspace_flow",
        "eventType": "upstream.release",
        "transport": "local",
        "workspace": str(missing),
    }
    sources = tmp_path / "feed-sources.json"
    sources.write_text(json.dumps({"sources": [source("s", server.url + "/r.atom", target=target)]}))
    env = {"PATH": os.environ["PATH"], "DATA_DIR": str(tmp_path / "data"), "FEED_SOURCES_PATH": str(sources)}

    def poll() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "patchmoi", "poll", "--once"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )

    assert poll().returncode == 0  # primes
    feed["body"] = atom_releases(["v2", "v1"])
    out = poll()
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"local workspace {missing} does not exist" in out.stderr
    attempt = Store(tmp_path / "data").list_attempts()[0]
    assert attempt["status"] == "failed" and str(missing) in attempt["message"]
    doctor = subprocess.run(
        [PYTHON, "-m", "patchmoi", "doctor"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert doctor.returncode == 1 and f"{missing} does not exist" in doctor.stdout


async def test_http_open_queue_and_adopt(tmp_path: Path, data_dir: Path) -> None:
    from urllib.parse import quote

    from starlette.testclient import TestClient

    from patchmoi.core.config import Settings
    from patchmoi.server.app import create_app

    forge = Forge(tmp_path)
    forge.release("v2.0.0", {"greeting.txt": "hello upstream v2\nworld\n"})
    store = Store(data_dir)
    failed = await release(store, forge, "v2.0.0")
    git(forge.fork, "checkout", "-q", "-B", forge.patch_names[0], "v2.0.0")
    commit_files(forge.fork, {"greeting.txt": "fork v2\nworld\n"}, "patch: greeting on v2")
    git(forge.fork, "checkout", "-q", "main")
    ok = await release(store, forge, "v2.0.0")  # same event: the retry after fixing the patch
    settings = Settings.from_env({"DATA_DIR": str(data_dir), "PATCH_ADMIN_TOKEN": "tok"})
    auth = {"Authorization": "Bearer tok"}
    with TestClient(create_app(settings, poll=False)) as client:
        assert client.get("/maintenance-attempts?state=open", headers=auth).json() == {"attempts": []}
        resolved = client.get("/maintenance-attempts?state=resolved", headers=auth).json()["attempts"]
        assert [a["id"] for a in resolved] == [failed.attempt["id"]] and resolved[0]["state"] == "resolved"
        bad = client.get("/maintenance-attempts?state=nope", headers=auth)
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"
        path = "/maintenance-attempts/" + quote(ok.attempt["id"], safe="")
        assert client.get(path, headers=auth).json()["attempt"]["state"] == "ready"
        refused = client.post("/maintenance-attempts/" + quote(failed.attempt["id"], safe="") + "/adopt", headers=auth)
        assert refused.status_code == 409 and refused.json()["error"] == "adopt_refused"
        assert "only a changed or completed rebuild" in refused.json()["message"]
        adopted = client.post(path + "/adopt", headers=auth, json={"by": "ops@example", "reason": "looks right"})
        assert adopted.status_code == 200, adopted.text
        record = adopted.json()["attempt"]["adoption"]
        assert record["by"] == "ops@example" and record["reason"] == "looks right"
        assert forge.rev("main") == record["to"]
        assert client.get(path, headers=auth).json()["attempt"]["state"] == "adopted"
        again = client.post(path + "/adopt", headers=auth)
        assert again.status_code == 409 and "was adopted at" in again.json()["message"]
        assert client.post(path + "/adopt").status_code == 401
        assert "/maintenance-attempts/{id}/adopt" in client.get("/openapi.json", headers=auth).json()["paths"]


def test_cli_adopt_attempts_open_status_and_gc(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path)
    forge.release("v2.0.0", {"greeting.txt": "hello upstream v2\nworld\n"})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "patchmoi", *args, "--data-dir", str(data_dir)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": os.environ["PATH"]},
        )

    run = cli("run", "upstream-release", "--repo", "acme/widget", "--tag", "v2.0.0", "--workspace", str(forge.fork))
    assert run.returncode == 1
    queue = cli("attempts", "--open")
    assert queue.returncode == 0 and "open" in queue.stdout and "needs_intervention" in queue.stdout
    status = cli("status")
    assert "open queue   1 need a person" in status.stdout
    store = Store(data_dir)
    worktree = Path(store.list_attempts_in_state("open")[0]["message"].split(" resolve in ")[1].split(",")[0])
    (worktree / "greeting.txt").write_text("resolved\nworld\n")
    git(worktree, "add", "greeting.txt")
    event_id = store.list_events()[0]["id"]
    retry = cli("retry", event_id)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert "the open queue is empty" in cli("attempts", "--open").stdout
    attempt_id = Store(data_dir).list_attempts_in_state("ready")[0]["id"]
    show = cli("show", attempt_id)
    assert (
        "(state: ready)" in show.stdout
        and "applied   " in show.stdout
        and f"patchmoi adopt '{attempt_id}'" in show.stdout
    )
    (forge.fork / "README").write_text("dirty\n")
    refused = cli("adopt", attempt_id)
    assert refused.returncode == 1 and "not adopted:" in refused.stderr and "local changes" in refused.stderr
    git(forge.fork, "checkout", "--", "README")
    adopted = cli("adopt", attempt_id, "--reason", "checked")
    assert adopted.returncode == 0, adopted.stderr
    assert "moved     patch/010-maintained-greeting" in adopted.stdout
    assert "adopted      " in cli("show", attempt_id).stdout
    gc = cli("gc", "--dry-run")
    assert gc.returncode == 0
    help_text = cli("adopt", "--help").stdout
    assert "--reviewed" in help_text and "force-with-lease" in help_text


async def test_adopt_interrupted_before_its_record_is_recorded_on_the_next_try(tmp_path: Path, data_dir: Path) -> None:
    from patchmoi.core.adopt import rebuild_report
    from patchmoi.core.workspace.adopt import adopt_candidate

    forge = Forge(tmp_path)
    forge.release("v1.1.0", {"README": "1.1\n"})
    store = Store(data_dir)
    outcome = await release(store, forge, "v1.1.0")
    adopt_candidate(rebuild_report(store, outcome.attempt), label="x", reflog="test")  # refs moved, no record
    assert "adoption" not in present(store.get_attempt(outcome.attempt["id"]))
    adopted = adopt(store, outcome.attempt["id"], by="tester")
    assert "interrupted" in adopted["adoption"]["recovered"]
    assert forge.rev("main") == adopted["adoption"]["to"]


async def test_clean_fork_adopts_a_same_tree_release_that_retires_a_merged_patch(
    tmp_path: Path, data_dir: Path
) -> None:
    forge = Forge(tmp_path, config='[adopt]\nmode = "clean"\n', patches=2)
    forge.release("v1.1.0", {"greeting.txt": "hello from the fork\nworld\n"})  # upstream takes patch/010 as is
    store = Store(data_dir)
    outcome = await release(store, forge, "v1.1.0")
    attempt = store.get_attempt(outcome.attempt["id"])
    assert attempt is not None and attempt["status"] == "completed"  # same tree, but main is not on v1.1.0 yet
    assert attempt["adoption"]["retired"][0]["name"] == "patch/010-maintained-greeting"
    assert git(forge.fork, "merge-base", "--is-ancestor", "v1.1.0", "main") == ""
    replay = await release(store, forge, "v1.1.0")  # nothing left to move: no adoption, no error
    again = store.get_attempt(replay.attempt["id"])
    assert again is not None and again["status"] == "completed", again
    assert "adoption" not in again and "adoptionError" not in again


async def test_a_retry_of_an_older_release_never_moves_main_back_on_its_own(tmp_path: Path, data_dir: Path) -> None:
    """An operator retries a release the fork has moved past (the review of #16 saw main go from v1.4.9 to v1.2.0
    after a retry of an old, resolved attempt): the rebuild runs, but its candidate is not adopted without a
    person saying so (`--reviewed`)."""
    forge = Forge(tmp_path, config='[adopt]\nmode = "clean"\n', patches=2)
    store = Store(data_dir)
    forge.release("v1.1.0", {"README": "upstream 1.1\n"})
    first = await release(store, forge, "v1.1.0")
    forge.release("v1.2.0", {"README": "upstream 1.2\n"})
    await release(store, forge, "v1.2.0")
    on_v12 = forge.rev("main")
    assert present(store.get_attempt(first.attempt["id"])).get("adoption")
    again = await release(store, forge, "v1.1.0")  # the same event, retried
    attempt = present(store.get_attempt(again.attempt["id"]))
    assert attempt["status"] == "changed" and "adoption" not in attempt
    assert "which the fork's main already contains" in attempt["adoptionError"]
    assert forge.rev("main") == on_v12
    with pytest.raises(AdoptRefused, match="--reviewed"):
        adopt(store, attempt["id"], by="tester")
    assert forge.rev("main") == on_v12
    adopt(store, attempt["id"], by="tester", reviewed=True)  # a person means it
    assert forge.rev("main") == artifacts(store, again)["afterSha"]
