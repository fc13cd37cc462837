"""The dashboard as a daily tool (#16): the cursor stays on its record while rows arrive, a stray key never
confirms an action, and quitting with a local run going asks first. Textual's Pilot on a real DATA_DIR."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from textual.binding import Binding
from textual.widgets import Button, Static, TabbedContent

from patchmoi.core.config import Settings
from patchmoi.core.store import Kind, Store
from patchmoi.tui.app import PatchmoiApp, appended_on_top
from patchmoi.tui.client import LocalClient
from patchmoi.tui.screens import ConfirmScreen

from .feeds import source
from .test_tui import EID, EID2, cell, make_app, seed, wait_for


def new_event(data_dir: Path, n: int) -> None:
    store = Store(data_dir)
    store.record_event(
        {
            "id": f"patch:upstream.release:acme/new{n}:v{n}",
            "type": "upstream.release",
            "source": "patch",
            "receivedAt": f"2026-11-21T11:5{n}:00.000Z",
            "payload": {"repo": f"acme/new{n}", "tag": f"v{n}"},
        }
    )
    store.close()


def dispatches(data_dir: Path) -> list[dict[str, object]]:
    path = data_dir / "workspace-dispatches.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


async def test_the_cursor_stays_on_its_record_when_rows_arrive_above_it(data_dir: Path) -> None:
    seed(data_dir)
    app = make_app(data_dir)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("2", "j")  # the older event, EID
        assert app.selected()["id"] == EID  # type: ignore[index]
        new_event(data_dir, 1)
        await wait_for(pilot, lambda: app.table("events").row_count == 3)
        assert app.table("events").row_count == 3
        assert app.selected()["id"] == EID  # type: ignore[index]  # not moved to the new top row
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and EID in str(app.screen.query_one("#dialog-body").render())
        await pilot.press("escape")
        # on the newest row with follow on: new rows are followed
        await pilot.press("g")
        new_event(data_dir, 2)
        await wait_for(pilot, lambda: app.table("events").row_count == 4)
        assert app.selected()["id"] == "patch:upstream.release:acme/new2:v2"  # type: ignore[index]
        # follow off: the cursor stays put even on the top row
        await pilot.press("f", "j")
        here = app.selected()["id"]  # type: ignore[index]
        new_event(data_dir, 3)
        await wait_for(pilot, lambda: app.table("events").row_count == 5)
        assert app.selected()["id"] == here  # type: ignore[index]


async def test_a_stray_key_never_confirms_an_action(data_dir: Path) -> None:
    """`repo:owner8` typed without its `/`: `r` opens Retry, the rest lands on the Cancel button, Enter cancels."""
    seed(data_dir)
    app = make_app(data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2", *"repo:owner8", "enter")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert len(dispatches(data_dir)) == 1  # the seed's only: nothing was sent
        await pilot.press("R")  # the dialog opens on Cancel; its keys are on its frame
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and app.screen.focused is not None
        assert app.screen.focused.id == "cancel"
        assert "shift+tab, enter: confirm" in str(app.screen.query_one("#dialog").border_subtitle)
        await pilot.press(*"yes", "enter")  # letters do nothing on a button; enter on Cancel cancels
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen) and len(dispatches(data_dir)) == 1


async def test_quitting_during_a_local_run_asks_and_says_what_happens(data_dir: Path, tmp_path: Path) -> None:
    seed(data_dir)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "slow.py").write_text(
        "import time, json\ntime.sleep(30)\nprint('FLOW_RESULT ' + json.dumps({'status': 'completed'}))\n"
    )
    (ws / ".patchmoi.toml").write_text(
        f'[[steps]]\nname = "slow"\non = ["upstream.release"]\ncommand = ["{sys.executable}", "slow.py"]\n'
    )
    app = make_app(data_dir, workspace=ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2", "r", "shift+tab", "enter")  # retry EID2 (the newest): a run starts here
        await wait_for(pilot, lambda: app.client.runs_in_flight() == 1)
        assert dispatches(data_dir)[-1]["eventId"] == EID2
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        body = str(app.screen.query_one("#dialog-body").render())
        assert "1 local run(s)" in body and "recorded as interrupted" in body and "patchmoi retry" in body
        await pilot.press("enter")  # Cancel: still running, still here
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen) and app.is_running and app.client.runs_in_flight() == 1
        await pilot.press("q", "shift+tab")
        app.screen.query_one("#confirm", Button).press()  # (pilot.press would wait for an app that is leaving)
        for _ in range(200):
            if not app.is_running:
                break
            await asyncio.sleep(0.05)
        assert not app.is_running
    runs = Store(data_dir).list_runs(event_id=EID2)
    assert runs and runs[0]["status"] == "failed" and "interrupt" in str(runs[0].get("error", "")).lower()


async def test_ages_tick_while_nothing_else_happens(data_dir: Path) -> None:
    seed(data_dir)
    now = [datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)]
    app = PatchmoiApp(
        LocalClient(Settings.from_env({"DATA_DIR": str(data_dir)})), clock=lambda: now[0], health_interval=3600
    )
    app.age_tick = 0.1
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("2")
        before = cell(app, "events", 0, "AGE")
        now[0] += timedelta(hours=3)
        await wait_for(pilot, lambda: cell(app, "events", 0, "AGE") != before, tries=200)
        assert cell(app, "events", 0, "AGE") != before and before.endswith("ago")
        assert "h" in cell(app, "events", 0, "AGE")


async def test_the_sources_tab_shows_what_fails_and_when_each_polls(data_dir: Path, tmp_path: Path) -> None:
    seed(data_dir)
    sources = tmp_path / "feed-sources.json"
    sources.write_text(
        json.dumps(
            {
                "sources": [
                    {**source("gh-widget", "https://example.invalid/w.atom"), "pollIntervalSeconds": 600},
                    source("gh-gadget", "https://example.invalid/g.atom"),
                    source("gh-new", "https://example.invalid/n.atom"),
                ]
            }
        )
    )
    store = Store(data_dir)
    store.write_state(
        {
            "gh-widget": {"primed": True, "lastCheckedAt": "2026-11-21T11:58:00.000Z", "etag": '"e1"'},
            "gh-gadget": {
                "primed": True,
                "lastCheckedAt": "2026-11-21T11:59:00.000Z",
                "lastError": "Feed gh-gadget returned 503; backing off this host for 120s",
            },
        }
    )
    store.close()
    now = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
    settings = Settings.from_env({"DATA_DIR": str(data_dir), "FEED_SOURCES_PATH": str(sources)})
    app = PatchmoiApp(LocalClient(settings), clock=lambda: now, health_interval=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("6")
        assert [cell(app, "sources", i, "SOURCE") for i in range(3)] == ["gh-gadget", "gh-new", "gh-widget"]
        assert cell(app, "sources", 0, "STATE") == "✖ failing"
        assert cell(app, "sources", 0, "LAST RESULT / ERROR").startswith("Feed gh-gadget returned")
        message = str(app.query_one("#message", Static).render())  # the highlighted source, its error in full
        assert "gh-gadget · every 300s · polled 1m ago" in message, message
        assert "Feed gh-gadget returned 503; backing off this host for 120s" in message
        assert (cell(app, "sources", 1, "STATE"), cell(app, "sources", 2, "NEXT")) == ("◌ new", "≈in 8m")
        assert "POLLED" not in [c.label.plain for c in app.table("sources").columns.values()]  # (80 columns)
        await pilot.resize_terminal(120, 30)
        await pilot.pause()
        assert (cell(app, "sources", 1, "POLLED"), cell(app, "sources", 2, "POLLED")) == ("never", "2m ago")
        tabs = app.query_one(TabbedContent)
        assert str(tabs.get_tab("tab-sources").label) == "6 Sources ✖1"
        assert str(tabs.get_tab("tab-attempts").label) == "3 Queue !1"  # the queue, and its open attempts
        assert tabs.get_tab("tab-sources").region.right <= 80  # all six tabs fit 80 columns
        await pilot.press("down", "down", "enter")  # gh-widget: its signals
        await pilot.pause()
        assert app.active_kind == "signals" and app.table("signals").row_count == 1
        assert cell(app, "signals", 0, "SOURCE") == "gh-widget" and app.filter_query.text == "source:gh-widget"


async def test_help_fits_80x24_and_lists_every_key(data_dir: Path) -> None:
    seed(data_dir)
    app = make_app(data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        dialog = app.screen.query_one("#dialog")
        assert dialog.max_scroll_y == 0 and dialog.region.bottom <= 24
        text = str(app.screen.query_one("#help-body").render())
        shown = {b.key for b in app.BINDINGS if isinstance(b, Binding) and b.show}
        keys = ("r / R", "s / a", "f", "/", "? / q", "1-6 / o", "enter / esc", "shift+tab", "space / U", "w / > / <")
        for key in (*keys, " p ", " y ", "g G", "ctrl+r", "ctrl+p", "in detail: ?"):
            assert key in text, key
        assert {"q", "r", "R", "s", "a", "f"} <= shown | {"q"}


async def test_a_reload_keeps_every_loaded_row_and_the_cursor_on_its_record(data_dir: Path) -> None:
    store = Store(data_dir)
    store.append_many(
        Kind.EVENTS,
        [
            {"id": f"ev-{i:04d}", "type": "upstream.release", "receivedAt": "2026-11-21T10:00:00.000Z"}
            for i in range(300)
        ],
    )
    store.close()
    app = make_app(data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2", "f")  # follow off
        app.table("events").move_cursor(row=199)
        await wait_for(pilot, lambda: app.table("events").row_count == 300)  # the rest loads near the end
        here = app.selected()["id"]  # type: ignore[index]
        new_event(data_dir, 1)
        await wait_for(pilot, lambda: app.table("events").row_count == 301)
        assert app.table("events").row_count == 301  # a new row pushed one off the newest page, not out
        assert app.selected()["id"] == here  # type: ignore[index]


async def test_follow_does_not_take_a_record_that_moved_to_the_top_by_itself(data_dir: Path) -> None:
    seed(data_dir)
    store = Store(data_dir)
    for i in (1, 2):
        store.append(
            Kind.ATTEMPTS,
            {"id": f"a{i}", "eventId": EID2, "status": "started", "createdAt": f"2026-11-21T11:0{i}:00.000Z"},
        )
    store.close()
    app = make_app(data_dir)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("3", "o", "j", "j")  # every attempt; the oldest, on row 2, by the operator's hand
        mine = app.selected()["id"]  # type: ignore[index]
        store = Store(data_dir)
        old = store.get_attempt(mine)
        assert old is not None
        store.append(Kind.ATTEMPTS, {**old, "status": "completed"})  # it moves to the top by itself
        store.close()
        await wait_for(pilot, lambda: app.selected()["status"] == "completed")  # type: ignore[index]
        store = Store(data_dir)
        store.append(
            Kind.ATTEMPTS, {"id": "a9", "eventId": EID2, "status": "started", "createdAt": "2026-11-21T11:09:00.000Z"}
        )
        store.close()
        await wait_for(pilot, lambda: app.table("attempts").row_count == 4)
        assert app.selected()["id"] == mine  # type: ignore[index]


async def test_ctrl_q_asks_too_while_a_local_run_goes_on(data_dir: Path, tmp_path: Path) -> None:
    seed(data_dir)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "slow.py").write_text("import time\ntime.sleep(30)\n")
    (ws / ".patchmoi.toml").write_text(
        f'[[steps]]\nname = "slow"\non = ["upstream.release"]\ncommand = ["{sys.executable}", "slow.py"]\n'
    )
    app = make_app(data_dir, workspace=ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2", "r", "shift+tab", "enter")
        await wait_for(pilot, lambda: app.client.runs_in_flight() == 1)
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and app.is_running
        await pilot.press("escape")


async def test_tab_3_opens_on_the_queue_however_old_and_o_shows_every_attempt(data_dir: Path) -> None:
    """The open attempt of the seed is older than 300 later ones: the queue still has it, and only it."""
    seed(data_dir)
    store = Store(data_dir)
    store.append_many(
        Kind.ATTEMPTS,
        [
            {
                "id": f"later-{i:03d}",
                "eventId": EID2,
                "status": "completed",
                "createdAt": f"2026-11-21T11:{i // 60:02d}:{i % 60:02d}.000Z",
                "updatedAt": f"2026-11-21T11:{i // 60:02d}:{i % 60:02d}.000Z",
            }
            for i in range(300)
        ],
    )
    store.close()
    app = make_app(data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        assert app.table("attempts").row_count == 1 and cell(app, "attempts", 0, "STATE") == "! open"
        assert str(app.query_one(TabbedContent).get_tab("tab-attempts").label) == "3 Queue !1"
        await pilot.press("o")  # every attempt, newest first
        await wait_for(pilot, lambda: app.table("attempts").row_count >= 200)
        assert app.selected()["id"] == "later-299"  # type: ignore[index]
        assert str(app.query_one(TabbedContent).get_tab("tab-attempts").label) == "3 Attempts !1"
        await pilot.press("o")
        await wait_for(pilot, lambda: app.table("attempts").row_count == 1)
        assert app.table("attempts").row_count == 1


async def test_an_empty_queue_says_so(data_dir: Path) -> None:
    seed(data_dir)
    store = Store(data_dir)
    [open_attempt] = store.list_attempts()
    store.append(Kind.ATTEMPTS, {**open_attempt, "status": "skipped"})  # nothing waits any more
    store.close()
    app = make_app(data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        await pilot.pause()
        assert app.table("attempts").row_count == 0
        assert "queue empty: nothing waits for you · o: every attempt" in str(app.query_one("#status").render())


async def test_y_copies_the_selected_id(data_dir: Path) -> None:
    seed(data_dir)
    app = make_app(data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2", "j", "y")  # the older event
        assert app.clipboard == EID
        await pilot.press("1", "y")  # a signal: the id `patchmoi show` takes (SOURCE:ENTRY)
        assert app.clipboard == "gh-gadget:c1"
        assert "copied gh-gadget:c1" in app.messages[-1].message


def test_only_rows_appended_on_top_take_the_quick_path() -> None:
    def key(r: dict[str, Any]) -> str:
        return str(r["id"])

    before = {"b": {"id": "b", "s": 1}, "a": {"id": "a", "s": 1}}
    assert appended_on_top([{"id": "c"}, {"id": "b", "s": 1}, {"id": "a", "s": 1}], before, key) == [{"id": "c"}]
    assert appended_on_top([{"id": "b", "s": 1}, {"id": "a", "s": 1}], before, key) == []
    assert appended_on_top([{"id": "b", "s": 2}, {"id": "a", "s": 1}], before, key) is None  # b changed
    assert appended_on_top([{"id": "b", "s": 1}, {"id": "c"}, {"id": "a", "s": 1}], before, key) is None  # below b
