"""The ten operator tasks, in a real terminal (tmux, 80x24), from launch, each in at most five keys.

The store is a real one: a fork with two patches on real git, an upstream release that rebuilt clean (a
candidate) and a newer one that conflicts (the open attempt), signals of two projects, and a source that fails.
A typed text (a reason, a filter) counts as one step, as it would for a person: the keys around it are what a
dashboard can save.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from patchmoi.core.dispatch.dispatcher import Dispatcher
from patchmoi.core.events import upstream_release_event
from patchmoi.core.store import Kind, Store

from .conftest import PYTHON, ROOT
from .feeds import source
from .gitfixture import Forge, git
from .test_tmux import Tmux, tmux  # noqa: F401  (the fixture)

MAX_KEYS = 5


async def release(store: Store, forge: Forge, tag: str, files: dict[str, str]) -> dict[str, object]:
    forge.release(tag, files)
    event = upstream_release_event("acme/widget", tag).to_dict()
    store.record_event(event)
    dispatcher = Dispatcher(store, {}, workspace=forge.fork)
    try:
        outcome = await dispatcher.retry(event["id"])
    finally:
        await dispatcher.aclose()
    return outcome.attempt


def build_world(root: Path) -> tuple[Path, Path, Path]:
    """(data dir, fork, feed-sources.json)"""
    forge = Forge(root, patches=2)
    data = root / "data"
    store = Store(data)
    store.append_many(
        Kind.SIGNALS,
        [
            {
                "sourceId": sid,
                "provider": "github",
                "event": "release",
                "entryId": f"tag:{repo}:{tag}",
                "title": tag,
                "receivedAt": at,
                "repo": {"fullName": repo},
                "ref": tag,
            }
            for sid, repo, tag, at in (
                ("gh-gadget", "acme/gadget", "v0.9.0", "2026-11-22T09:00:00.000Z"),
                ("gh-widget", "acme/widget", "v2.0.0", "2026-11-22T10:00:00.000Z"),
            )
        ],
    )
    store.record_event(
        {
            "id": "patch:gh-gadget:tag:acme/gadget:v0.9.0:upstream.release",
            "type": "upstream.release",
            "source": "patch",
            "receivedAt": "2026-11-22T09:00:00.000Z",
            "payload": {"repo": "acme/gadget", "tag": "v0.9.0", "sourceId": "gh-gadget"},
        }
    )
    ready = asyncio.run(release(store, forge, "v1.1.0", {"README": "upstream 1.1\n"}))
    assert ready["status"] == "changed", ready
    conflict = asyncio.run(release(store, forge, "v2.0.0", {"greeting.txt": "hello upstream v2\nworld\n"}))
    assert conflict["status"] == "needs_intervention", conflict
    store.write_state(
        {
            "gh-widget": {"primed": True, "lastCheckedAt": "2026-11-22T10:00:00.000Z"},
            "gh-gadget": {
                "primed": True,
                "lastCheckedAt": "2026-11-22T10:00:00.000Z",
                "lastError": "Feed gh-gadget returned 503; backing off this host for 120s",
            },
        }
    )
    store.close()
    sources = root / "feed-sources.json"
    sources.write_text(
        json.dumps(
            {
                "sources": [
                    source(sid, f"https://github.invalid/{repo}/releases.atom", repo=repo)
                    for sid, repo in (("gh-widget", "acme/widget"), ("gh-gadget", "acme/gadget"))
                ]
            }
        )
    )
    return data, forge.fork, sources


def conflict_worktree(data: Path) -> Path:
    """Where the open attempt's rebuild stopped (its run's `artifacts.worktree`)."""
    store = Store(data)
    try:
        attempt = store.list_attempts_in_state("open")[0]
        run = store.get_run(str(attempt["workspaceRunIds"][-1]))
        assert run is not None
        return Path(run["resultPayload"]["artifacts"]["worktree"])
    finally:
        store.close()


def dispatches(data: Path) -> list[dict[str, object]]:
    path = data / "workspace-dispatches.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_until(term: Tmux, what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: never happened; screen was:\n{term.screen()}")


def test_ten_operator_tasks_in_five_keys_each_at_80x24(tmp_path: Path, tmux: Tmux) -> None:  # noqa: F811
    data, fork, sources = build_world(tmp_path)
    pager_out = tmp_path / "pager.txt"
    command = (
        f"cd {ROOT} && TERM=xterm-256color PAGER=\"sh -c 'cat > {pager_out}'\" "
        f"{PYTHON} -m patchmoi tui --data-dir {data} --workspace {fork} --sources {sources}"
    )
    tmux("new-session", "-d", "-s", "tui", "-x", "80", "-y", "24", command)
    tmux.wait_for("1 Upstream")
    used: dict[str, int] = {}

    def task(name: str, *keys: str, literal: tuple[int, ...] = (), after: dict[int, str] | None = None) -> None:
        """Send the keys (those at `literal` positions as typed text) and count them; after the key at a
        position in `after`, wait for its text on screen (a dialog that opened) as a person would look."""
        used[name] = len(keys)
        for i, key in enumerate(keys):
            tmux("send-keys", "-t", "tui", *(["-l", key] if i in literal else [key]))
            if after and i in after:
                tmux.wait_for(after[i])
            else:
                time.sleep(0.2)

    # 1. see new upstream activity
    task("see new upstream activity", "1")
    screen = tmux.wait_for("acme/gadget")
    assert "acme/widget" in screen and "v2.0.0" in screen

    # 2. find the newest open attempt: the queue lists open attempts first
    task("find the newest open attempt", "3")
    screen = tmux.wait_for("! open")
    first_row = next(line for line in screen.splitlines() if "open" in line and "@" in line)
    assert "acme/widget@v2.0.0" in first_row

    # 3. read why: the failing command's output, its CONFLICT line kept
    task("read why", "Enter")
    tmux.wait_for("CONFLICT (content): Merge conflict in greeting.txt")

    # 4. retry it with a reason (the person resolved the conflict in the worktree meanwhile)
    worktree = conflict_worktree(data)
    (worktree / "greeting.txt").write_text("hello from the fork, on v2\nworld\n")
    git(worktree, "add", "greeting.txt")
    task("retry it with a reason", "r", "Tab", "resolved by hand", "Enter", literal=(2,), after={0: "Retry flow"})
    wait_until(tmux, "retry", lambda: any(d.get("reason") == "resolved by hand" for d in dispatches(data)))

    # 5. replay an event
    task("replay an event", "Escape", "2", "R", "BTab", "Enter", after={1: "TYPE", 2: "Replay flow"})
    wait_until(tmux, "replay", lambda: any(d.get("operation") == "replay" for d in dispatches(data)))

    # 6. sync an attempt
    task("sync an attempt", "3", "s", "BTab", "Enter", after={0: "STATE", 1: "Sync maintenance"})
    tmux.wait_for("sync: attempt is")

    # 7. filter to one repo
    task("filter to one repo", "2", "/", "repo:acme/gadget", "Enter", literal=(2,), after={0: "TYPE", 1: "Filter rows"})
    screen = tmux.wait_for("1 match")
    assert "acme/gadget@v0.9.0" in screen and "acme/widget@" not in screen

    # 8. follow live: back to every row, on the newest; a record written by another process comes in on top
    task("follow live", "/", "C-u", "Enter", "g", after={0: "Filter rows"})
    tmux.wait_for("acme/widget@")
    subprocess.run(
        [
            PYTHON,
            "-c",
            "import sys; from patchmoi.core.store import Store; Store(sys.argv[1]).record_event({'id': "
            "'patch:gh-widget:tag:live:upstream.release', 'type': 'upstream.release', 'source': 'patch', "
            "'receivedAt': '2026-11-22T23:00:00.000Z', 'payload': {'repo': 'acme/widget', 'tag': 'v9.9.9'}})",
            str(data),
        ],
        cwd=ROOT,
        check=True,
    )
    screen = tmux.wait_for("acme/widget@v9.9.9")
    rows = [line for line in screen.splitlines() if "@" in line]
    assert "v9.9.9" in rows[0]

    # 9. open a candidate's range-diff: the retried v2.0.0 is ready; its detail hands the range-diff to $PAGER
    task("open a candidate's range-diff", "3", "Enter", "p", after={0: "STATE", 1: "ATTEMPT"})
    wait_until(tmux, "range-diff in $PAGER", lambda: pager_out.exists() and "greeting" in pager_out.read_text())

    # 10. see which sources fail and when each polls next
    task("see which sources fail", "Escape", "6")
    screen = tmux.wait_for("✖ failing")
    assert "NEXT" in screen and "gh-gadget" in screen

    over = {name: n for name, n in used.items() if n > MAX_KEYS}
    assert not over, over
    assert len(used) == 10
