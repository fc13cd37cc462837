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

from patchmoi.core.adopt import review_reason
from patchmoi.tui.rows import state_text, status_text, upstream_label
from patchmoi.tui.textfmt import shorten

KEYS = (  # one line each: the help fits 80x24 without scrolling (a test checks)
    ("1-6", "Upstream Events Queue/Attempts Dispatches Runs Sources"),
    ("o / y", "tab 3: queue or all attempts / copy the row's id"),
    ("j k ↓ ↑", "move"),
    ("g / G", "first / last row (G loads older rows)"),
    ("enter / esc", "detail of the row (a source: its signals) / back"),
    ("r", "retry the event (same backend; idempotent by id)"),
    ("R", "replay the event (new runs)"),
    ("s", "sync the attempt from its runs"),
    ("a", "adopt the attempt's candidate (main, patch branches)"),
    ("", "dialogs open on Cancel: shift+tab, enter confirms"),
    ("/", "filter: repo: status: state:open type: source: text"),
    ("f", "follow: the cursor stays on its record (top: follows)"),
    ("ctrl+p / ctrl+r", "command palette (every action) / refresh now"),
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

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

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


def pick_attempt(chain: dict[str, Any], kind: str, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The attempt a chain is about: the attempt row it was opened on (its fresher copy in the chain), else
    the newest attempt waiting for adoption, else the newest attempt."""
    attempts = [a for a in chain.get("attempts") or [] if isinstance(a, dict)]
    if kind == "attempts" and record is not None:
        wanted = str(record.get("id"))
        return next((a for a in attempts if str(a.get("id")) == wanted), record)
    return next((a for a in attempts if a.get("state") == "ready"), attempts[0] if attempts else None)


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


class DetailScreen(Screen[None]):
    """The chain around one record, as text a person can scroll. The app's action keys (r, R, s, a) act on
    the record it was opened from (`kind`, `record`); `a` adopts `attempt`."""

    BINDINGS = [
        Binding("escape,q", "back", "Back"),
        Binding("j,down", "scroll_down", show=False),
        Binding("k,up", "scroll_up", show=False),
    ]

    def __init__(self, chain: dict[str, Any], *, kind: str = "", record: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.chain = chain
        self.kind = kind
        self.record = record

    @property
    def attempt(self) -> dict[str, Any] | None:
        return pick_attempt(self.chain, self.kind, self.record)

    def show(self, chain: dict[str, Any]) -> None:
        """Re-render with a fresh chain (after an action changed it)."""
        self.chain = chain
        self.query_one("#detail-body", Static).update(render_chain(chain))

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail"):
            yield Static(render_chain(self.chain), id="detail-body")
        yield Footer(compact=True)

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_scroll_down(self) -> None:
        self.query_one("#detail", VerticalScroll).scroll_down()

    def action_scroll_up(self) -> None:
        self.query_one("#detail", VerticalScroll).scroll_up()


STATE_HINTS = {
    "open": "needs a person: resolve it, then retry the event",
    "ready": "its candidate waits to be adopted (a)",
    "running": "no outcome yet",
    "resolved": "a later attempt of the same release succeeded",
    "superseded": "something newer for this fork succeeded or replaced it",
    "adopted": "the fork moved to its candidate",
    "done": "",
}


def render_adoption(t: Text, adoption: dict[str, Any]) -> None:
    """Who adopted what and when: the target branch move, each patch branch moved, each retired."""
    t.append(f"  adopted {adoption.get('adoptedAt')} by {adoption.get('by')}", style="bold green")
    if adoption.get("reviewed"):
        t.append(" (reviewed)", style="green")
    t.append("\n")
    t.append(
        f"    {adoption.get('targetBranch')} {str(adoption.get('from') or '-')[:12]} → "
        f"{str(adoption.get('to') or '-')[:12]}  ({adoption.get('candidate')})\n"
    )
    if adoption.get("reason"):
        t.append(f"    reason: {adoption['reason']}\n", style="italic")
    for patch in adoption.get("patches") or []:
        t.append(
            f"    moved   {patch.get('name')} {str(patch.get('from') or '-')[:12]} → "
            f"{str(patch.get('to') or '-')[:12]} ({patch.get('commits')} commit(s))\n"
        )
    for retired in adoption.get("retired") or []:
        t.append(
            f"    retired {retired.get('name')} ({retired.get('why')}); old tip kept at {retired.get('ref')}\n",
            style="bright_black",
        )
    for path in adoption.get("worktreesUpdated") or []:
        t.append(f"    checkout {path} updated\n", style="bright_black")
    if "pushed" in adoption:
        if adoption.get("pushed"):
            t.append(f"    pushed to {adoption.get('pushRemote')}\n", style="green")
        else:
            t.append(f"    push to {adoption.get('pushRemote')} FAILED: {adoption.get('pushError')}\n", style="red")


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
        if a.get("state"):
            t.append("  state ")
            t.append_text(state_text(a.get("state")))
            t.append(f"  {STATE_HINTS.get(str(a['state']), '')}\n", style="bright_black")
        if a.get("message"):
            t.append(f"  {a['message']}\n")
        if a.get("error") and a.get("error") != a.get("message"):
            t.append(f"  {a['error']}\n", style="red")
        for ref in a.get("candidateRefs") or []:
            t.append(
                f"  candidate {ref.get('ref')} {str(ref.get('sha') or '')[:12]}"
                f"{' (pushed)' if ref.get('pushed') else ''}\n",
                style="green",
            )
        if a.get("adoptionError"):
            t.append(f"  adoption: {a['adoptionError']}\n", style="yellow")
        adoption = a.get("adoption")
        if isinstance(adoption, dict):
            render_adoption(t, adoption)
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
        if artifacts.get("needsReview"):
            t.append(f"  review before adopting: {review_reason(artifacts)}\n", style="bold yellow")
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
