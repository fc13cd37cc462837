"""Modal screens: confirm an action (with a reason), filter, help, and the detail view of a record."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Input, Label, Static

from patchmoi_tui.rows import status_text, upstream_label

KEYS = (
    ("1-5", "switch tab: Upstream, Events, Attempts, Dispatches, Runs"),
    ("j / k, ↓ / ↑", "move"),
    ("g / G", "first / last row (G loads older rows)"),
    ("enter", "detail: event → dispatches → attempts → runs → candidates, range-diff, run log"),
    ("esc", "back"),
    ("r", "retry the selected event (same backend; idempotent by id)"),
    ("R", "replay the selected event (new runs)"),
    ("s", "sync the selected attempt from its runs"),
    ("/", "filter: repo:acme status:failed type:upstream.release source:id, or free text"),
    ("f", "follow on/off (newest rows stay in view)"),
    ("ctrl+p", "command palette (every action)"),
    ("?", "this help"),
    ("q", "quit"),
)


class ConfirmScreen(ModalScreen[str | None]):
    """Returns the reason ('' when none) on confirm, None on cancel."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, body: str) -> None:
        super().__init__()
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title")
            yield Static(self.body, id="dialog-body")
            yield Input(placeholder="reason (optional, recorded with the dispatch)", id="reason")
            with Horizontal(id="dialog-buttons"):
                yield Button("Confirm", variant="primary", id="confirm")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.query_one("#reason", Input).value.strip() if event.button.id == "confirm" else None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class FilterScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Filter rows", id="dialog-title")
            yield Static("repo:acme  status:failed  type:upstream.release  source:id  or free text; "
                         "empty clears", id="dialog-body")
            yield Input(value=self.current, placeholder="filter", id="filter")

    def on_mount(self) -> None:
        self.query_one("#filter", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("patchmoi keys\n\n", style="bold")
        for key, what in KEYS:
            text.append(f"{key:>14}  ", style="bold cyan")
            text.append(what + "\n")
        with Vertical(id="dialog"):
            yield Static(text, id="help-body")

    def action_close(self) -> None:
        self.dismiss(None)


class DetailScreen(Screen[None]):
    """The chain around one record, as text a person can scroll."""

    BINDINGS = [Binding("escape,q", "back", "Back"), Binding("j,down", "scroll_down", show=False),
                Binding("k,up", "scroll_up", show=False)]

    def __init__(self, chain: dict[str, Any]) -> None:
        super().__init__()
        self.chain = chain

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail"):
            yield Static(render_chain(self.chain), id="detail-body")
        yield Footer()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_scroll_down(self) -> None:
        self.query_one("#detail", VerticalScroll).scroll_down()

    def action_scroll_up(self) -> None:
        self.query_one("#detail", VerticalScroll).scroll_up()


def render_chain(chain: dict[str, Any]) -> Text:
    t = Text()

    def head(title: str) -> None:
        t.append(f"\n{title}\n", style="bold underline")

    signal = chain.get("signal")
    if signal:
        head("Upstream signal")
        repo = signal.get("repo") if isinstance(signal.get("repo"), dict) else {}
        t.append(f"  {signal.get('event')} {repo.get('fullName')} {signal.get('ref') or ''}  {signal.get('title')}\n")
        t.append(f"  {signal.get('url') or ''}\n", style="bright_black")
    event = chain.get("event")
    if event:
        head("Flow event")
        t.append(f"  {event.get('id')}\n  type {event.get('type')}  upstream {upstream_label(event)}\n")
        t.append(f"  received {event.get('receivedAt')}\n", style="bright_black")
    elif not signal:
        t.append("no flow event for this record\n")
    if chain.get("dispatches"):
        head("Dispatches")
        for d in chain["dispatches"]:
            t.append("  ")
            t.append_text(status_text(d.get("status")))
            t.append(f"  {d.get('operation')} via {d.get('transport')}  {d.get('createdAt')}")
            if d.get("reason"):
                t.append(f"  reason: {d['reason']}", style="italic")
            if d.get("error"):
                t.append(f"\n    {d['error']}", style="red")
            t.append("\n")
    for a in chain.get("attempts") or []:
        head("Attempt")
        t.append("  ")
        t.append_text(status_text(a.get("status")))
        t.append(f"  {a.get('id')}\n")
        if a.get("message"):
            t.append(f"  {a['message']}\n")
        if a.get("error") and a.get("error") != a.get("message"):
            t.append(f"  {a['error']}\n", style="red")
        for ref in a.get("candidateRefs") or []:
            t.append(f"  candidate {ref.get('ref')} {str(ref.get('sha') or '')[:12]}"
                     f"{' (pushed)' if ref.get('pushed') else ''}\n", style="green")
    for run in chain.get("runs") or []:
        head(f"Run {run.get('flowName')}/{run.get('stepName')}")
        t.append("  ")
        t.append_text(status_text(run.get("status")))
        t.append(f"  {run.get('id')}\n")
        payload = run.get("resultPayload") if isinstance(run.get("resultPayload"), dict) else {}
        assert isinstance(payload, dict)
        artifacts = payload.get("artifacts") if isinstance(payload.get("artifacts"), dict) else {}
        assert isinstance(artifacts, dict)
        for key in ("applied", "dropped", "unmergedFiles"):
            if artifacts.get(key):
                t.append(f"  {key}: {', '.join(map(str, artifacts[key]))}\n")
        if artifacts.get("worktree"):
            t.append(f"  resume in {artifacts['worktree']}\n", style="bold yellow")
        if artifacts.get("rangeDiff"):
            t.append("  range-diff (old stack vs new):\n", style="bold")
            for line in str(artifacts["rangeDiff"]).splitlines()[:60]:
                t.append(f"    {line}\n")
        if run.get("error"):
            t.append(f"  {run['error']}\n", style="red")
        for entry in (run.get("log") or [])[:80]:
            code = entry.get("exitCode")
            t.append(f"  $ {entry.get('command')}", style="bold" if code == 0 else "bold red")
            t.append(f"  → {code}\n", style="bright_black")
            out = str(entry.get("output") or "").strip().splitlines()
            for line in out[-6:]:
                t.append(f"      {line}\n", style="bright_black")
    if not any(chain.get(k) for k in ("event", "signal", "dispatches", "attempts", "runs")):
        t.append(json.dumps(chain, indent=2)[:4000])
    return t
