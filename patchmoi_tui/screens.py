"""Modal screens: confirm an action (with a reason), filter, help; the detail view of a record is in
`detail` (re-exported here)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from patchmoi.core.adopt import review_reason
from patchmoi.tui.detail import STATE_HINTS, DetailScreen, pick_attempt, render_adoption, render_chain
from patchmoi.tui.rows import upstream_label
from patchmoi.tui.textfmt import shorten

__all__ = [
    "STATE_HINTS",
    "ConfirmScreen",
    "DetailScreen",
    "FilterScreen",
    "HelpScreen",
    "TextScreen",
    "adopt_body",
    "pick_attempt",
    "rebuild_artifacts",
    "render_adoption",
    "render_chain",
    "review_note",
]

KEYS = (  # one line each: the help fits 80x24 without scrolling (a test checks)
    ("1-6 / o", "tabs: 3 opens on the open queue; o: every attempt"),
    ("j k ↓ ↑ g G", "move; first / last row (G pages into older history)"),
    ("enter / esc", "detail of the row (a source: its signals) / back"),
    ("r / R", "retry the event (same backend) / replay it (new runs)"),
    ("s / a", "sync the attempt from its runs / adopt its candidate"),
    ("space / U", "mark the row (r R s then act on marks) / unmark all"),
    ("", "dialogs open on Cancel: shift+tab, enter confirms"),
    ("/", "filter: repo: status: state: type: source: since: text"),
    ("p", "tab 6: poll the selected feed source now"),
    ("w / > / <", "wide columns / sort by the next column / reverse"),
    ("y", "copy the row's id (the CLI takes its 8-hex short id)"),
    ("f", "follow: the cursor stays on its record (top: follows)"),
    ("ctrl+p / ctrl+r", "command palette (every action) / refresh now"),
    ("in detail: ?", "its keys: ] [ sections, p pager, e editor, ! shell"),
    ("? / q", "this help / quit (asks while a local run goes on)"),
)


CONFIRM_KEYS = "tab: reason · shift+tab, enter: confirm · enter, esc: cancel"
CONFIRM_KEYS_NO_REASON = "shift+tab, enter: confirm · enter, esc: cancel"


class ConfirmScreen(ModalScreen[str | None]):
    """Returns the reason ('' when none) on confirm, None on cancel.

    Cancel is the default (k9s' rule for actions that change something): the dialog opens on the Cancel button,
    so keys typed by mistake (a filter typed without its `/`, say) fall on a button that ignores letters, and
    their Enter cancels. Confirming takes a deliberate move: shift+tab to Confirm (or tab into the reason, type,
    enter)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        title: str,
        body: str | Text,
        placeholder: str | None = "reason (optional, recorded with the dispatch)",
        confirm: str = "Confirm",
    ) -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.placeholder = placeholder
        self.confirm_label = confirm

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            # the keys on the frame: they cost no line of a dialog that must fit 80x24
            dialog.border_subtitle = CONFIRM_KEYS if self.placeholder is not None else CONFIRM_KEYS_NO_REASON
            yield Label(self.title_text, id="dialog-title")
            yield Static(self.body, id="dialog-body")
            if self.placeholder is not None:
                yield Input(placeholder=self.placeholder, id="reason")
            with Horizontal(id="dialog-buttons"):
                yield Button(self.confirm_label, variant="primary", id="confirm")
                yield Button("Cancel", id="cancel")

    AUTO_FOCUS = "#cancel"  # focused as the screen is composed: keys typed right after the action key land here

    def reason(self) -> str:
        return self.query_one("#reason", Input).value.strip() if self.placeholder is not None else ""

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())  # the reason was typed on purpose: its Enter confirms

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.reason() if event.button.id == "confirm" else None)

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
            yield Static(
                "repo:acme  status:failed  state:open  type:upstream.release  source:id  or free text; empty clears",
                id="dialog-body",
            )
            yield Input(value=self.current, placeholder="filter", id="filter")

    AUTO_FOCUS = "#filter"  # (as the screen is composed: text typed right after `/` is not lost)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, extra: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__()
        self.extra = extra  # an app's own keys (the demo's `n`)

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("patchmoi keys\n", style="bold")
        for key, what in (*KEYS, *self.extra):
            text.append(f"{key:>14}  ", style="bold cyan")
            text.append(what + "\n")
        with Vertical(id="dialog"):
            yield Static(text, id="help-body")

    def action_close(self) -> None:
        self.dismiss(None)


class TextScreen(ModalScreen[None]):
    """A scrollable text in a dialog (the message log); esc or q closes it."""

    BINDINGS = [Binding("escape,q", "close", "Close")]

    def __init__(self, title: str, text: Text) -> None:
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Label(self.title_text, id="dialog-title")
            yield Static(self.text, id="text-body")

    def action_close(self) -> None:
        self.dismiss(None)


def rebuild_artifacts(chain: dict[str, Any], attempt: dict[str, Any]) -> dict[str, Any]:
    """The rebuild report of the attempt's local run among the chain's runs (what adopt reads), or {}."""
    runs = {str(r.get("id")): r for r in chain.get("runs") or [] if isinstance(r, dict)}
    for run_id in reversed([str(r) for r in attempt.get("workspaceRunIds") or []]):
        payload = (runs.get(run_id) or {}).get("resultPayload")
        artifacts = payload.get("artifacts") if isinstance(payload, dict) else None
        if isinstance(artifacts, dict) and artifacts.get("afterSha"):
            return artifacts
    return {}


def review_note(attempt: dict[str, Any], artifacts: dict[str, Any]) -> str | None:
    """Why the rebuild wants a person to look before adoption (None: it does not)."""
    if artifacts.get("needsReview"):
        return review_reason(artifacts)
    if "already contains" in str(attempt.get("adoptionError") or ""):  # core.adopt: main is on this upstream or later
        return "main is already on this upstream or a newer one: adopting moves it back"
    message = str(attempt.get("message") or "")
    return message if "review" in message.lower() else None


def adopt_body(attempt: dict[str, Any], artifacts: dict[str, Any]) -> Text:
    """What adopting will do, for the confirmation dialog: at most 7 lines of 70 columns, so the dialog and
    its buttons fit a 80x24 terminal."""
    t = Text()
    t.append(f"Move the fork to the candidate of {shorten(upstream_label(attempt), 36)}\n")
    refs = attempt.get("candidateRefs") or []
    ref = refs[-1] if refs and isinstance(refs[-1], dict) else {}
    candidate = shorten(str(ref.get("ref") or "-").removeprefix("refs/heads/"), 30)
    sha = str(ref.get("sha") or artifacts.get("afterSha") or "")[:12]
    if artifacts:
        t.append(f"  {shorten(artifacts.get('targetBranch'), 16)}  ", style="bold")
        t.append(f"{str(artifacts.get('beforeSha') or '-')[:12]} → {sha}  ({candidate})\n")
        series = [p for p in artifacts.get("series") or [] if isinstance(p, dict)]
        if series and artifacts.get("seriesMode", "branches") == "branches":
            moved = sum(1 for p in series if any(c.get("rebuilt") for c in p.get("commits") or []))
            retired = len(series) - moved
            t.append(
                f"  {moved} patch branch(es) move to their rebuilt commits"
                + (f", {retired} retired" if retired else "")
                + "\n"
            )
        where = str(artifacts.get("workspace") or "-")
        t.append(f"  in {where if len(where) <= 64 else '…' + where[-63:]}\n", style="bright_black")
    else:
        t.append(f"  its target branch → {sha}  ({candidate})\n", style="bold")
        t.append("  (its rebuild report is not loaded here; adopt reads it)\n", style="bright_black")
    note = review_note(attempt, artifacts)
    if note:
        t.append("⚠ flagged for review: confirming counts as your review\n", style="bold yellow")
        t.append(f"  {shorten(note, 66)}\n", style="yellow")
    t.append(shorten(f"attempt {attempt.get('id')}", 70), style="bright_black")
    return t
