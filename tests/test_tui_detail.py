"""The detail view of the record opened (#detail): the record first, a breadcrumb, sections to jump between,
the failing command's whole output with its CONFLICT line, and the hand-offs to a pager, an editor and a shell.
Textual's Pilot on a real DATA_DIR whose conflict comes from a real rebuild (tests/gitfixture.py), plus a real
terminal (tmux) for App.suspend."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from rich.text import Text
from textual.widgets import Static

from patchmoi.core.dispatch.dispatcher import Dispatcher
from patchmoi.core.events import upstream_release_event
from patchmoi.core.shortid import short_id
from patchmoi.core.store import Store
from patchmoi.tui.app import PatchmoiApp
from patchmoi.tui.detail import (
    KeysScreen,
    build_document,
    editor_command,
    layout,
    pager_command,
    render_chain,
    shell_command,
    wrap,
)
from patchmoi.tui.screens import ConfirmScreen, DetailScreen

from .conftest import PYTHON, ROOT
from .gitfixture import Forge, git
from .test_tui import EID2, changed_release, make_app, seed, wait_for

CONFLICT = "CONFLICT (content): Merge conflict in greeting.txt"
SEP = " \N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK} "  # between the breadcrumb's steps


async def conflict(data_dir: Path, forge: Forge) -> dict[str, Any]:
    """Upstream v2.0.0 rewrites the line patch/010 changes: the local rebuild stops on a real cherry-pick conflict
    (`needs_intervention`, a worktree left under DATA_DIR/worktrees)."""
    forge.release("v2.0.0", {"greeting.txt": "hello upstream v2\nworld\n"})
    store = Store(data_dir)
    event = upstream_release_event("acme/widget", "v2.0.0").to_dict()
    store.record_event(event)
    dispatcher = Dispatcher(store, {}, workspace=forge.fork)
    try:
        outcome = await dispatcher.retry(event["id"])
    finally:
        await dispatcher.aclose()
        store.close()
    assert outcome.attempt["status"] == "needs_intervention", outcome.attempt
    return outcome.attempt


def worktree_of(data_dir: Path, attempt: dict[str, Any]) -> Path:
    store = Store(data_dir)
    run = store.get_run(attempt["workspaceRunIds"][-1])
    store.close()
    assert run is not None
    return Path(run["resultPayload"]["artifacts"]["worktree"])


async def resolve_and_retry(data_dir: Path, attempt: dict[str, Any]) -> dict[str, Any]:
    """An operator resolves the conflict in the worktree and retries: a second attempt, `changed`."""
    worktree = worktree_of(data_dir, attempt)
    (worktree / "greeting.txt").write_text("hello from the fork, on v2\nworld\n")
    git(worktree, "add", "greeting.txt")
    store = Store(data_dir)
    dispatcher = Dispatcher(store, {})
    try:
        outcome = await dispatcher.retry(attempt["eventId"], reason="resolved by hand")
    finally:
        await dispatcher.aclose()
        store.close()
    assert outcome.attempt["status"] == "changed", outcome.attempt
    return outcome.attempt


async def retry(data_dir: Path, event_id: str) -> dict[str, Any]:
    store = Store(data_dir)
    dispatcher = Dispatcher(store, {})
    try:
        return (await dispatcher.retry(event_id)).attempt
    finally:
        await dispatcher.aclose()
        store.close()


def detail(app: PatchmoiApp) -> DetailScreen:
    screen = app.screen
    assert isinstance(screen, DetailScreen), screen
    return screen


def text_of(screen: DetailScreen, widget: str) -> str:
    return str(screen.query_one(f"#{widget}", Static).render())


def body_rows(screen: DetailScreen) -> list[str]:
    return text_of(screen, "detail-body").split("\n")


def painted(screen: DetailScreen) -> Text:
    return screen.text


def flat(screen: DetailScreen) -> str:
    """The body's words in one line (what it says, whatever the width it was wrapped to)."""
    return " ".join(" ".join(body_rows(screen)).split())


def style_of(text: Text, needle: str) -> str:
    """The styles over the first occurrence of `needle` in `text`."""
    at = text.plain.index(needle)
    return " ".join(str(s.style) for s in text.spans if s.start <= at < s.end)


def no_suspend(app: PatchmoiApp, monkeypatch: pytest.MonkeyPatch) -> None:
    """App.suspend as a real terminal does it, minus the terminal: what runs inside gets stdin and the cwd."""

    @contextlib.contextmanager
    def suspend() -> Iterator[None]:
        yield

    monkeypatch.setattr(app, "suspend", suspend)


def pager_script(tmp_path: Path) -> Path:
    """A pager that copies what it is given to the file named by its argument."""
    return script(tmp_path / "pager", 'cat > "$1"\n')


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


# -- the record first, with its place in the chain -----------------------------------------------------------
async def test_an_attempt_opens_on_itself_with_its_breadcrumb_and_its_conflict_on_the_first_screen(
    tmp_path: Path, data_dir: Path
) -> None:
    attempt = await conflict(data_dir, Forge(tmp_path / "git"))
    app = make_app(data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "enter")
        await pilot.pause()
        screen = detail(app)
        assert text_of(screen, "detail-crumbs") == SEP.join(["event", "attempt 1 of 1", "run patchmoi/rebuild"])
        title = text_of(screen, "detail-title")
        assert title.startswith("ATTEMPT 1/1  ! needs_intervention (! open)  acme/widget@v2.0.0")
        assert title.endswith(short_id(attempt["id"]))
        rows = body_rows(screen)
        assert rows[0] == "▶ Attempt 1 of 1  opened"  # the record opened comes first, marked current
        assert rows.index("Run patchmoi/rebuild") < rows.index("Flow event") < rows.index("Dispatches (1)")
        at = next(i for i, row in enumerate(rows) if CONFLICT in row)
        assert at < screen.scroller.scrollable_content_region.height  # on the first screen, at 80x24
        assert "bold red" in style_of(painted(screen), CONFLICT)
        assert "state ! open" in "\n".join(rows)
        assert any(r.startswith(f"  id {short_id(attempt['id'])}  ") and r.endswith(attempt["id"]) for r in rows)


async def test_the_older_conflict_comes_before_the_later_success(tmp_path: Path, data_dir: Path) -> None:
    """The issue's case: a conflict, then a success of the same release. Opening the conflict's attempt shows
    the conflict first (not five pages below the success); the event's detail lists both, newest first."""
    first = await conflict(data_dir, Forge(tmp_path / "git"))
    second = await resolve_and_retry(data_dir, first)
    app = make_app(data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "o")  # every attempt: the success on top, the (resolved) conflict under it
        await pilot.pause()
        assert app.selected() is not None and app.selected()["id"] == second["id"]  # type: ignore[index]
        await pilot.press("j", "enter")
        await pilot.pause()
        screen = detail(app)
        assert text_of(screen, "detail-crumbs") == SEP.join(["event", "attempt 1 of 2", "run patchmoi/rebuild"])
        rows = body_rows(screen)
        assert rows[0] == "▶ Attempt 1 of 2  opened" and "state ✓ resolved" in rows[2]
        text = "\n".join(rows)
        assert text.index(CONFLICT) < text.index("Attempt 2 of 2")  # the later success comes after
        await pilot.press("escape", "2", "enter")  # the event: itself first, then both attempts
        await pilot.pause()
        screen = detail(app)
        assert text_of(screen, "detail-crumbs") == SEP.join(["event", "2 attempts"])
        rows = body_rows(screen)
        assert rows[0] == "▶ Flow event  opened"
        assert rows.index("Attempt 2 of 2") < rows.index("Attempt 1 of 2")


async def test_the_failing_command_is_shown_whole_whatever_follows_its_conflict_line(
    tmp_path: Path, data_dir: Path
) -> None:
    """git prints its CONFLICT line before a screenful of `hint:` lines: the old view kept the last six."""
    await conflict(data_dir, Forge(tmp_path / "git"))
    app = make_app(data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "enter")
        await pilot.pause()
        screen = detail(app)
        chain = screen.chain
        [pick] = [e for e in chain["runs"][0]["log"] if e["exitCode"] != 0]
        assert "cherry-pick" in pick["command"] and pick["output"].splitlines()[-2].startswith("hint:")
        hints = [f"hint: line {i} of what git suggests" for i in range(40)]
        pick["output"] += "\n" + "\n".join(hints)
        screen.show(chain)
        await pilot.pause()
        text = "\n".join(body_rows(screen))
        assert CONFLICT in text and all(h in text for h in hints)
        assert "bright_black" in style_of(painted(screen), hints[0])  # the hints are dimmed, the conflict is not
        assert "bold red" in style_of(painted(screen), CONFLICT)
    # a command that succeeded shows its first lines only
    ok = {"command": "git log", "exitCode": 0, "output": "\n".join(f"commit {i}" for i in range(10))}
    view = render_chain({"kind": "run", "id": "r", "run": {"id": "r", "log": [ok]}, "runs": []}, "runs").plain
    assert "commit 2" in view and "commit 3" not in view and "7 more line(s)" in view


# -- sections and scrolling ----------------------------------------------------------------------------------
async def test_section_keys_move_to_the_next_section_and_mark_it(tmp_path: Path, data_dir: Path) -> None:
    await conflict(data_dir, Forge(tmp_path / "git"))
    app = make_app(data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "enter")
        await pilot.pause()
        screen = detail(app)
        assert screen.lay is not None
        anchors = screen.lay.anchors
        assert [a.title for a in anchors][:2] == ["Attempt 1 of 1", "Run patchmoi/rebuild"]
        assert anchors[2].title.startswith("✗ git cherry-pick") and not anchors[2].header  # a failing command
        assert text_of(screen, "detail-where") == f"§1/{len(anchors)}"
        await pilot.press("right_square_bracket")
        assert screen.current == 1 and screen.scroller.scroll_y == anchors[1].line
        assert body_rows(screen)[anchors[1].line] == "▶ Run patchmoi/rebuild"
        assert text_of(screen, "detail-where") == f"§2/{len(anchors)}"
        await pilot.press("tab")  # the failing cherry-pick, marked where it starts
        assert screen.current == 2 and screen.scroller.scroll_y == anchors[2].line
        assert body_rows(screen)[anchors[2].line].startswith("▶ $ git -c rerere.enabled=true")
        assert any(CONFLICT in row for row in body_rows(screen)[anchors[2].line : anchors[2].line + 6])
        await pilot.press("left_square_bracket", "shift+tab")
        assert screen.current == 0 and screen.scroller.scroll_y == 0
        assert body_rows(screen)[0].startswith("▶ Attempt")
        await pilot.press("j", "j")
        assert screen.scroller.scroll_y == 2
        await pilot.press("k")
        assert screen.scroller.scroll_y == 1
        await pilot.press("pagedown")
        assert screen.scroller.scroll_y > 10
        await pilot.press("G")
        assert screen.scroller.scroll_y == screen.scroller.max_scroll_y > 0
        top = int(screen.scroller.scroll_y)
        assert anchors[screen.current].line <= top + screen.scroller.scrollable_content_region.height
        await pilot.press("home")
        assert screen.scroller.scroll_y == 0 and screen.current == 0


def test_wrapping_breaks_at_spaces_only_and_keeps_long_paths_whole() -> None:
    path = "/var/lib/patchmoi/worktrees/patch_upstream.release_acme_widget_v2.0.0-3ecca5e8c3"
    rows = wrap(Text(f"  resume in {path}"), 40)
    assert [r.plain for r in rows] == [f"  resume in {path}"]  # wider than the row: whole, after its label
    prose = Text("    one two three four five six seven eight nine ten eleven twelve " + path)
    rows = wrap(prose, 30)
    assert all(cell_len(r.plain) <= 30 for r in rows[:-1]) and rows[-1].plain.endswith(f" {path}")
    assert " ".join(" ".join(r.plain.split()) for r in rows) == " ".join(prose.plain.split())
    assert all(r.plain.startswith("      ") for r in rows[1:])  # continuation rows hang under the indent


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
async def test_it_fits_80x24_and_200x50_and_never_cuts_a_word(
    tmp_path: Path, data_dir: Path, size: tuple[int, int]
) -> None:
    attempt = await conflict(data_dir, Forge(tmp_path / "git"))
    worktree = str(worktree_of(data_dir, attempt))
    app = make_app(data_dir)
    async with app.run_test(size=size) as pilot:
        await pilot.press("3", "enter")
        await pilot.pause()
        screen = detail(app)
        width, height = size
        keys = text_of(screen, "detail-keys")
        assert cell_len(keys) <= width - 2 and keys.startswith("esc back") and keys.endswith("? keys")
        for name, y in (("detail-title", 0), ("detail-crumbs", 1), ("detail-message", height - 2)):
            assert screen.query_one(f"#{name}").region.y == y
        assert screen.query_one("#detail-keys").region.y == height - 1
        words = set(render_chain(screen.chain, screen.kind, screen.record).plain.split()) | {"▶", "opened"}
        rows = body_rows(screen)
        cut = [w for row in rows for w in row.split() if w not in words]
        assert cut == []  # every word on screen is a whole word of the text: nothing wrapped inside a word
        assert any(f"resume in {worktree}" in row for row in rows)
        for row in (r for r in rows if cell_len(r) > width - 3):  # past the edge: a token no row can hold
            longest = max(row.split(), key=cell_len)
            assert row.startswith("  id ") or len(row.replace(longest, "").strip()) <= 16, row


# -- hand-offs -------------------------------------------------------------------------------------------------
def test_pager_editor_and_shell_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pager_command({"PAGER": "less -RS"}) == ["less", "-RS"]
    assert pager_command({"PAGER": "  "}) == pager_command({})
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert pager_command({}) == ["less", "-R"]
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert pager_command({}) == ["more"]
    assert shell_command({}) == ["/bin/sh"] and shell_command({"SHELL": "/bin/zsh"}) == ["/bin/zsh"]
    assert editor_command({}, "f.txt") == ["vi", "f.txt"]
    assert editor_command({"EDITOR": "code --wait"}, "f.txt") == ["code", "--wait", "f.txt"]
    assert editor_command({"VISUAL": "nano"}, "f.txt") == ["nano", "f.txt"]


async def test_p_pages_the_whole_log_and_without_a_terminal_says_what_to_run(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempt = await conflict(data_dir, Forge(tmp_path / "git"))
    out = tmp_path / "paged.txt"
    monkeypatch.setenv("PAGER", f"{pager_script(tmp_path)} {out}")
    app = make_app(data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "enter")
        await pilot.pause()
        screen = detail(app)
        await pilot.press("p")  # headless: App.suspend is not supported, and the view says so
        await pilot.pause()
        assert isinstance(app.screen, DetailScreen) and not out.exists()
        message = text_of(screen, "detail-message")
        assert message.startswith("pager: this terminal cannot be suspended; by hand: patchmoi show ")
        assert message in app.messages[-1].message
        no_suspend(app, monkeypatch)
        await pilot.press("p")
        await pilot.pause()
        paged = out.read_text()
        assert paged.startswith(f"patchmoi: attempt {attempt['id']}\n")
        assert CONFLICT in paged and paged.count("hint:") == 6  # the whole output
        picks = [line for line in paged.splitlines() if "cherry-pick --allow-empty" in line]
        assert picks and all(sha in picks[0] for sha in picked_shas(data_dir, attempt))  # full shas, not 12
        assert "git status --short" in paged and "(in " in paged
        monkeypatch.setenv("PAGER", str(tmp_path / "no-such-pager"))
        await pilot.press("p")
        assert "pager: cannot run" in text_of(screen, "detail-message")
        assert isinstance(app.screen, DetailScreen)


def picked_shas(data_dir: Path, attempt: dict[str, Any]) -> list[str]:
    """The full shas of the patches the rebuild picked (its series)."""
    store = Store(data_dir)
    run = store.get_run(attempt["workspaceRunIds"][-1])
    store.close()
    assert run is not None
    return [c["sha"] for p in run["resultPayload"]["artifacts"]["series"] for c in p["commits"]]


async def test_p_pages_a_changed_attempts_range_diff(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await changed_release(data_dir, Forge(tmp_path / "git"))
    out = tmp_path / "paged.txt"
    monkeypatch.setenv("PAGER", f"{pager_script(tmp_path)} {out}")
    app = make_app(data_dir)
    no_suspend(app, monkeypatch)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "enter")
        await pilot.pause()
        assert "range-diff (old stack vs new):" in "\n".join(body_rows(detail(app)))
        await pilot.press("p")
        await pilot.pause()
    paged = out.read_text()
    assert "== range-diff of run" in paged and "patch: maintained greeting" in paged
    assert paged.index("== range-diff") < paged.index("$ git")


async def test_shell_and_editor_open_in_the_worktree_on_the_unmerged_file(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempt = await conflict(data_dir, Forge(tmp_path / "git"))
    worktree = worktree_of(data_dir, attempt)
    shell_out, editor_out = tmp_path / "shell.txt", tmp_path / "editor.txt"
    monkeypatch.setenv(
        "SHELL", str(script(tmp_path / "sh", f'pwd > {shell_out}; echo "$PATCHMOI_WORKTREE" >> {shell_out}'))
    )
    monkeypatch.setenv("EDITOR", str(script(tmp_path / "ed", f'echo "$@" > {editor_out}; pwd >> {editor_out}')))
    app = make_app(data_dir)
    no_suspend(app, monkeypatch)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "enter")
        await pilot.pause()
        screen = detail(app)
        await pilot.press("exclamation_mark")
        await pilot.pause()
        assert shell_out.read_text().split() == [str(worktree), str(worktree)]
        assert f"back from the shell in {worktree}" in text_of(screen, "detail-message")
        await pilot.press("e")
        await pilot.pause()
        assert editor_out.read_text().split() == [str(worktree / "greeting.txt"), str(worktree)]
        await pilot.press("w")
        assert app.clipboard == str(worktree)


async def test_shell_and_editor_say_when_there_is_no_worktree(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seed(data_dir)  # its conflict names a worktree of another machine; its other event has no run at all
    ran = tmp_path / "ran.txt"
    monkeypatch.setenv("SHELL", str(script(tmp_path / "sh", f"touch {ran}")))
    monkeypatch.setenv("EDITOR", str(script(tmp_path / "ed", f"touch {ran}")))
    app = make_app(data_dir)
    no_suspend(app, monkeypatch)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "enter")
        await pilot.pause()
        screen = detail(app)
        await pilot.press("exclamation_mark")
        assert text_of(screen, "detail-message").startswith("/srv/data/worktrees/x is not on this machine")
        await pilot.press("e")
        assert "is not on this machine" in app.messages[-1].message
        await pilot.press("escape", "2")  # EID2: no dispatch, no run
        await pilot.pause()
        assert app.selected() is not None and app.selected()["id"] == EID2  # type: ignore[index]
        await pilot.press("enter")
        await pilot.pause()
        screen = detail(app)
        await pilot.press("e")
        assert text_of(screen, "detail-message") == "no worktree: this event has no run here"
        await pilot.press("exclamation_mark")
        assert app.messages[-1].message == "no worktree: this event has no run here"
    assert not ran.exists()


async def test_a_changed_attempt_says_it_kept_no_worktree_and_the_shell_opens_in_the_fork(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forge = Forge(tmp_path / "git")
    await changed_release(data_dir, forge)
    out = tmp_path / "shell.txt"
    monkeypatch.setenv("SHELL", str(script(tmp_path / "sh", f"pwd > {out}")))
    app = make_app(data_dir)
    no_suspend(app, monkeypatch)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "enter")
        await pilot.pause()
        assert f"no worktree kept (the rebuild ran in {forge.fork})" in flat(detail(app))
        await pilot.press("exclamation_mark")
        await pilot.pause()
        assert "no worktree kept: this is the checkout the rebuild ran in" in text_of(detail(app), "detail-message")
    assert out.read_text().strip() == str(forge.fork)


# -- copy, reload, the app's keys and messages -------------------------------------------------------------------
async def test_y_copies_the_opened_records_full_id(tmp_path: Path, data_dir: Path) -> None:
    attempt = await conflict(data_dir, Forge(tmp_path / "git"))
    app = make_app(data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "enter")
        await pilot.pause()
        await pilot.press("y")
        assert app.clipboard == attempt["id"]
        assert text_of(detail(app), "detail-message") == f"copied {attempt['id']}"
        await pilot.press("escape", "5", "enter")  # a run: its own id
        await pilot.pause()
        await pilot.press("y")
        assert app.clipboard == attempt["workspaceRunIds"][-1]
        assert text_of(detail(app), "detail-crumbs") == SEP.join(["event", "attempt 1 of 1", "run patchmoi/rebuild"])
        assert body_rows(detail(app))[0] == "▶ Run patchmoi/rebuild  opened"


async def test_ctrl_r_reads_the_chain_again_and_keeps_the_place(tmp_path: Path, data_dir: Path) -> None:
    attempt = await conflict(data_dir, Forge(tmp_path / "git"))
    app = make_app(data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "enter")
        await pilot.pause()
        screen = detail(app)
        await pilot.press("right_square_bracket")  # on the run
        assert "state ! open" in flat(screen)
        await resolve_and_retry(data_dir, attempt)  # meanwhile: resolved by hand, retried, rebuilt
        assert "state ! open" in flat(screen)  # (nothing reads it again by itself)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "✓ resolved" in flat(screen))
        rows = body_rows(screen)
        assert "state ✓ resolved" in flat(screen) and "Attempt 2 of 2" in rows
        assert text_of(screen, "detail-crumbs") == SEP.join(["event", "attempt 1 of 2", "run patchmoi/rebuild"])
        assert screen.current == 1 and rows[int(screen.scroller.scroll_y)] == "▶ Run patchmoi/rebuild"
        assert text_of(screen, "detail-message") == "reloaded"
        # the event's view: a newer attempt arrives above the one on screen; the view stays on its record
        await pilot.press("escape", "2", "enter")
        await pilot.pause()
        screen = detail(app)
        await pilot.press("right_square_bracket", "right_square_bracket", "right_square_bracket")
        assert screen.current_anchor is not None and screen.current_anchor.title == "Attempt 1 of 2"
        await retry(data_dir, attempt["eventId"])  # a third attempt: newest first in the event's view
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "Attempt 3 of 3" in body_rows(screen))
        anchor = screen.current_anchor
        assert anchor is not None and anchor.title == "Attempt 1 of 3"
        assert body_rows(screen)[anchor.line] == "▶ Attempt 1 of 3"
        assert screen.scroller.scroll_y == min(anchor.line, screen.scroller.max_scroll_y) > 0  # still on it
        assert isinstance(app.screen, DetailScreen)


async def test_the_apps_action_keys_act_on_the_record_and_their_messages_show_here(
    tmp_path: Path, data_dir: Path
) -> None:
    await conflict(data_dir, Forge(tmp_path / "git"))
    app = make_app(data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "enter")
        await pilot.pause()
        screen = detail(app)
        assert screen.attempt is not None and screen.attempt["status"] == "needs_intervention"
        await pilot.press("a")  # nothing to adopt: the app says so, on this screen's message line too
        await wait_for(pilot, lambda: "only a changed or completed" in text_of(screen, "detail-message"))
        assert "only a changed or completed rebuild has a candidate" in text_of(screen, "detail-message")
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, KeysScreen)
        assert "adopt the attempt's candidate" in str(app.screen.query_one("#dialog", Static).render())
        await pilot.press("escape", "q")
        await pilot.pause()
        assert not isinstance(app.screen, DetailScreen)


async def test_read_only_does_not_offer_the_action_keys(tmp_path: Path, data_dir: Path) -> None:
    await conflict(data_dir, Forge(tmp_path / "git"))
    for read_only in (False, True):
        app = make_app(data_dir, read_only=read_only)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("3", "enter")
            await pilot.pause()
            keys = text_of(detail(app), "detail-keys")
            assert (" r R s a " in keys) is not read_only
            await pilot.press("question_mark")
            await pilot.pause()
            assert ("retry the event" in str(app.screen.query_one("#dialog", Static).render())) is not read_only
        app = make_app(data_dir, read_only=read_only)
        async with app.run_test(size=(200, 50)) as pilot:
            await pilot.press("3", "enter")
            await pilot.pause()
            keys = text_of(detail(app), "detail-keys")
            assert ("r retry  R replay  s sync  a adopt" in keys) is not read_only


def test_the_document_of_every_kind_of_record() -> None:
    """From a chain alone (DetailScreen(chain), or a server's chain): what was asked for comes first."""
    run = {"id": "run-1", "eventId": "e", "flowName": "f", "stepName": "s", "status": "failed", "output": ["boom"]}
    attempt = {"id": "a-1", "eventId": "e", "status": "failed", "workspaceRunIds": ["run-1"]}
    event = {"id": "e", "type": "upstream.release", "payload": {"repo": "acme/w", "tag": "v1"}}
    chain = {"kind": "run", "id": "run-1", "run": run, "event": event, "dispatches": [], "attempts": [attempt]}
    doc = build_document({**chain, "runs": [run]})
    assert [b.title for b in doc.blocks] == ["Run f/s", "Attempt 1 of 1", "Flow event"]
    assert [c.label for c in doc.crumbs] == ["event", "attempt 1 of 1", "run f/s"] and doc.crumbs[2].opened
    assert "boom" in render_chain({**chain, "runs": [run]}).plain  # a step's own output, when it has no git log
    lay = layout(doc, 60)
    assert [a.title for a in lay.anchors] == ["Run f/s", "✗ output of f/s", "Attempt 1 of 1", "Flow event"]
    backend = backend_chain(attempt, event)  # an attempt whose runs are a backend's: none in the store
    assert "no run of it here: no worktree" in render_chain(backend).plain
    assert [c.label for c in build_document(backend).crumbs] == ["event", "attempt 1 of 1", "no run"]
    gone: dict[str, Any] = {"kind": "event", "id": "gone", "event": None, "dispatches": [], "attempts": [], "runs": []}
    assert [b.title for b in build_document(gone).blocks] == ["Record"]
    assert "no flow event for this record" in render_chain(gone).plain


def backend_chain(attempt: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "attempt", "id": attempt["id"], "attempt": attempt, "event": event, "attempts": [attempt]}


# -- a real terminal: App.suspend hands it to the pager and the shell, and takes it back ---------------------------
class Tmux:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True).stdout

    def wait_for(self, check: Any, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        screen = self("capture-pane", "-p", "-t", "tui")
        raise AssertionError(f"{what} never happened; screen was:\n{screen}")

    def shows(self, text: str) -> bool:
        return text in self("capture-pane", "-p", "-t", "tui")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_in_a_real_terminal_p_and_bang_hand_over_and_come_back(tmp_path: Path, data_dir: Path) -> None:
    attempt = asyncio.run(conflict(data_dir, Forge(tmp_path / "git")))
    worktree = worktree_of(data_dir, attempt)
    paged, answered, shell = tmp_path / "paged.txt", tmp_path / "answered.txt", tmp_path / "shell.txt"
    # a pager as less is one: the text on stdin, the keys from the terminal (which the dashboard must let go of)
    pager = script(tmp_path / "pager", f'cat > {paged}\nread answer < /dev/tty\necho "$answer" > {answered}\n')
    env = f"PAGER={pager} SHELL='sh -c \"pwd > {shell}\"' TERM=xterm-256color"
    command = f"cd {ROOT} && {env} {PYTHON} -m patchmoi tui --data-dir {data_dir}"
    tmux = Tmux(f"patchmoi-detail-{os.getpid()}-{time.monotonic_ns() % 100000}")
    try:
        tmux("new-session", "-d", "-s", "tui", "-x", "100", "-y", "30", command)
        tmux.wait_for(lambda: tmux.shows("1 Upstream"), "the dashboard")
        tmux("send-keys", "-t", "tui", "3")
        time.sleep(0.3)
        tmux("send-keys", "-t", "tui", "Enter")
        tmux.wait_for(lambda: tmux.shows("ATTEMPT 1/1"), "the detail view")
        tmux("send-keys", "-t", "tui", "p")
        tmux.wait_for(lambda: paged.exists() and CONFLICT in paged.read_text(), "the pager")
        tmux("send-keys", "-t", "tui", "seen", "Enter")  # typed to the pager, not to the dashboard
        tmux.wait_for(lambda: answered.exists() and answered.read_text() == "seen\n", "the pager reading keys")
        tmux.wait_for(lambda: tmux.shows("ATTEMPT 1/1") and tmux.shows(f"event{SEP}attempt"), "coming back")
        tmux("send-keys", "-t", "tui", "!")
        tmux.wait_for(lambda: shell.exists() and shell.read_text().strip() == str(worktree), "the shell")
        tmux.wait_for(lambda: tmux.shows("back from the shell"), "coming back from the shell")
        tmux("send-keys", "-t", "tui", "Escape")
        time.sleep(0.3)
        tmux("send-keys", "-t", "tui", "q")
    finally:
        subprocess.run(["tmux", "-L", tmux.socket, "kill-server"], capture_output=True)
