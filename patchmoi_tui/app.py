"""The operator dashboard: five live-tailed tabs, a detail view, and keys for retry, replay, sync and adopt."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.css.query import NoMatches
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane

from patchmoi.core.attempt_states import SUCCESS
from patchmoi.core.errors import PatchmoiError
from patchmoi.core.workspace.adopt import AdoptRefused
from patchmoi.tui.client import Client, chain_id
from patchmoi.tui.rows import TAB_BY_KIND, TABS, RowFilter, TabSpec, source_order
from patchmoi.tui.screens import (
    ConfirmScreen,
    DetailScreen,
    FilterScreen,
    HelpScreen,
    TextScreen,
    adopt_body,
    pick_attempt,
    rebuild_artifacts,
    review_note,
)
from patchmoi.tui.textfmt import relative_time

PAGE = 200
MAX_ROWS = 5000  # memory stays bounded whatever the history: older rows are left to filters and the CLI
WITHOUT_INDEX = ("signals", "events", "dispatches", "runs")  # tabs shown while indexes are built (not attempts:
# their states are derived from every attempt)
WARM_WAIT_SECONDS = 0.3  # an indexed or small store is ready within this: no progress line flashes by
AGE_TICK = 5.0  # seconds between two refreshes of the ages on screen
MUTATING = frozenset({"retry", "replay", "sync", "adopt"})  # refused (and not offered) in read-only mode


@dataclasses.dataclass(frozen=True)
class Note:
    """One message the dashboard showed (what an action did, what failed), newest last in `messages`."""

    at: datetime
    severity: str
    title: str
    message: str


MAX_NOTES = 200
NOTE_STYLE = {"error": "bold red", "warning": "yellow", "information": ""}


class PatchmoiApp(App[None]):
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses elsewhere keep the styles
    TITLE = "patchmoi"
    BINDINGS = [
        Binding("q", "leave", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("slash", "filter", "Filter"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("ctrl+r", "refresh", "Refresh", show=False),
        Binding("o", "toggle_queue", "Queue/all", show=False),
        Binding("y", "copy_id", "Copy id", show=False),
        Binding("r", "retry", "Retry"),
        Binding("R", "replay", "Replay"),
        Binding("s", "sync", "Sync"),
        Binding("a", "adopt", "Adopt"),
        Binding("j", "cursor('down')", show=False),
        Binding("k", "cursor('up')", show=False),
        Binding("g", "cursor('top')", show=False),
        Binding("G", "cursor('bottom')", show=False),
        *(Binding(str(i + 1), f"tab('{t.kind}')", show=False) for i, t in enumerate(TABS)),
    ]

    def __init__(
        self, client: Client, *, clock: Callable[[], datetime] | None = None, health_interval: float = 5.0
    ) -> None:
        super().__init__()
        self.client = client
        self.clock = clock or (lambda: datetime.now(UTC))
        self.health_interval = health_interval
        self.rows: dict[str, list[dict[str, Any]]] = {t.kind: [] for t in TABS}
        self.exhausted: dict[str, bool] = {t.kind: False for t in TABS}
        self.row_filter = RowFilter.parse("")
        self.follow = True
        self.last_refresh: datetime | None = None
        self.health: dict[str, Any] = {}
        self.last_error: str | None = None
        self.open_queue: tuple[int, bool] | None = None  # (open attempts, count is a lower bound)
        self._warm_timer: Timer | None = None
        self._closed = False
        self.queue_view = True  # tab 3 opens on the attempts that wait for a person; `o` shows them all
        self._pinned: dict[str, bool] = {}  # per tab: the operator's cursor is on the newest row
        self._placed: dict[str, str | None] = {}  # per tab: the row render_table put the cursor on
        self.age_tick = AGE_TICK
        self.messages: list[Note] = []
        self.sub_title = client.label + (" (read-only)" if client.read_only else "")
        if client.read_only:  # the keys still explain themselves when pressed, but the footer does not offer them
            bindings = self._bindings.key_to_bindings
            for key, found in bindings.items():
                bindings[key] = [dataclasses.replace(b, show=False) if b.action in MUTATING else b for b in found]

    # -- layout ------------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs"):
            for i, spec in enumerate(TABS):
                with TabPane(f"{i + 1} {spec.title}", id=f"tab-{spec.kind}"):
                    table: DataTable[Any] = DataTable(id=spec.kind, cursor_type="row", zebra_stripes=True)
                    yield table
        yield Static("", id="message")
        yield Static("", id="status")
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        for spec in TABS:
            table = self.table(spec.kind)
            for label, width in spec.columns:
                table.add_column(label, width=width or None, key=label)
        # A big DATA_DIR opened for the first time builds its indexes (seconds): the screen comes up at once
        # with the progress in the status line, and fills in when they are ready.
        warm = asyncio.create_task(self.client.warm())
        if not self.client.slow_to_warm():  # indexed, or small: ready in milliseconds, so wait for it
            await asyncio.wait({warm})
        done, _ = await asyncio.wait({warm}, timeout=WARM_WAIT_SECONDS)
        if done:
            await self.start_dashboard(warm)
        else:
            self.show_warming()
            self._warm_timer = self.set_interval(0.25, self.show_warming)
            warm.add_done_callback(lambda task: self.call_later(self.start_dashboard, task))
            for kind in WITHOUT_INDEX:  # newest-first pages read the files' ends meanwhile
                await self.reload(kind)
            self.show_warming()

    def show_warming(self) -> None:
        message = self.client.warming() or "opening the store: building its indexes (first open of a big store)"
        if self.screen_stack:
            self.dashboard.query_one("#status", Static).update(Text(f"⧗ {message}", style="yellow"))

    async def start_dashboard(self, warm: asyncio.Task[None]) -> None:
        if self._warm_timer is not None:
            self._warm_timer.stop()
        if not warm.cancelled() and warm.exception() is not None:  # reads build what they need: slower, not stuck
            self.last_error = f"building indexes failed: {warm.exception()}"
        await self.load_all()
        self.table("signals").focus()
        self.tail()
        self.health_loop()
        self.set_interval(self.age_tick, self.tick_ages)

    def tick_ages(self) -> None:
        """Ages move on while nothing else does (`0s ago` on a 90-second-old attempt, before): the AGE cells of
        the rows on screen in the open tab are computed again; the rest when they are shown."""
        if not self.screen_stack:
            return
        try:
            kind = self.active_kind
            table, spec = self.table(kind), TAB_BY_KIND[kind]
        except NoMatches:  # starting, or shutting down: the tabs are not there
            return
        if not table.row_count or spec.columns[0][0] != "AGE":
            return
        first = max(0, int(table.scroll_y))
        last = min(table.row_count, first + max(1, table.size.height))
        keys = [table.coordinate_to_cell_key(Coordinate(i, 0)).row_key for i in range(first, last)]
        wanted = {k.value for k in keys}
        records = {key: r for r in self.rows[kind] if (key := spec.key(r)) in wanted}
        now = self.clock()
        for row_key in keys:
            rec = records.get(str(row_key.value))
            if rec is not None:
                with contextlib.suppress(Exception):  # a row a reload just replaced: the next tick has it
                    table.update_cell(row_key, "AGE", spec.cells(rec, now)[0])

    # -- data --------------------------------------------------------------------------------------------
    @property
    def dashboard(self) -> Screen[Any]:
        """The screen with the tabs, whichever screen is on top (App.query_one only sees the top one, so a
        live-tail reload or an action key while the detail view is open must look here)."""
        return self.screen_stack[0]

    def table(self, kind: str) -> DataTable[Any]:
        return self.dashboard.query_one(f"#{kind}", DataTable)

    @property
    def active_kind(self) -> str:
        active = self.dashboard.query_one(TabbedContent).active or "tab-signals"
        return active.removeprefix("tab-")

    async def load_all(self) -> None:
        for spec in TABS:
            await self.reload(spec.kind)
        await self.refresh_health()

    async def reload(self, kind: str) -> None:
        """Fetch the newest page and merge it over what is loaded (new rows on top, changed rows updated)."""
        queue = kind == "attempts" and self.queue_view
        try:
            fresh = await (self.client.queue() if queue else self.client.rows(kind, PAGE))
        except PatchmoiError as exc:
            self.last_error = str(exc)
            self.update_status()
            return
        spec = TAB_BY_KIND[kind]
        if kind == "sources":  # the whole list each time, the ones that need a look first
            fresh = sorted(fresh, key=source_order)
        if kind == "sources" or queue:  # whole lists: what left them is gone, not older
            self.rows[kind] = []
        keys = {spec.key(r) for r in fresh}
        # every loaded row the newest page does not have, by key: N new rows push N rows off the page, not out
        older = [r for r in self.rows[kind] if spec.key(r) not in keys]
        self.rows[kind] = (fresh + older)[:MAX_ROWS]
        if (len(fresh) < PAGE and not older) or queue:
            self.exhausted[kind] = True
        self.last_refresh = self.clock()
        self.render_table(kind)
        if kind == "attempts":
            await self.refresh_queue()

    async def load_older(self, kind: str) -> None:
        rows = self.rows[kind]
        if self.exhausted[kind] or not rows or len(rows) >= MAX_ROWS:
            return
        cursor = rows[-1].get("_cursor")
        if cursor is None:
            self.exhausted[kind] = True
            return
        older = await self.client.rows(kind, PAGE, before=cursor)
        if len(older) < PAGE:
            self.exhausted[kind] = True
        spec = TAB_BY_KIND[kind]
        table = self.table(kind)
        now = self.clock()
        known = {spec.key(r) for r in rows}
        for rec in older:
            key = spec.key(rec)
            if key in known:
                continue
            rows.append(rec)
            if self.row_filter.matches(rec):
                table.add_row(*spec.cells(rec, now), key=key)

    def render_table(self, kind: str) -> None:
        """Rows again, the cursor still on its record (by key) when rows arrive above it: a key pressed now acts
        on what the operator was looking at. Follow mode moves it only when it was on the newest row."""
        spec: TabSpec = TAB_BY_KIND[kind]
        table = self.table(kind)
        selected, at = None, 0
        if table.row_count:
            at = table.cursor_row
            try:
                selected = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            except Exception:  # a stale coordinate: keep the cursor where the table puts it
                selected = None
        # follow only when the operator put the cursor on the newest row (g, f, moving up to it), not when the
        # record under it moved to the top by itself (an attempt that got a newer record)
        on_newest = at == 0 and self._pinned.get(kind, True)
        table.clear()
        now = self.clock()
        seen: set[str] = set()
        for rec in self.rows[kind]:
            key = spec.key(rec)
            if key in seen or not self.row_filter.matches(rec):
                continue
            seen.add(key)
            table.add_row(*spec.cells(rec, now), key=key)
        if self.follow and on_newest:
            table.move_cursor(row=0)
        elif selected is not None and selected in seen:
            table.move_cursor(row=table.get_row_index(selected))
        else:  # its record is gone (filtered out): the row that took its place
            table.move_cursor(row=min(at, max(0, table.row_count - 1)))
        if table.row_count:  # where the program put the cursor: its highlight is not the operator's move
            with contextlib.suppress(Exception):
                self._placed[kind] = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def selected(self, kind: str | None = None) -> dict[str, Any] | None:
        kind = kind or self.active_kind
        table = self.table(kind)
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:
            return None
        spec = TAB_BY_KIND[kind]
        return next((r for r in self.rows[kind] if spec.key(r) == key), None)

    # -- live tail ---------------------------------------------------------------------------------------
    @work(exclusive=True, group="tail", exit_on_error=False)
    async def tail(self) -> None:
        async for kinds in self.client.changes():
            for kind in kinds:
                await self.reload(kind)
            if kinds and self.client.connection() is None and self.last_error and "cannot reach" in self.last_error:
                self.last_error = None  # the server answers again
            self.update_status()

    @work(exclusive=True, group="health", exit_on_error=False)
    async def health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            await self.refresh_health()

    async def refresh_health(self) -> None:
        try:
            self.health = await self.client.health()
        except PatchmoiError as exc:
            self.last_error = str(exc)
        else:
            self.last_error = None  # an error shown earlier (a server that was down) is over
        await self.reload("sources")  # each source's last and next poll: from the same health, every few seconds
        await self.refresh_queue()

    async def refresh_queue(self) -> None:
        """The open-queue count of the status line (attempts that need a person now)."""
        try:
            self.open_queue = await self.client.open_queue()
        except PatchmoiError as exc:
            self.last_error = str(exc)
        self.update_status()

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """On the message line above the status line, never in a toast over the table (stacked toasts covered
        rows and the help at 80x24); each is kept in `messages`, and the command palette lists them."""
        note = Note(self.clock(), str(severity), title, message)
        self.messages = [*self.messages[-(MAX_NOTES - 1) :], note]
        if self.screen_stack:
            line = Text(note.at.astimezone().strftime("%H:%M:%S "), style="bright_black")
            line.append(f"{title}: " if title else "", style="bold")
            line.append(message, style=NOTE_STYLE.get(note.severity, ""))
            self.dashboard.query_one("#message", Static).update(line)

    def label_tabs(self) -> None:
        """Counts on the tabs that have a queue: open attempts, failing sources."""
        tabs = self.dashboard.query_one(TabbedContent)
        failing = sum(1 for s in self.rows["sources"] if s.get("lastError"))
        counts = {
            "attempts": f" !{self.open_queue[0]}{'+' if self.open_queue[1] else ''}"
            if self.open_queue and self.open_queue[0]
            else "",
            "sources": f" ✖{failing}" if failing else "",
        }
        for i, spec in enumerate(TABS):
            if spec.kind in counts:
                title = "Queue" if spec.kind == "attempts" and self.queue_view else spec.title
                with contextlib.suppress(Exception):  # (a tab that is not mounted yet)
                    tabs.get_tab(f"tab-{spec.kind}").label = f"{i + 1} {title}{counts[spec.kind]}"

    def update_status(self) -> None:
        if not self.screen_stack:  # shutting down
            return
        self.label_tabs()
        h = self.health
        sources = h.get("sources") or []
        failing = [s for s in sources if s.get("lastError")]
        parts: list[Text | str] = []
        down = self.client.connection()
        if down:  # first, and red: everything after it is as it was when the server last answered
            parts.append(Text(f"✖ {down}", style="bold red"))
        warming = self.client.warming()
        if warming:
            parts.append(Text(f"⧗ {warming}", style="yellow"))
        if sources:
            style = "red" if failing else "green"
            parts.append(
                Text(
                    f"● {len(sources)} source{'' if len(sources) == 1 else 's'}"
                    + (f", {len(failing)} failing" if failing else ""),
                    style=style,
                )
            )
        else:
            parts.append(Text("○ no sources polled", style="bright_black"))
        if self.open_queue is not None:
            count, more = self.open_queue
            label = f"{count}{'+' if more else ''} open"
            parts.append(Text(f"! {label}", style="bold yellow") if count else Text(label, style="bright_black"))
        if h.get("dispatchQueueDepth") is not None:
            parts.append(f"queue {h['dispatchQueueDepth']}")
        if h.get("localRunsInFlight"):
            parts.append(f"runs {h['localRunsInFlight']}")
        store = h.get("store") or {}
        if store.get("skippedLines") or store.get("quarantinedBytes"):
            parts.append(Text(f"store: {store.get('skippedLines', 0)} bad lines", style="yellow"))
        if self.queue_view and self.active_kind == "attempts" and not self.rows["attempts"]:
            parts.append(Text("queue empty: nothing waits for you · o: every attempt", style="green"))
        parts.append("follow on" if self.follow else Text("follow off", style="yellow"))
        if self.row_filter.active:
            parts.append(Text(f"filter {self.row_filter.describe()}", style="bold"))
        if self.last_refresh is not None:
            seconds = (self.clock() - self.last_refresh).total_seconds()
            parts.append(
                f"updated {relative_time(self.last_refresh.isoformat(), self.clock())}"
                if seconds >= 1
                else "updated now"
            )
        error = self.last_error or (failing[0].get("lastError") if failing else None)
        if error:
            parts.append(Text(f"last error: {error}", style="red"))
        line = Text(" · ").join(p if isinstance(p, Text) else Text(p) for p in parts)
        self.dashboard.query_one("#status", Static).update(line)

    # -- actions -----------------------------------------------------------------------------------------
    def action_tab(self, kind: str) -> None:
        self.dashboard.query_one(TabbedContent).active = f"tab-{kind}"
        self.table(kind).focus()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # (the first activation comes while the tabs are still being mounted: nothing to focus or say yet)
        with contextlib.suppress(NoMatches):
            self.table(self.active_kind).focus()
            self.update_status()  # (what it says can depend on the tab: an empty queue)

    async def action_cursor(self, where: str) -> None:
        table = self.table(self.active_kind)
        if where == "down":
            table.action_cursor_down()
        elif where == "up":
            table.action_cursor_up()
        elif where == "top":
            table.move_cursor(row=0)
        else:
            await self.load_older(self.active_kind)
            table.move_cursor(row=max(0, table.row_count - 1))

    async def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        table = event.data_table
        if table.id and event.row_key.value != self._placed.pop(table.id, None):
            self._pinned[table.id] = event.cursor_row == 0  # the operator moved: on the top row, or not
        if table.id and table.row_count and event.cursor_row >= table.row_count - 5:
            await self.load_older(table.id)  # rows load on demand as the cursor nears the end

    async def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        kind = event.data_table.id or self.active_kind
        record = self.selected(kind)
        if record is None:
            return
        if kind == "sources":  # a source's detail is what it brought: its signals, newest first
            self.row_filter = RowFilter.parse(f"source:{record.get('sourceId')}")
            for spec in TABS:
                self.render_table(spec.kind)
            self.action_tab("signals")
            self.update_status()
            return
        try:
            chain = await self.client.describe(kind, record)
        except PatchmoiError as exc:
            self.notify(str(exc), severity="error")
            return
        await self.push_screen(DetailScreen(chain, kind=kind, record=record))

    async def action_toggle_queue(self) -> None:
        """`o`: tab 3 between the queue (open and ready attempts, however old) and every attempt, newest first."""
        self.queue_view = not self.queue_view
        self.rows["attempts"], self.exhausted["attempts"] = [], False
        await self.reload("attempts")
        self.action_tab("attempts")
        self.notify(
            "attempts: the queue (open: needs intervention; ready: a candidate to adopt)"
            if self.queue_view
            else "attempts: every attempt, newest first"
        )
        self.update_status()

    def action_copy_id(self) -> None:
        """`y`: the selected record's id to the clipboard (OSC 52: the terminal's, over SSH too), for the CLI
        (`patchmoi show ID`, `patchmoi retry ID`)."""
        kind = self.active_kind
        record = self.selected(kind)
        if record is None:
            self.notify("nothing selected to copy", severity="warning")
            return
        ident = str(record.get("sourceId")) if kind == "sources" else chain_id(kind, record)
        self.copy_to_clipboard(ident)
        self.notify(f"copied {ident}", title="y")

    async def action_refresh(self) -> None:
        """ctrl+r: every list and the health, now."""
        await self.load_all()
        self.update_status()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        if self.follow:
            self.table(self.active_kind).move_cursor(row=0)
        self.notify(f"follow {'on: newest rows stay in view' if self.follow else 'off'}")
        self.update_status()

    def action_filter(self) -> None:
        def apply(value: str | None) -> None:
            if value is None:
                return
            self.row_filter = RowFilter.parse(value)
            for spec in TABS:
                self.render_table(spec.kind)
            self.update_status()

        self.push_screen(FilterScreen(self.row_filter.describe()), apply)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_messages(self) -> None:
        log = Text()
        for note in reversed(self.messages):
            log.append(note.at.astimezone().strftime("%H:%M:%S "), style="bright_black")
            log.append(f"{note.title}: " if note.title else "", style="bold")
            log.append(note.message + "\n", style=NOTE_STYLE.get(note.severity, ""))
        self.push_screen(TextScreen("Messages", log if self.messages else Text("nothing yet")))

    async def _event_id_of(self, record: dict[str, Any]) -> str | None:
        if self.active_kind == "events":
            return str(record.get("id"))
        if record.get("eventId"):
            return str(record["eventId"])
        chain = await self.client.describe(self.active_kind, record)
        event = chain.get("event")
        return str(event["id"]) if event else None

    async def _confirm_event_action(self, op: str) -> None:
        if self.client.read_only:
            self.notify(f"read-only mode: {op} is disabled", severity="warning")
            return
        record = self.selected()
        event_id = await self._event_id_of(record) if record else None
        if not event_id:
            self.notify(f"select a row with a flow event to {op}", severity="warning")
            return
        body = f"{op.capitalize()} flow event\n{event_id}\n\n" + (
            "Re-sends the same event to the same backend; a backend that already has it answers duplicate."
            if op == "retry"
            else "Asks the backend (or the local runner) for new runs of this event."
        )

        def done(reason: str | None) -> None:
            if reason is not None:
                self.run_action_worker(op, event_id, reason or None)

        self.push_screen(ConfirmScreen(f"{op.capitalize()}?", body), done)

    @work(group="actions", exit_on_error=False)
    async def run_action_worker(self, op: str, ident: str, reason: str | None) -> None:
        try:
            if op == "retry":
                result = await self.client.retry(ident, reason)
            elif op == "replay":
                result = await self.client.replay(ident, reason)
            else:
                result = await self.client.sync(ident)
        except PatchmoiError as exc:
            self.notify(f"{op} failed: {exc}", severity="error", timeout=10)
            return
        except Exception as exc:
            self.notify(f"{op} failed: {type(exc).__name__}: {exc}", severity="error", timeout=10)
            return
        record = result.get("record") or {}
        attempt = result.get("attempt") or {}
        if op == "sync":
            self.notify(f"sync: attempt is {attempt.get('status')}", title="sync")
        elif record.get("status") == "failed":
            self.notify(f"{op}: dispatch failed: {record.get('error')}", severity="error", timeout=10)
        elif record.get("status") == "skipped":
            self.notify(f"{op}: skipped: {record.get('error')}", severity="warning", timeout=10)
        else:
            self.notify(
                f"{op}: {record.get('status')} via {record.get('transport')}; attempt {attempt.get('status')}", title=op
            )

    async def action_retry(self) -> None:
        await self._confirm_event_action("retry")

    async def action_replay(self) -> None:
        await self._confirm_event_action("replay")

    async def action_sync(self) -> None:
        if self.client.read_only:
            self.notify("read-only mode: sync is disabled", severity="warning")
            return
        record = self.selected()
        attempt_id = None
        if record is not None and self.active_kind == "attempts":
            attempt_id = str(record.get("id"))
        elif record is not None:
            chain = await self.client.describe(self.active_kind, record)
            attempts = chain.get("attempts") or []
            attempt_id = str(attempts[0]["id"]) if attempts else None
        if not attempt_id:
            self.notify("select an attempt (tab 3) to sync", severity="warning")
            return

        def done(reason: str | None) -> None:
            if reason is not None:
                self.run_action_worker("sync", attempt_id, None)

        self.push_screen(
            ConfirmScreen(
                "Sync?",
                f"Sync maintenance attempt\n{attempt_id}\n\nRe-reads its runs and records the outcome if it changed.",
            ),
            done,
        )

    async def action_adopt(self) -> None:
        """Adopt the selected attempt's candidate (the attempt of the detail view when one is open)."""
        if self.client.read_only:
            self.notify("read-only mode: adopt is disabled", severity="warning")
            return
        if isinstance(self.screen, DetailScreen):
            chain, attempt = self.screen.chain, self.screen.attempt
        else:
            if self.screen is not self.dashboard:
                return  # a dialog is open
            record = self.selected()
            if record is None:
                self.notify("select an attempt (tab 3) to adopt", severity="warning")
                return
            try:  # the chain has the attempt's runs: the rebuild report the dialog describes
                chain = await self.client.describe(self.active_kind, record)
            except PatchmoiError as exc:
                self.notify(str(exc), severity="error")
                return
            attempt = pick_attempt(chain, self.active_kind, record)
        if attempt is None:
            self.notify("select an attempt (tab 3) to adopt", severity="warning")
            return
        attempt_id = str(attempt.get("id"))
        adoption = attempt.get("adoption")
        if isinstance(adoption, dict):
            self.notify(
                f"already adopted at {adoption.get('adoptedAt')} by {adoption.get('by')}",
                severity="warning",
                timeout=10,
            )
            return
        if attempt.get("status") not in SUCCESS:
            self.notify(
                f"attempt is {attempt.get('status')}: only a changed or completed rebuild has a candidate to adopt",
                severity="warning",
                timeout=10,
            )
            return
        artifacts = rebuild_artifacts(chain, attempt)
        reviewed = review_note(attempt, artifacts) is not None  # the dialog says so: confirming is the review

        def done(reason: str | None) -> None:
            if reason is not None:
                self.run_adopt(attempt_id, reason or None, reviewed)

        self.push_screen(
            ConfirmScreen(
                "Adopt?", adopt_body(attempt, artifacts), placeholder="reason (optional, recorded with the adoption)"
            ),
            done,
        )

    @work(group="actions", exit_on_error=False)
    async def run_adopt(self, attempt_id: str, reason: str | None, reviewed: bool) -> None:
        try:
            result = await self.client.adopt(attempt_id, reason, reviewed=reviewed)
        except AdoptRefused as exc:
            self.notify(str(exc), title="not adopted", severity="error", timeout=20)
            return
        except PatchmoiError as exc:
            self.notify(f"adopt failed: {exc}", severity="error", timeout=20)
            return
        except Exception as exc:
            self.notify(f"adopt failed: {type(exc).__name__}: {exc}", severity="error", timeout=20)
            return
        record = (result.get("attempt") or {}).get("adoption") or {}
        patches, retired = record.get("patches") or [], record.get("retired") or []
        message = (
            f"{record.get('targetBranch')} {str(record.get('from') or '-')[:12]} → "
            f"{str(record.get('to') or '-')[:12]} ({record.get('candidate')}); "
            f"{len(patches)} patch branch(es) moved" + (f", {len(retired)} retired" if retired else "")
        )
        if record.get("pushed") is False:
            self.notify(
                f"{message}; push to {record.get('pushRemote')} FAILED: {record.get('pushError')}",
                title="adopted",
                severity="warning",
                timeout=20,
            )
        else:
            self.notify(
                message + (f"; pushed to {record['pushRemote']}" if record.get("pushed") else ""),
                title="adopted",
                timeout=10,
            )
        await self.reload("attempts")
        screen = self.screen
        if isinstance(screen, DetailScreen) and screen.record is not None:
            with contextlib.suppress(PatchmoiError):  # if not, the notification has said what happened
                screen.show(await self.client.describe(screen.kind, screen.record))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        actions: list[tuple[str, str, Callable[[], Any]]] = [
            ("Retry selected event", "re-dispatch to the same backend", self.action_retry),
            ("Replay selected event", "new runs for the event", self.action_replay),
            ("Sync selected attempt", "refresh from its runs", self.action_sync),
            ("Adopt selected attempt", "move main and the patch branches to its candidate", self.action_adopt),
            ("Filter rows", "repo:, status:, type:, source: or text", self.action_filter),
            ("Toggle follow", "keep the newest rows in view", self.action_toggle_follow),
            ("Show keys", "every key binding", self.action_help),
            ("Messages", "what the dashboard said, newest first", self.action_messages),
        ]
        for spec in TABS:
            actions.append((f"Go to {spec.title}", f"tab {spec.kind}", lambda kind=spec.kind: self.action_tab(kind)))  # type: ignore[misc]
        if self.client.read_only:  # read-only refuses these: do not offer them
            actions = [
                a
                for a in actions
                if a[2] not in (self.action_retry, self.action_replay, self.action_sync, self.action_adopt)
            ]
        for title, help_text, callback in actions:
            yield SystemCommand(title, help_text, callback)

    async def action_quit(self) -> None:
        """ctrl+q and the palette's Quit ask first too."""
        await self.action_leave()

    async def action_leave(self) -> None:
        """`q`: quit, but ask first while local runs are going on here, and say what becomes of them."""
        running = self.client.runs_in_flight()
        if not running:
            await self._quit_now()
            return

        def done(answer: str | None) -> None:
            if answer is not None:
                self.call_later(self._quit_now)

        self.push_screen(
            ConfirmScreen(
                "Quit?",
                f"{running} local run(s) are still going on in this dashboard's process.\n\n"
                "Quitting stops them now: each is recorded as interrupted (failed), its attempt with it, and "
                "`patchmoi retry EVENT` runs it again later. Cancel to let them finish first.",
                placeholder=None,
                confirm="Quit",
            ),
            done,
        )

    async def _quit_now(self) -> None:
        grace = 5.0
        if self.client.runs_in_flight():  # the operator chose to interrupt them: no reason to wait
            grace = 0.0
            self.dashboard.query_one("#status", Static).update(
                Text("stopping local runs (recorded as interrupted)…", style="yellow")
            )
            await asyncio.sleep(0)  # the line is drawn before the wait
        await self.client.close(grace)
        self._closed = True
        self.exit()

    async def on_unmount(self) -> None:
        if not self._closed:
            await self.client.close()
