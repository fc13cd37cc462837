"""The dashboard's whole history (filters searched in the store, paging past the row cap), marks with bulk
actions, columns fitted to the terminal, `w` and sort, through Textual's Pilot on real stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.widgets import Static

from patchmoi.core.shortid import short_id
from patchmoi.core.store import Kind, Store
from patchmoi.tui import app as app_module
from patchmoi.tui.screens import ConfirmScreen

from .test_tui import cell, make_app, make_workspace, notes, seed, selected, wait_for


def events(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"patch:src:e{i}:upstream.release",
            "type": "upstream.release",
            "receivedAt": f"2026-11-{1 + i // 1440:02d}T{(i // 60) % 24:02d}:{i % 60:02d}:00.000Z",
            "payload": {"repo": f"owner{i % 50}/widget", "tag": f"v{i}.0.0", "sourceId": "src"},
        }
        for i in range(n)
    ]


def status(app: Any) -> str:
    return str(app.query_one("#status", Static).render())


async def test_a_filter_searches_the_store_not_the_loaded_rows(data_dir: Path) -> None:
    store = Store(data_dir)
    store.append_many(Kind.EVENTS, events(6000))
    store.close()
    app = make_app(data_dir)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("2")
        assert app.table("events").row_count == 200  # one page loaded
        await pilot.press("slash", *"v17.0.0", "enter")  # far below the loaded page: 5,983 records older
        await wait_for(pilot, lambda: app.exhausted["events"], tries=200)
        assert [r["id"] for r in app.rows["events"]] == ["patch:src:e17:upstream.release"]
        assert "filter v17.0.0" in status(app) and "1 match" in status(app)
        shown = app.table("events").get_row_at(0)
        upstream = next(c for c in shown if isinstance(c, Text) and "v17.0.0" in c.plain)
        assert any(span.style == "reverse" for span in upstream.spans)  # the match is highlighted
        await pilot.press("slash", "ctrl+u", *"repo:owner3/", "enter")  # 120 of 6,000: a page, then more on demand
        await wait_for(pilot, lambda: len(app.rows["events"]) >= 100)
        assert all("owner3/" in r["payload"]["repo"] for r in app.rows["events"])
        assert app.rows["events"][0]["id"] == "patch:src:e5953:upstream.release"
        await pilot.press("slash", "ctrl+u", *"since:yesterday", "enter")
        await pilot.pause()
        assert "is not a time" in notes(app) and app.filter_query.text == "repo:owner3/"  # the old filter stays
        await pilot.press("slash", "ctrl+u", "enter")  # cleared: the newest page again
        await wait_for(pilot, lambda: len(app.rows["events"]) == 200)
        assert selected(app)["id"] == "patch:src:e5999:upstream.release"


async def test_paging_goes_past_the_row_cap_and_g_comes_back(data_dir: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(app_module, "MAX_ROWS", 1000)  # the cap, smaller: the same code path as 5,000
    monkeypatch.setattr(app_module, "TRIM", 400)
    store = Store(data_dir)
    store.append_many(Kind.EVENTS, events(2500))
    store.close()
    app = make_app(data_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("2")
        for _ in range(20):
            await pilot.press("G")
            await pilot.pause()
            if selected(app)["id"] == "patch:src:e0:upstream.release":
                break
        assert selected(app)["id"] == "patch:src:e0:upstream.release"  # the very first record, past the cap
        assert len(app.rows["events"]) <= 1000 and app.trimmed["events"]
        assert "paged far back" in status(app)
        await pilot.press("g")
        await wait_for(pilot, lambda: not app.trimmed["events"])
        assert selected(app)["id"] == "patch:src:e2499:upstream.release"


async def test_marks_and_one_confirmation_for_a_bulk_retry(data_dir: Path, tmp_path: Path) -> None:
    seed(data_dir)
    app = make_app(data_dir, workspace=make_workspace(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("2", "space", "space")  # both events marked (space moves down)
        assert len(app.marks["events"]) == 2 and "2 marked" in status(app)
        assert str(app.table("events").get_row_at(0)[0]).startswith("● ")
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and "Retry 2 marked flow events" in str(app.screen.body)
        await pilot.press("tab", *"bulk", "enter")
        path = data_dir / "workspace-dispatches.jsonl"
        await wait_for(pilot, lambda: "retry of 2" in notes(app), tries=200)
        dispatched = [json.loads(x) for x in path.read_text().splitlines()]
        retried = {d["eventId"] for d in dispatched if d.get("reason") == "bulk"}
        assert len(retried) == 2 and not app.marks["events"]  # done: the marks are cleared
        await pilot.press("space", "U")
        assert not app.marks["events"]


async def test_columns_fit_the_terminal_and_w_shows_everything(data_dir: Path) -> None:
    seed(data_dir)
    app = make_app(data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "o")
        labels = [c.label.plain for c in app.table("attempts").columns.values()]
        assert labels == ["AGE", "STATE", "UPSTREAM", "OUTCOME"]  # at 80 columns the outcome gets the width
        widths = {c.label.plain: c.width for c in app.table("attempts").columns.values()}
        assert widths["OUTCOME"] >= 30
        await pilot.resize_terminal(200, 50)
        await pilot.pause()
        labels = [c.label.plain for c in app.table("attempts").columns.values()]
        assert labels == ["AGE", "STATE", "STATUS", "OP", "UPSTREAM", "OUTCOME", "ID"]
        attempt_id = selected(app)["id"]
        assert cell(app, "attempts", 0, "ID") == short_id(attempt_id)  # short ids (the CLI takes them)
        assert {c.label.plain: c.width for c in app.table("attempts").columns.values()}["OUTCOME"] > 90
        await pilot.press("w")
        assert cell(app, "attempts", 0, "ID") == attempt_id  # wide: the full id
        widths = {c.label.plain: c.width for c in app.table("attempts").columns.values()}
        longest = max(len(str(r.get("error") or r.get("message") or "")) for r in app.rows["attempts"])
        assert widths["OUTCOME"] >= min(longest, 240)  # every column as wide as its longest loaded value
        assert all("…" not in cell(app, "attempts", i, "UPSTREAM") for i in range(app.table("attempts").row_count))
        await pilot.press("greater_than_sign")  # sort by AGE (newest first), then the next column
        assert "sort AGE" in status(app)
        await pilot.press("greater_than_sign", "less_than_sign")
        assert "sort STATE reversed" in status(app)
