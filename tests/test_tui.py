"""The dashboard through Textual's Pilot: every key and modal against a real store and local runner (and
adoption against a real fork), plus snapshots of each tab and of the detail view at 80x24 and 200x50."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from textual.coordinate import Coordinate

from patchmoi.core.config import Settings
from patchmoi.core.dispatch.dispatcher import Dispatcher
from patchmoi.core.events import upstream_release_event
from patchmoi.core.store import Kind, Store
from patchmoi.tui.app import PatchmoiApp
from patchmoi.tui.client import LocalClient
from patchmoi.tui.screens import ConfirmScreen, DetailScreen, FilterScreen, HelpScreen

from .gitfixture import Forge, commit_files, git

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
EID = "patch:gh-widget:tag:github.com,2008:Repository/1/v1.2.0:upstream.release"
EID2 = "patch:gh-gadget:tag:github.com,2008:Repository/2/v3.0.0:upstream.release"


def seed(data_dir: Path, workspace: Path | None = None, *, store: Store | None = None) -> None:
    """The records the dashboard tests read, written to DATA_DIR's files (or to `store`)."""
    store = store or Store(data_dir)
    store.append_many(
        Kind.SIGNALS,
        [
            {
                "sourceId": "gh-widget",
                "provider": "github",
                "event": "release",
                "entryId": "tag:github.com,2008:Repository/1/v1.2.0",
                "title": "v1.2.0",
                "url": "https://github.com/acme/widget/releases/tag/v1.2.0",
                "publishedAt": "2026-11-21T10:00:00.000Z",
                "receivedAt": "2026-11-21T10:01:00.000Z",
                "repo": {"fullName": "acme/widget"},
                "ref": "v1.2.0",
            },
            {
                "sourceId": "gh-gadget",
                "provider": "github",
                "event": "push",
                "entryId": "c1",
                "title": "fix build",
                "receivedAt": "2026-11-21T11:30:00.000Z",
                "repo": {"fullName": "acme/gadget"},
                "ref": "refs/heads/main",
                "sha": "0123456789abcdef0123456789abcdef01234567",
            },
        ],
    )
    for eid, repo, tag, at in (
        (EID, "acme/widget", "v1.2.0", "2026-11-21T10:01:00.000Z"),
        (EID2, "acme/gadget", "v3.0.0", "2026-11-21T11:00:00.000Z"),
    ):
        store.record_event(
            {
                "id": eid,
                "type": "upstream.release",
                "source": "patch",
                "receivedAt": at,
                "payload": {"repo": repo, "tag": tag, "sourceId": eid.split(":")[1]},
            }
        )
    store.append(
        Kind.DISPATCHES,
        {
            "eventId": EID,
            "eventType": "upstream.release",
            "operation": "dispatch",
            "target": "local",
            "transport": "local",
            "status": "dispatched",
            "runIds": ["run-a"],
            "matched": 1,
            "createdAt": "2026-11-21T10:01:01.000Z",
        },
    )
    store.append(
        Kind.RUNS,
        {
            "id": "run-a",
            "eventId": EID,
            "flowName": "patchmoi",
            "stepName": "rebuild",
            "status": "needs_intervention",
            "processStatus": "completed",
            "createdAt": "2026-11-21T10:01:01.000Z",
            "completedAt": "2026-11-21T10:01:05.000Z",
            "resultPayload": {
                "status": "needs_intervention",
                "message": "patch/010 conflicts",
                "artifacts": {
                    "failedPatch": "patch/010",
                    "unmergedFiles": ["a.txt"],
                    "worktree": "/srv/data/worktrees/x",
                },
            },
            "log": [{"command": "git cherry-pick abc", "exitCode": 1, "output": "CONFLICT (content)"}],
        },
    )
    store.append(
        Kind.ATTEMPTS,
        {
            "id": f"{EID}:dispatch:2026-11-21T10:01:01.000Z",
            "eventId": EID,
            "eventType": "upstream.release",
            "operation": "dispatch",
            "status": "needs_intervention",
            "upstreamRepo": "acme/widget",
            "upstreamTag": "v1.2.0",
            "workspaceRunIds": ["run-a"],
            "error": "patch/010 conflicts",
            "candidateRefs": [],
            "createdAt": "2026-11-21T10:01:01.000Z",
            "updatedAt": "2026-11-21T10:01:05.000Z",
        },
    )
    store.close()


def make_app(data_dir: Path, *, read_only: bool = False, workspace: Path | None = None) -> PatchmoiApp:
    client = LocalClient(Settings.from_env({"DATA_DIR": str(data_dir)}), read_only=read_only, workspace=workspace)
    app = PatchmoiApp(client, clock=lambda: NOW, health_interval=3600)
    app.sub_title = "local data"
    return app


def selected(app: PatchmoiApp) -> dict[str, Any]:
    row = app.selected()
    assert row is not None
    return row


def make_workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".patchmoi.toml").write_text(
        '[[steps]]\nname = "ok"\non = ["upstream.release"]\n'
        'command = \'echo FLOW_RESULT {\\"status\\": \\"changed\\", '
        '\\"message\\": \\"rebuilt\\"}\'\n'
    )
    return ws


async def test_tabs_rows_and_navigation(data_dir: Path) -> None:
    seed(data_dir)
    app = make_app(data_dir)
    async with app.run_test(size=(120, 30)) as pilot:
        assert app.active_kind == "signals" and app.table("signals").row_count == 2
        for key, kind, rows in (("2", "events", 2), ("3", "attempts", 1), ("4", "dispatches", 1), ("5", "runs", 1)):
            await pilot.press(key)
            assert app.active_kind == kind and app.table(kind).row_count == rows
        await pilot.press("2", "j")
        assert app.table("events").cursor_row == 1
        await pilot.press("k")
        assert app.table("events").cursor_row == 0
        await pilot.press("G")
        assert app.table("events").cursor_row == 1
        await pilot.press("g")
        assert app.table("events").cursor_row == 0
        assert selected(app)["id"] == EID2  # newest first


async def test_detail_walks_the_chain_and_esc_returns(data_dir: Path) -> None:
    seed(data_dir)
    app = make_app(data_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3", "enter")
        await pilot.pause()
        assert isinstance(app.screen, DetailScreen)
        chain = app.screen.chain
        assert chain["event"]["id"] == EID and chain["runs"][0]["id"] == "run-a"
        text = str(app.screen.query_one("#detail-body").render())
        assert "resume in /srv/data/worktrees/x" in text and "$ git cherry-pick abc" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen)
        await pilot.press("1", "enter")  # a signal walks to its flow event
        await pilot.pause()
        assert isinstance(app.screen, DetailScreen) and app.screen.chain.get("signal") is not None


async def test_retry_confirm_with_reason_dispatches_and_live_tail_shows_it(data_dir: Path, tmp_path: Path) -> None:
    seed(data_dir)
    app = make_app(data_dir, workspace=make_workspace(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("2")
        await pilot.press("j")  # the older event (EID)
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("tab", *"upstream fixed")  # into the reason: its enter confirms
        await pilot.press("enter")
        for _ in range(100):
            await pilot.pause(0.05)
            if app.table("attempts").row_count >= 2 and any(a.get("status") == "changed" for a in app.rows["attempts"]):
                break
        records = [json.loads(x) for x in (data_dir / "workspace-dispatches.jsonl").read_text().splitlines()]
        assert records[-1]["eventId"] == EID and records[-1]["reason"] == "upstream fixed"
        assert any(a.get("status") == "changed" for a in app.rows["attempts"])  # arrived through the live tail


async def test_replay_cancel_and_sync(data_dir: Path, tmp_path: Path) -> None:
    seed(data_dir)
    app = make_app(data_dir, workspace=make_workspace(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("2", "R")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, ConfirmScreen)
        assert len((data_dir / "workspace-dispatches.jsonl").read_text().splitlines()) == 1  # nothing sent
        await pilot.press("R")
        await pilot.pause()
        await pilot.click("#confirm")
        for _ in range(100):
            await pilot.pause(0.05)
            lines = (data_dir / "workspace-dispatches.jsonl").read_text().splitlines()
            if len(lines) == 2:
                break
        assert json.loads(lines[-1])["operation"] == "replay"
        await pilot.press("3", "s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("shift+tab", "enter")  # Cancel is the default: confirm is a deliberate move
        await pilot.pause(0.3)
        notes = list(app.messages)
        assert not any("failed" in n.message for n in notes), [n.message for n in notes]
        synced = [n for n in notes if n.title == "sync"]
        assert synced and synced[-1].severity == "information"
        assert synced[-1].title == "sync" and synced[-1].message.startswith("attempt is ")
        assert "None" not in synced[-1].message


async def test_read_only_disables_actions(data_dir: Path) -> None:
    seed(data_dir)
    app = make_app(data_dir, read_only=True)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("2", "r")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert any("read-only" in n.message for n in app.messages)
        await pilot.press("s", "R")
        assert not (data_dir / "workspace-dispatches.jsonl").read_text().count("\n") > 1


async def test_filter_follow_help_and_palette(data_dir: Path) -> None:
    seed(data_dir)
    app = make_app(data_dir)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("2", "slash")
        await pilot.pause()
        assert isinstance(app.screen, FilterScreen)
        await pilot.press(*"repo:gadget", "enter")
        await pilot.pause()
        assert app.table("events").row_count == 1 and selected(app)["id"] == EID2
        assert "filter repo:gadget" in str(app.query_one("#status").render())
        await pilot.press("slash")
        await pilot.pause()
        await pilot.press("ctrl+a", "ctrl+k", "enter")  # empty clears
        await pilot.pause()
        assert app.table("events").row_count == 2
        await pilot.press("f")
        assert app.follow is False and "follow off" in str(app.query_one("#status").render())
        await pilot.press("f")
        assert app.follow is True
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        help_text = str(app.screen.query_one("#help-body").render())
        assert "s / a  sync the attempt from its runs / adopt its candidate" in help_text
        await pilot.press("escape")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {
            "Retry selected event",
            "Replay selected event",
            "Sync selected attempt",
            "Adopt selected attempt",
            "Filter rows",
            "Toggle follow",
            "Go to Runs",
        } <= set(titles)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Go to Runs")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert app.active_kind == "runs"
        await pilot.press("q")


async def test_large_store_pages_on_demand(data_dir: Path) -> None:
    store = Store(data_dir)
    store.append_many(
        Kind.EVENTS,
        [
            {
                "id": f"e{i}",
                "type": "upstream.release",
                "receivedAt": "2026-11-21T10:00:00.000Z",
                "payload": {"repo": "r", "tag": f"v{i}"},
            }
            for i in range(1500)
        ],
    )
    app = make_app(data_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("2")
        assert app.table("events").row_count == 200  # a page, not the history
        await pilot.press("G")
        await pilot.pause()
        assert 200 < app.table("events").row_count < 1500  # more pages arrive as the cursor nears the end
        for _ in range(10):
            await pilot.press("G")
            await pilot.pause()
        assert app.table("events").row_count == 1500 and selected(app)["id"] == "e0"
        assert app.exhausted["events"]


# -- attempt states and adoption (core.attempt_states, core.adopt) on a real fork ------------------------------
async def changed_release(data_dir: Path, forge: Forge, tag: str = "v1.1.0") -> dict[str, Any]:
    """Upstream releases `tag`; the local runner rebuilds the fork's patch stack on it: a `changed` attempt."""
    forge.release(tag, {"README": f"upstream project, {tag}\n"})
    store = Store(data_dir)
    event = upstream_release_event("acme/widget", tag).to_dict()
    store.record_event(event)
    dispatcher = Dispatcher(store, {}, workspace=forge.fork)
    try:
        outcome = await dispatcher.retry(event["id"])
    finally:
        await dispatcher.aclose()
        store.close()
    assert outcome.attempt["status"] == "changed", outcome.attempt
    return outcome.attempt


def cell(app: PatchmoiApp, kind: str, row: int, column: str) -> str:
    table = app.table(kind)
    value = table.get_cell_at(Coordinate(row, table.get_column_index(column)))
    return str(getattr(value, "plain", value))


def notes(app: PatchmoiApp) -> str:
    return "\n".join(f"{n.title}: {n.message}" for n in app.messages)


async def wait_for(pilot: Any, check: Any, tries: int = 100) -> None:
    for _ in range(tries):
        if check():
            return
        await pilot.pause(0.05)


async def test_state_column_and_open_queue(data_dir: Path) -> None:
    seed(data_dir)
    app = make_app(data_dir)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("3")
        assert cell(app, "attempts", 0, "STATE") == "! open"  # needs_intervention, nothing later succeeded
        assert "! 1 open" in str(app.query_one("#status").render())
        await pilot.press("a")  # nothing to adopt: said so, no dialog
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert "only a changed or completed rebuild has a candidate" in notes(app)
        await pilot.press("enter")
        await pilot.pause()
        text = str(app.screen.query_one("#detail-body").render())
        assert "state ! open" in text and "needs a person" in text
        await pilot.press("escape", "slash", *"state:open", "enter")
        await pilot.pause()
        assert app.table("attempts").row_count == 1 and app.table("events").row_count == 0


async def test_live_tail_and_keys_keep_working_under_the_detail_view(data_dir: Path) -> None:
    seed(data_dir)
    app = make_app(data_dir)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("3", "o", "enter")
        await pilot.pause()
        assert isinstance(app.screen, DetailScreen)
        store = Store(data_dir)  # another process: an attempt of the same release succeeds
        store.append(
            Kind.ATTEMPTS,
            {
                "id": f"{EID}:retry:later",
                "eventId": EID,
                "eventType": "upstream.release",
                "operation": "retry",
                "status": "completed",
                "upstreamRepo": "acme/widget",
                "upstreamTag": "v1.2.0",
                "createdAt": "2026-11-21T11:50:00.000Z",
                "updatedAt": "2026-11-21T11:50:00.000Z",
            },
        )
        store.close()
        await wait_for(pilot, lambda: app.table("attempts").row_count == 2)
        assert app.table("attempts").row_count == 2  # reloaded while the detail view was on top
        assert cell(app, "attempts", 1, "STATE") == "✓ resolved"
        assert "0 open" in str(app.query_one("#status").render())
        await pilot.press("s")  # an action key under the detail view acts on the row it was opened on
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)


async def test_adopt_moves_the_fork_to_the_candidate(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path / "git")
    attempt = await changed_release(data_dir, forge)
    candidate = forge.rev("refs/heads/candidate/v1.1.0")
    before = forge.rev("main")
    assert candidate != before
    app = make_app(data_dir)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("3", "o")
        assert cell(app, "attempts", 0, "STATE") == "✚ ready"
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        body = str(app.screen.query_one("#dialog-body").render())
        assert f"main  {before[:12]} → {candidate[:12]}  (candidate/v1.1.0)" in body
        assert "2 patch branch(es) move to their rebuilt commits" in body and "review" not in body
        await pilot.press("escape")  # cancel: nothing moves
        await pilot.pause(0.2)
        assert forge.rev("main") == before
        await pilot.press("a")
        await pilot.pause()
        await pilot.press("tab", *"range-diff ok", "enter")
        await wait_for(pilot, lambda: cell(app, "attempts", 0, "STATE") == "◆ adopted")
        assert forge.rev("main") == candidate
        assert forge.rev("patch/020-shout-mode") == candidate  # the stack moved with it
        assert git(forge.fork, "status", "--porcelain") == ""  # the checked-out main was updated too
        assert cell(app, "attempts", 0, "STATE") == "◆ adopted"
        assert f"main {before[:12]} → {candidate[:12]}" in notes(app)
    adopted = Store(data_dir).get_attempt(attempt["id"])
    assert adopted is not None and adopted["adoption"]["by"].startswith("tui:")
    assert adopted["adoption"]["reason"] == "range-diff ok"


async def test_adopt_from_the_detail_view_counts_as_the_review(tmp_path: Path, data_dir: Path) -> None:
    config = (
        "[conflict]\ncommand = \"printf 'hello resolved by agent\\\\nworld\\\\n' > greeting.txt && "
        'git add greeting.txt"\ntimeout = 30\n'
    )
    forge = Forge(tmp_path / "git", config=config)
    forge.release("v2.0.0", {"greeting.txt": "hello upstream v2\nworld\n"})
    store = Store(data_dir)
    event = upstream_release_event("acme/widget", "v2.0.0").to_dict()
    store.record_event(event)
    dispatcher = Dispatcher(store, {}, workspace=forge.fork)
    outcome = await dispatcher.retry(event["id"])
    await dispatcher.aclose()
    store.close()
    assert outcome.attempt["status"] == "changed", outcome.attempt
    candidate = forge.rev("refs/heads/candidate/v2.0.0")
    app = make_app(data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "enter")
        await pilot.pause()
        assert isinstance(app.screen, DetailScreen)
        assert "review before adopting: the conflict command resolved" in str(
            app.screen.query_one("#detail-body").render()
        )
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        body = str(app.screen.query_one("#dialog-body").render())
        assert "flagged for review: confirming counts as your review" in body
        assert "the conflict command resolved patch/010-maintained-greeting" in body
        dialog = app.screen.query_one("#dialog")  # it fits 80x24: nothing clipped, nothing to scroll
        assert dialog.content_region.contains_region(app.screen.query_one("#confirm").region)
        assert dialog.max_scroll_y == 0
        await pilot.press("shift+tab", "enter")
        await wait_for(pilot, lambda: "adopted 20" in str(app.screen.query_one("#detail-body").render()))
        assert forge.rev("main") == candidate
        text = str(app.screen.query_one("#detail-body").render())
        assert "state ◆ adopted" in text and "by tui:" in text and "(reviewed)" in text
        assert "moved   patch/010-maintained-greeting" in text
    adopted = Store(data_dir).get_attempt(outcome.attempt["id"])
    assert adopted is not None and adopted["adoption"]["reviewed"] is True


async def test_adopt_refused_shows_why_and_moves_nothing(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path / "git")
    await changed_release(data_dir, forge)
    moved = commit_files(forge.fork, {"local.txt": "a commit made after the rebuild\n"}, "local work")
    app = make_app(data_dir)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("3", "a")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("shift+tab", "enter")
        await wait_for(pilot, lambda: "not adopted" in notes(app))
        assert "not adopted: main moved since the rebuild" in notes(app)  # AdoptRefused's message
        assert forge.rev("main") == moved
        assert cell(app, "attempts", 0, "STATE") == "✚ ready"


async def test_read_only_does_not_offer_adopt(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path / "git")
    await changed_release(data_dir, forge)
    before = forge.rev("main")
    app = make_app(data_dir, read_only=True)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("3", "a")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert "read-only mode: adopt is disabled" in notes(app)
        shown = {b.action for _, b, _, _ in app.screen.active_bindings.values() if b.show}
        assert "adopt" not in shown and "retry" not in shown and "help" in shown
        assert "Adopt selected attempt" not in [c.title for c in app.get_system_commands(app.screen)]
        await pilot.press("enter", "a")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
    assert forge.rev("main") == before


# -- snapshots (pytest-textual-snapshot; `pytest --snapshot-update` after checking the report) -------------
SIZES = {"80x24": (80, 24), "200x50": (200, 50)}  # the smallest terminal the dashboard is made for, and a wide one


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("key", ["1", "2", "3", "4", "5", "6"])
def test_snapshot_tabs(snap_compare: Any, data_dir: Path, key: str, size: str) -> None:
    seed(data_dir)
    assert snap_compare(make_app(data_dir), press=[key], terminal_size=SIZES[size])


@pytest.mark.parametrize("size", list(SIZES))
def test_snapshot_detail(snap_compare: Any, data_dir: Path, size: str) -> None:
    seed(data_dir)
    assert snap_compare(make_app(data_dir), press=["3", "enter"], terminal_size=SIZES[size])
