"""The dashboard through Textual's Pilot: every key and modal against a real store and local runner,
plus snapshots of each tab at 80x24 and of the detail view."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from core.store import Store
from patchmoi_tui.app import PatchmoiApp
from patchmoi_tui.client import LocalClient
from patchmoi_tui.screens import ConfirmScreen, DetailScreen, FilterScreen, HelpScreen

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
EID = "patch:gh-widget:tag:github.com,2008:Repository/1/v1.2.0:upstream.release"
EID2 = "patch:gh-gadget:tag:github.com,2008:Repository/2/v3.0.0:upstream.release"


def seed(data_dir: Path, workspace: Path | None = None) -> None:
    store = Store(data_dir)
    store.feed_events.append_many([
        {"sourceId": "gh-widget", "provider": "github", "event": "release", "entryId": "tag:github.com,2008:"
         "Repository/1/v1.2.0", "title": "v1.2.0", "url": "https://github.com/acme/widget/releases/tag/v1.2.0",
         "publishedAt": "2026-11-21T10:00:00.000Z", "receivedAt": "2026-11-21T10:01:00.000Z",
         "repo": {"fullName": "acme/widget"}, "ref": "v1.2.0"},
        {"sourceId": "gh-gadget", "provider": "github", "event": "push", "entryId": "c1", "title": "fix build",
         "receivedAt": "2026-11-21T11:30:00.000Z", "repo": {"fullName": "acme/gadget"}, "ref": "refs/heads/main",
         "sha": "0123456789abcdef0123456789abcdef01234567"},
    ])
    for eid, repo, tag, at in ((EID, "acme/widget", "v1.2.0", "2026-11-21T10:01:00.000Z"),
                               (EID2, "acme/gadget", "v3.0.0", "2026-11-21T11:00:00.000Z")):
        store.record_event({"id": eid, "type": "upstream.release", "source": "patch", "receivedAt": at,
                            "payload": {"repo": repo, "tag": tag, "sourceId": eid.split(":")[1]}})
    store.dispatches.append({"eventId": EID, "eventType": "upstream.release", "operation": "dispatch",
                             "target": "local", "transport": "local", "status": "dispatched",
                             "runIds": ["run-a"], "matched": 1, "createdAt": "2026-11-21T10:01:01.000Z"})
    store.runs.append({"id": "run-a", "eventId": EID, "flowName": "patchmoi", "stepName": "rebuild",
                       "status": "needs_intervention", "processStatus": "completed",
                       "createdAt": "2026-11-21T10:01:01.000Z", "completedAt": "2026-11-21T10:01:05.000Z",
                       "resultPayload": {"status": "needs_intervention", "message": "patch/010 conflicts",
                                         "artifacts": {"failedPatch": "patch/010", "unmergedFiles": ["a.txt"],
                                                       "worktree": "/srv/data/worktrees/x"}},
                       "log": [{"command": "git cherry-pick abc", "exitCode": 1, "output": "CONFLICT (content)"}]})
    store.attempts.append({"id": f"{EID}:dispatch:2026-11-21T10:01:01.000Z", "eventId": EID,
                           "eventType": "upstream.release", "operation": "dispatch", "status": "needs_intervention",
                           "upstreamRepo": "acme/widget", "upstreamTag": "v1.2.0", "workspaceRunIds": ["run-a"],
                           "error": "patch/010 conflicts", "candidateRefs": [],
                           "createdAt": "2026-11-21T10:01:01.000Z", "updatedAt": "2026-11-21T10:01:05.000Z"})
    store.close()


def make_app(data_dir: Path, *, read_only: bool = False, workspace: Path | None = None) -> PatchmoiApp:
    client = LocalClient(Settings.from_env({"DATA_DIR": str(data_dir)}), read_only=read_only, workspace=workspace)
    app = PatchmoiApp(client, clock=lambda: NOW, health_interval=3600)
    app.sub_title = "local data"
    return app


def make_workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".patchmoi.toml").write_text('[[steps]]\nname = "ok"\non = ["upstream.release"]\n'
                                       'command = \'echo FLOW_RESULT {\\"status\\": \\"changed\\", '
                                       '\\"message\\": \\"rebuilt\\"}\'\n')
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
        assert app.selected()["id"] == EID2  # newest first


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
        await pilot.press(*"upstream fixed")
        await pilot.press("enter")
        for _ in range(100):
            await pilot.pause(0.05)
            if app.table("attempts").row_count >= 2 and any(
                    a.get("status") == "changed" for a in app.rows["attempts"]):
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
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert any("sync" in (n.title or "") or "sync" in n.message for n in app._notifications)


async def test_read_only_disables_actions(data_dir: Path) -> None:
    seed(data_dir)
    app = make_app(data_dir, read_only=True)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("2", "r")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert any("read-only" in n.message for n in app._notifications)
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
        assert app.table("events").row_count == 1 and app.selected()["id"] == EID2
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
        await pilot.press("escape")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Retry selected event", "Replay selected event", "Sync selected attempt", "Filter rows",
                "Toggle follow", "Go to Runs"} <= set(titles)
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
    store.flow_events.append_many([{"id": f"e{i}", "type": "upstream.release", "receivedAt": "2026-11-21T10:00:00.000Z",
                                    "payload": {"repo": "r", "tag": f"v{i}"}} for i in range(1500)])
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
        assert app.table("events").row_count == 1500 and app.selected()["id"] == "e0"
        assert app.exhausted["events"]


# -- snapshots (pytest-textual-snapshot; `pytest --snapshot-update` after checking the report) -------------
@pytest.mark.parametrize("key", ["1", "2", "3", "4", "5"])
def test_snapshot_tabs(snap_compare: Any, data_dir: Path, key: str) -> None:
    seed(data_dir)
    assert snap_compare(make_app(data_dir), press=[key], terminal_size=(80, 24))


def test_snapshot_detail(snap_compare: Any, data_dir: Path) -> None:
    seed(data_dir)
    assert snap_compare(make_app(data_dir), press=["3", "enter"], terminal_size=(80, 24))
