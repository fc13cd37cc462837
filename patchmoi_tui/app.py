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
from textual import events, work
from textual._two_way_dict import TwoWayDict
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
from patchmoi.core.history import Query, QueryError, record_time
from patchmoi.core.workspace.adopt import AdoptRefused
from patchmoi.tui.client import Client, chain_id
from patchmoi.tui.rows import TAB_BY_KIND, TABS, Column, TabSpec, cells_for, layout, source_order
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
from patchmoi.tui.textfmt import plural, relative_time, shorten

PAGE = 200
MAX_ROWS = 5000  # rows held per tab: paging further drops the newest ones (`g` brings them back), so memory
# stays bounded and the whole history is still reachable
TRIM = 1000  # rows dropped at a time from the top when paging past MAX_ROWS
WITHOUT_INDEX = ("signals", "events", "dispatches", "runs")  # tabs shown while indexes are built (not attempts:
# their states are derived from every attempt)
WARM_WAIT_SECONDS = 0.3  # an indexed or small store is ready within this: no progress line flashes by
AGE_TICK = 5.0  # seconds between two refreshes of the ages on screen
MUTATING = frozenset({"retry", "replay", "sync", "adopt", "poll_now"})  # refused (and not offered) in read-only mode


@dataclasses.dataclass(frozen=True)
class Note:
    """One message the dashboard showed (what an action did, what failed), newest last in `messages`."""

    at: datetime
    severity: str
    title: str
    message: str


MAX_NOTES = 200
NOTE_STYLE = {"error": "bold red", "warning": "yellow", "information": ""}


RECORD_ACTIONS = frozenset({"retry", "replay", "sync", "adopt"})
"""The footer's actions on a record, which the Sources tab does not have (it offers `p` instead)."""


def appended_on_top(
    fresh: list[dict[str, Any]], before: dict[str, dict[str, Any]], key: Callable[[dict[str, Any]], str]
) -> list[dict[str, Any]] | None:
    """The rows of a newest page that are new, when they all come before the rows already loaded and none of
    those changed (an append-only collection's live tail); None when the table must be drawn again."""
    added: list[dict[str, Any]] = []
    for at, rec in enumerate(fresh):
        old = before.get(key(rec))
        if old is None:
            if len(added) < at:
                return None  # a new row below a known one: not an append on top
            added.append(rec)
        elif old != rec:
            return None  # a loaded record changed (an attempt's new version): draw again
    return added


class PatchmoiApp(App[None]):
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses elsewhere keep the styles
    TITLE = "patchmoi"
    HELP_EXTRA: tuple[tuple[str, str], ...] = ()  # keys a subclass adds, for the help
    BINDINGS = [
        Binding("q", "leave", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("slash", "filter", "Filter"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("ctrl+r", "refresh", "Refresh", show=False),
        Binding("o", "toggle_queue", "Queue/all", show=False),
        Binding("y", "copy_id", "Copy id", show=False),
        Binding("space", "mark", "Mark", show=False),
        Binding("U", "unmark_all", "Unmark all", show=False),
        Binding("w", "toggle_wide", "Wide", show=False),
        Binding("greater_than_sign", "sort", "Sort", show=False),
        Binding("less_than_sign", "reverse_sort", "Reverse", show=False),
        Binding("r", "retry", "Retry"),
        Binding("R", "replay", "Replay"),
        Binding("s", "sync", "Sync"),
        Binding("a", "adopt", "Adopt"),
        Binding("p", "poll_now", "Poll now", show=False),
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
        self.next: dict[str, Any] = {t.kind: None for t in TABS}  # where older rows continue (None: the end)
        self.exhausted: dict[str, bool] = {t.kind: False for t in TABS}
        self.trimmed: dict[str, bool] = {t.kind: False for t in TABS}  # newest rows dropped (paged far down)
        self.newer: dict[str, bool] = {t.kind: False for t in TABS}  # rows arrived while trimmed: `g` shows them
        self.filter_query = Query()  # the `/` filter: searched in the store, not in the loaded rows
        self.searched: dict[str, tuple[int, int | None]] = {}  # per tab while filtered: records read, collection size
        self.limited = False  # the server searched only its newest rows (no /history)
        self.stale: set[str] = set()  # tabs to load when next shown (a new filter: one search at a time)
        self.marks: dict[str, dict[str, dict[str, Any]]] = {t.kind: {} for t in TABS}  # key -> record: kept
        # across reloads and filters, so a bulk action acts on exactly what was marked
        self.sort: dict[str, tuple[str, bool] | None] = {t.kind: None for t in TABS}  # (column, reversed)
        self.wide = False
        self.columns: dict[str, list[tuple[Column, int]]] = {}
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
        self._source_line = False  # the message line shows the highlighted source (the Sources tab's)
        self.tail_stopped = False  # the live tail gave up (a refused token): ctrl+r starts it again
        self.sub_title = client.label + (" (read-only)" if client.read_only else "")
        if client.read_only:  # the keys still explain themselves when pressed, but the footer does not offer them
            bindings = self._bindings.key_to_bindings
            for key, found in bindings.items():
                bindings[key] = [dataclasses.replace(b, show=False) if b.action in MUTATING else b for b in found]
        self._shown = {b.action: b.show for found in self._bindings.key_to_bindings.values() for b in found}

    def footer_for(self, kind: str) -> None:
        """The footer offers what acts on the open tab: on Sources, `p` poll now instead of the record actions."""
        on_sources = kind == "sources"
        bindings = self._bindings.key_to_bindings
        for key, found in bindings.items():
            bindings[key] = [
                dataclasses.replace(b, show=self._shown.get(b.action, b.show) and not on_sources)
                if b.action in RECORD_ACTIONS
                else dataclasses.replace(b, show=on_sources and not self.client.read_only)
                if b.action == "poll_now"
                else b
                for b in found
            ]
        self.refresh_bindings()

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
        self.apply_layout()
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

    def apply_layout(self, width: int | None = None) -> bool:
        """Columns for the terminal's width (fitted, or every column with `w`); the tables whose columns changed
        are drawn again. Whether any changed."""
        width = width or self.size.width or 80
        changed = False
        for spec in TABS:
            wanted = layout(spec, width, wide=self.wide, longest=self.longest(spec) if self.wide else None)
            if self.columns.get(spec.kind) == wanted:
                continue
            changed = True
            self.columns[spec.kind] = wanted
            table = self.table(spec.kind)
            selected = self.selected_key(spec.kind)
            table.clear(columns=True)
            for column, w in wanted:
                table.add_column(column.label, width=w, key=column.label)
            if self.rows[spec.kind]:
                self.render_table(spec.kind, keep=selected)
        return changed

    def longest(self, spec: TabSpec, sample: int = 2000) -> dict[str, int]:
        """Each column's longest value among the newest `sample` loaded rows (what `w` sizes columns to)."""
        out: dict[str, int] = {}
        now = self.clock()
        for rec in self.rows[spec.kind][:sample]:
            for label, value in spec.cells(rec, now).items():
                n = value.cell_len if isinstance(value, Text) else len(str(value if value is not None else ""))
                if n > out.get(label, 0):
                    out[label] = n
        return out

    def on_resize(self, event: events.Resize) -> None:
        with contextlib.suppress(NoMatches):  # (before the tabs are mounted)
            self.apply_layout(event.size.width)  # (the app's own size is updated a moment later)

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
        self.update_status()  # "updated 40s ago" ages too: a server that went quiet shows
        columns = self.columns.get(kind) or []
        if not table.row_count or not columns or columns[0][0].label != "AGE":
            return
        first = max(0, int(table.scroll_y))
        last = min(table.row_count, first + max(1, table.size.height))
        keys = [table.coordinate_to_cell_key(Coordinate(i, 0)).row_key for i in range(first, last)]
        wanted = {k.value for k in keys}
        records = {key: r for r in self.rows[kind] if (key := spec.key(r)) in wanted}
        now = self.clock()
        marks = self.marks[kind]
        for row_key in keys:
            rec = records.get(str(row_key.value))
            if rec is not None:
                cell = cells_for(spec, rec, now, columns[:1], marked=row_key.value in marks)[0]
                with contextlib.suppress(Exception):  # a row a reload just replaced: the next tick has it
                    table.update_cell(row_key, "AGE", cell)

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

    def filtered(self, kind: str) -> bool:
        """Whether this tab's rows come from a store search (a filter on a paged list)."""
        return self.filter_query.active and kind != "sources" and not (kind == "attempts" and self.queue_view)

    async def reload(self, kind: str) -> None:
        """Fetch the newest page and merge it over what is loaded (new rows on top, changed rows updated). With a
        filter, the first load of a tab searches the store (every record, not the loaded rows); later reloads
        (the live tail) take the newest page and keep what matches."""
        if self.filter_query.active and kind != self.active_kind and kind != "sources" and not self.rows[kind]:
            self.stale.add(kind)  # searched when shown: one search at a time
            return
        self.stale.discard(kind)
        if self.trimmed[kind]:  # paged far down (the newest rows were dropped): the view stays where it is
            self.newer[kind] = True
            self.update_status()
            return
        queue = kind == "attempts" and self.queue_view
        first = not self.rows[kind]
        try:
            if self.filtered(kind) and first:
                found = await self.client.search(kind, self.filter_query.text, limit=PAGE)
                fresh, self.next[kind] = found["records"], found["next"]
                self.searched[kind] = (found["scanned"], found.get("size"))
                self.limited = bool(found.get("limited"))
            else:
                fresh = await (self.client.queue() if queue else self.client.rows(kind, PAGE))
                if first and not queue and kind != "sources":
                    self.next[kind] = fresh[-1].get("_cursor") if len(fresh) >= PAGE else None
                if self.filtered(kind):
                    fresh = [r for r in fresh if self.filter_query.matches(r, kind)]
        except PatchmoiError as exc:
            self.last_error = str(exc)
            self.update_status()
            return
        spec = TAB_BY_KIND[kind]
        if kind == "sources":  # the whole list each time, the ones that need a look first
            fresh = sorted(fresh, key=source_order)
        if kind == "sources" or queue:  # whole lists: what left them is gone, not older
            self.rows[kind] = []
            self.next[kind] = None
        keys = {spec.key(r) for r in fresh}
        before = {spec.key(r): r for r in self.rows[kind]}
        # every loaded row the newest page does not have, by key: N new rows push N rows off the page, not out
        older = [r for r in self.rows[kind] if spec.key(r) not in keys]
        self.rows[kind] = fresh + older
        self.exhausted[kind] = self.next[kind] is None
        self.last_refresh = self.clock()
        added = appended_on_top(fresh, before, spec.key) if before and self.sort[kind] is None else None
        if added is not None:
            self.prepend_rows(kind, added)  # the live tail's usual case: a few rows above, nothing else changed
        else:
            self.render_table(kind)
        if kind == "attempts":
            await self.refresh_queue()
        if first and self.filtered(kind) and not self.exhausted[kind]:
            self.seek(kind)  # a rare match: keep searching older records in the background

    @work(group="seek", exclusive=True, exit_on_error=False)
    async def seek(self, kind: str) -> None:
        """Search on until a page of matches is loaded or the history ends, a step (a fraction of a second) at a
        time, the status line counting; a new filter or another tab's search cancels it."""
        query = self.filter_query
        while self.filter_query is query and not self.exhausted[kind] and len(self.rows[kind]) < PAGE:
            await self.load_older(kind)
            self.update_status()

    async def load_older(self, kind: str) -> None:
        """The next page of older rows (or of search matches) below the loaded ones. Past MAX_ROWS the newest
        rows are dropped from the top (`g` loads the newest again), so there is no end but the history's."""
        rows = self.rows[kind]
        before = self.next[kind]
        if before is None or not rows:
            self.exhausted[kind] = True
            return
        try:
            if self.filtered(kind):
                found = await self.client.search(kind, self.filter_query.text, before=before, limit=PAGE)
                older, self.next[kind] = found["records"], found["next"]
                scanned, size = self.searched.get(kind, (0, None))
                self.searched[kind] = (scanned + found["scanned"], found.get("size", size))
            else:
                older = await self.client.rows(kind, PAGE, before=before)
                self.next[kind] = older[-1].get("_cursor") if len(older) >= PAGE else None
        except PatchmoiError as exc:
            self.last_error = str(exc)
            self.update_status()
            return
        if self.rows[kind] is not rows:  # reloaded meanwhile (a new filter): this page belongs to the old list
            return
        self.exhausted[kind] = self.next[kind] is None
        spec = TAB_BY_KIND[kind]
        known = {spec.key(r) for r in rows}
        added = [r for r in older if spec.key(r) not in known]
        rows.extend(added)
        if self.sort[kind] is not None:
            self.render_table(kind)
        else:
            table = self.table(kind)
            now, columns, marks = self.clock(), self.columns[kind], self.marks[kind]
            words = self.filter_query.highlights()
            for rec in added:
                key = spec.key(rec)
                if self.filter_query.matches(rec, kind if kind != "sources" else None):
                    table.add_row(*cells_for(spec, rec, now, columns, marked=key in marks, highlight=words), key=key)
        if len(rows) > MAX_ROWS:
            self.trim(kind)

    def trim(self, kind: str) -> None:
        """Drop the newest TRIM rows (the cursor is far below them) to keep memory bounded."""
        selected = self.selected_key(kind)
        self.rows[kind] = self.rows[kind][TRIM:]
        self.trimmed[kind] = True
        # drawn again, not row by row: DataTable.remove_row re-indexes every row below, 1,000 of them took 7.6 s
        self.render_table(kind, keep=selected)
        self.update_status()

    def selected_key(self, kind: str) -> str | None:
        table = self.table(kind)
        if not table.row_count:
            return None
        try:
            value = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # a stale coordinate
            return None
        return None if value is None else str(value)

    def ordered(self, kind: str) -> list[dict[str, Any]]:
        """The loaded rows in the tab's sort order (newest first unless `>` chose a column)."""
        rows = self.rows[kind]
        chosen = self.sort[kind]
        if chosen is None:
            return rows
        label, reverse = chosen
        spec = TAB_BY_KIND[kind]
        epoch = datetime.min.replace(tzinfo=UTC)

        def key(rec: dict[str, Any]) -> Any:
            if label == "AGE":
                return record_time(kind, rec) or epoch
            value = spec.cells(rec, None).get(label, "")
            return (value.plain if isinstance(value, Text) else str(value or "")).lower()

        return sorted(rows, key=key, reverse=reverse if label != "AGE" else not reverse)  # AGE: newest first

    def render_table(self, kind: str, *, keep: str | None = None) -> None:
        """Rows again, the cursor still on its record (by key) when rows arrive above it: a key pressed now acts
        on what the operator was looking at. Follow mode moves it only when it was on the newest row."""
        spec: TabSpec = TAB_BY_KIND[kind]
        table = self.table(kind)
        selected, at = keep, 0
        if table.row_count:
            at = table.cursor_row
            selected = self.selected_key(kind)
        # follow only when the operator put the cursor on the newest row (g, f, moving up to it), not when the
        # record under it moved to the top by itself (an attempt that got a newer record)
        on_newest = at == 0 and self._pinned.get(kind, True) and keep is None
        table.clear()
        now, columns, marks, words = self.clock(), self.columns[kind], self.marks[kind], self.filter_query.highlights()
        seen: set[str] = set()
        where = kind if kind != "sources" else None
        for rec in self.ordered(kind):
            key = spec.key(rec)
            if key in seen or not self.filter_query.matches(rec, where):
                continue
            seen.add(key)
            table.add_row(*cells_for(spec, rec, now, columns, marked=key in marks, highlight=words), key=key)
        if self.follow and on_newest:
            table.move_cursor(row=0)
        elif selected is not None and selected in seen:
            table.move_cursor(row=table.get_row_index(selected))
        else:  # its record is gone (filtered out): the row that took its place
            table.move_cursor(row=min(at, max(0, table.row_count - 1)))
        if table.row_count:  # where the program put the cursor: its highlight is not the operator's move
            self._placed[kind] = self.selected_key(kind)

    def prepend_rows(self, kind: str, added: list[dict[str, Any]]) -> None:
        """New rows above the loaded ones, without drawing those again: DataTable measures every cell of every
        row it is given, so a live append that re-rendered 200 rows kept the loop busy ~50 ms (p95 append-to-row
        160 ms on a 1M store); this measures only the new rows. The cursor keeps its record, as in render_table."""
        spec, table = TAB_BY_KIND[kind], self.table(kind)
        where = kind if kind != "sources" else None
        shown = [r for r in added if self.filter_query.matches(r, where) and spec.key(r) not in table.rows]
        if not shown:
            return
        if not table.row_count:
            self.render_table(kind)
            return
        at, selected = table.cursor_row, self.selected_key(kind)
        on_newest = at == 0 and self._pinned.get(kind, True)
        existing = [row.key for row in table.ordered_rows]
        now, columns, marks, words = self.clock(), self.columns[kind], self.marks[kind], self.filter_query.highlights()
        new_keys = []
        for rec in shown:
            key = spec.key(rec)
            cells = cells_for(spec, rec, now, columns, marked=key in marks, highlight=words)
            new_keys.append(table.add_row(*cells, key=key))
        # the new rows go on top: the order DataTable.sort would set, set directly (textual is pinned exactly)
        table._row_locations = TwoWayDict({key: i for i, key in enumerate([*new_keys, *existing])})
        table._update_count += 1
        table.refresh()
        if self.follow and on_newest:
            table.move_cursor(row=0)
        elif selected is not None:
            table.move_cursor(row=table.get_row_index(selected))
        self._placed[kind] = self.selected_key(kind)

    def selected(self, kind: str | None = None) -> dict[str, Any] | None:
        kind = kind or self.active_kind
        key = self.selected_key(kind)
        if key is None:
            return None
        spec = TAB_BY_KIND[kind]
        return next((r for r in self.rows[kind] if spec.key(r) == key), None)

    # -- live tail ---------------------------------------------------------------------------------------
    @work(exclusive=True, group="tail", exit_on_error=False)
    async def tail(self) -> None:
        try:
            async for kinds in self.client.changes():
                for kind in kinds:
                    await self.reload(kind)
                if kinds and self.client.connection() is None and self.last_error and "cannot reach" in self.last_error:
                    self.last_error = None  # the server answers again
                self.update_status()
        except PatchmoiError as exc:  # a refused token: waiting will not help; ctrl+r tries again
            if self.client.connection() is None:  # (a remote client says it there already)
                self.last_error = f"live updates stopped: {exc}"
            self.tail_stopped = True
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
            self._source_line = False
            if isinstance(self.screen, DetailScreen):  # the outcome of an action key pressed there, there
                self.screen.show_message(f"{title}: {message}" if title else message, note.severity)

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
        # what this tab shows first (it is what the operator just asked for), then the rest, most urgent first:
        # at 80 columns the end of the line is cut
        kind = self.active_kind
        if self.filter_query.active:
            parts.append(Text(f"filter {self.filter_query.text}", style="bold"))
            parts.append(self.match_count(kind))
        if self.marks[kind]:
            parts.append(Text(f"{len(self.marks[kind])} marked", style="bold magenta"))
        if self.sort[kind] is not None:
            label, reverse = self.sort[kind]  # type: ignore[misc]
            parts.append(f"sort {label}{' reversed' if reverse else ''} (loaded rows)")
        if self.newer[kind]:
            parts.append(Text("newer rows arrived · g: go to them", style="bold cyan"))
        elif self.trimmed[kind]:
            parts.append(Text("paged far back: g for the newest", style="cyan"))
        if self.queue_view and kind == "attempts" and not self.rows["attempts"]:
            parts.append(Text("queue empty: nothing waits for you · o: every attempt", style="green"))
        if self.last_error:
            parts.append(Text(f"error: {self.last_error}", style="red"))
        if self.open_queue is not None:
            count, more = self.open_queue
            label = f"{count}{'+' if more else ''} open"
            parts.append(Text(f"! {label}", style="bold yellow") if count else Text(label, style="bright_black"))
        if sources:  # which ones, and their errors in full: tab 6
            style = "red" if failing else "green"
            parts.append(
                Text(
                    f"● {plural(len(sources), 'source')}" + (f", {len(failing)} failing (6)" if failing else ""),
                    style=style,
                )
            )
        else:
            parts.append(Text("○ no sources polled", style="bright_black"))
        if h.get("dispatchQueueDepth") is not None:
            parts.append(f"queue {h['dispatchQueueDepth']}")
        if h.get("localRunsInFlight"):
            parts.append(f"runs {h['localRunsInFlight']}")
        store = h.get("store") or {}
        if store.get("skippedLines") or store.get("quarantinedBytes"):
            parts.append(Text(f"store: {store.get('skippedLines', 0)} bad lines", style="yellow"))
        parts.append("follow on" if self.follow else Text("follow off", style="yellow"))
        if self.last_refresh is not None:
            seconds = (self.clock() - self.last_refresh).total_seconds()
            parts.append(
                f"updated {relative_time(self.last_refresh.isoformat(), self.clock())}"
                if seconds >= 1
                else "updated now"
            )
        line = Text(" · ").join(p if isinstance(p, Text) else Text(p) for p in parts)
        self.dashboard.query_one("#status", Static).update(line)

    def match_count(self, kind: str) -> Text:
        """`37 matches` when the search has read the whole history, `37+ matches · 120,000 of 1,000,000 read`
        while it goes on (or stopped with a screenful); a tab whose search starts when shown says so."""
        if kind in self.stale:
            return Text("searched when shown", style="bright_black")
        shown = self.table(kind).row_count
        noun = "match" if shown == 1 else "matches"
        if self.filtered(kind) and self.limited:
            return Text(f"{shown} {noun} in the newest 500 (this server cannot search history)", style="yellow")
        if not self.filtered(kind) or self.exhausted[kind]:
            return Text(f"{shown} {noun}", style="bold" if shown else "yellow")
        scanned, size = self.searched.get(kind, (0, None))
        read = f"{scanned:,} of {size:,} read" if size else f"{scanned:,} read"
        return Text(f"{shown}+ {noun} · {read} · G: search on", style="bold")

    # -- actions -----------------------------------------------------------------------------------------
    def action_tab(self, kind: str) -> None:
        self.dashboard.query_one(TabbedContent).active = f"tab-{kind}"
        self.table(kind).focus()

    async def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # (the first activation comes while the tabs are still being mounted: nothing to focus or say yet)
        with contextlib.suppress(NoMatches):
            kind = self.active_kind
            self.table(kind).focus()
            self.update_status()  # (what it says can depend on the tab: an empty queue)
            if kind == "sources":
                self.describe_source()
            elif self._source_line:  # a source's description is the Sources tab's: not under another tab
                self.dashboard.query_one("#message", Static).update("")
                self._source_line = False
            self.footer_for(kind)
            self.tick_ages()  # its ages were last computed when it was shown
            if kind in self.stale:  # a filter set on another tab: its search starts now
                await self.reload(kind)
                self.update_status()

    async def action_cursor(self, where: str) -> None:
        table = self.table(self.active_kind)
        if where == "down":
            table.action_cursor_down()
        elif where == "up":
            table.action_cursor_up()
        elif where == "top":
            kind = self.active_kind
            if self.trimmed[kind]:  # paged far back: the newest rows again
                self.reset(kind)
                self._pinned[kind] = True
                await self.reload(kind)
            table.move_cursor(row=0)
        else:
            await self.load_older(self.active_kind)
            table.move_cursor(row=max(0, table.row_count - 1))

    async def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        table = event.data_table
        if table.id and event.row_key.value != self._placed.pop(table.id, None):
            self._pinned[table.id] = event.cursor_row == 0  # the operator moved: on the top row, or not
        if table.id == "sources" and self.active_kind == "sources" and self.screen is self.dashboard:
            self.describe_source()  # (not when a reload moved the cursor of a tab in the background)
        if table.id and table.row_count and event.cursor_row >= table.row_count - 5:
            await self.load_older(table.id)  # rows load on demand as the cursor nears the end

    def describe_source(self) -> None:
        """The highlighted source in full on the message line (its error is cut in the table at 80 columns)."""
        record = self.selected("sources")
        if record is None:
            return
        now = self.clock()
        line = Text(f"{record.get('sourceId')}", style="bold")
        polled = record.get("lastPolledAt") or record.get("lastCheckedAt")
        facts = [
            f"every {record['intervalSeconds']:g}s" if record.get("intervalSeconds") else "",
            f"polled {relative_time(polled, now)}" if polled else "never polled",
            "ETag kept" if record.get("etag") else "",
            plural(int(record["consecutiveErrors"]), "error") + " in a row" if record.get("consecutiveErrors") else "",
        ]
        line.append(" · " + " · ".join(f for f in facts if f), style="bright_black")
        if record.get("lastError"):
            line.append(f" · {record['lastError']}", style="red")
        self.dashboard.query_one("#message", Static).update(line)
        self._source_line = True

    async def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        kind = event.data_table.id or self.active_kind
        record = self.selected(kind)
        if record is None:
            return
        if kind == "sources":  # a source's detail is what it brought: its signals, newest first
            self.action_tab("signals")
            await self.set_query(Query.parse(f"source:{record.get('sourceId')}"))
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
        """ctrl+r: every list and the health, now (and the live tail again, if a refused token stopped it)."""
        if self.tail_stopped:
            self.tail_stopped = False
            self.tail()
        await self.load_all()
        self.update_status()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        if self.follow:
            self.table(self.active_kind).move_cursor(row=0)
        self.notify(f"follow {'on: newest rows stay in view' if self.follow else 'off'}")
        self.update_status()

    def action_filter(self) -> None:
        async def apply(value: str | None) -> None:
            if value is None:
                return
            try:
                query = Query.parse(value, now=self.clock())
            except QueryError as exc:
                self.notify(str(exc), title="filter", severity="error")
                return
            await self.set_query(query)

        self.push_screen(FilterScreen(self.filter_query.text), apply)

    def reset(self, kind: str) -> None:
        """Forget a tab's loaded rows (a new filter, or back to the newest after paging far)."""
        self.rows[kind], self.next[kind] = [], None
        self.exhausted[kind] = self.trimmed[kind] = self.newer[kind] = False
        self.searched.pop(kind, None)

    async def set_query(self, query: Query) -> None:
        """A new filter: the open tab searches the store now (every record, newest first), the others when
        shown; the sources and the queue (whole lists) are filtered as they are."""
        self.filter_query = query
        self.workers.cancel_group(self, "seek")
        for spec in TABS:
            if spec.kind == "sources" or (spec.kind == "attempts" and self.queue_view):
                self.render_table(spec.kind)
                continue
            self.reset(spec.kind)
            self._pinned[spec.kind] = True
            self.render_table(spec.kind)  # (empty until its search answers: no stale rows under a new filter)
            await self.reload(spec.kind)
        self.update_status()

    def action_mark(self) -> None:
        """space: mark or unmark the row (then the next row), for a bulk retry, replay or sync."""
        kind = self.active_kind
        record, key = self.selected(kind), self.selected_key(kind)
        if record is None or key is None or kind == "sources":
            return
        marks = self.marks[kind]
        if key in marks:
            del marks[key]
        else:
            marks[key] = record
        spec, columns = TAB_BY_KIND[kind], self.columns[kind]
        cell = cells_for(spec, record, self.clock(), columns[:1], marked=key in marks)[0]
        table = self.table(kind)
        with contextlib.suppress(Exception):
            table.update_cell(key, columns[0][0].label, cell)
        table.action_cursor_down()
        self.update_status()

    def action_unmark_all(self) -> None:
        kind = self.active_kind
        if self.marks[kind]:
            self.marks[kind] = {}
            self.render_table(kind)
            self.notify("marks cleared")
        self.update_status()

    def action_toggle_wide(self) -> None:
        """w: every column at full width (ids in full; scroll right), or columns fitted to the terminal."""
        self.wide = not self.wide
        self.apply_layout()
        self.notify("wide: every column, full ids (scroll right)" if self.wide else "columns fitted to the terminal")

    def action_sort(self) -> None:
        """>: sort the loaded rows by the next column (AGE, then each column left to right, then as stored)."""
        kind = self.active_kind
        labels = [column.label for column, _ in self.columns[kind]]
        current = self.sort[kind]
        at = labels.index(current[0]) + 1 if current and current[0] in labels else 0
        self.sort[kind] = (labels[at], False) if at < len(labels) else None
        self.render_table(kind)
        self.update_status()

    def action_reverse_sort(self) -> None:
        """<: the other way round."""
        kind = self.active_kind
        current = self.sort[kind] or ("AGE", False)
        self.sort[kind] = (current[0], not current[1])
        self.render_table(kind)
        self.update_status()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.HELP_EXTRA))

    def action_messages(self) -> None:
        log = Text()
        for note in reversed(self.messages):
            log.append(note.at.astimezone().strftime("%H:%M:%S "), style="bright_black")
            log.append(f"{note.title}: " if note.title else "", style="bold")
            log.append(note.message + "\n", style=NOTE_STYLE.get(note.severity, ""))
        self.push_screen(TextScreen("Messages", log if self.messages else Text("nothing yet")))

    async def _event_id_of(self, kind: str, record: dict[str, Any]) -> str | None:
        if kind == "events":
            return str(record.get("id"))
        if record.get("eventId"):
            return str(record["eventId"])
        chain = await self.client.describe(kind, record)
        event = chain.get("event")
        return str(event["id"]) if event else None

    async def _attempt_id_of(self, kind: str, record: dict[str, Any]) -> str | None:
        if kind == "attempts":
            return str(record.get("id"))
        chain = await self.client.describe(kind, record)
        attempts = chain.get("attempts") or []
        return str(attempts[0]["id"]) if attempts else None

    def targets(self) -> tuple[str, list[dict[str, Any]], bool]:
        """What an action key acts on: the detail view's record, else the marked rows of the tab (marked:
        True), else its selected row."""
        screen = self.screen
        if isinstance(screen, DetailScreen) and screen.record is not None:
            return screen.kind, [screen.record], False
        kind = self.active_kind
        if self.marks[kind]:
            return kind, list(self.marks[kind].values()), True
        record = self.selected(kind)
        return kind, [record] if record is not None else [], False

    async def _confirm_bulk(self, op: str) -> None:
        """retry / replay / sync on the selected row, or on every marked row after one confirmation."""
        if self.client.read_only:
            self.notify(f"read-only mode: {op} is disabled", severity="warning")
            return
        if not isinstance(self.screen, DetailScreen) and self.screen is not self.dashboard:
            return  # a dialog is open
        kind, records, marked = self.targets()
        resolve = self._attempt_id_of if op == "sync" else self._event_id_of
        try:
            found = [ident for rec in records if (ident := await resolve(kind, rec))]
        except PatchmoiError as exc:
            self.notify(f"{op}: {exc}", severity="error")
            return
        idents = list(dict.fromkeys(found))  # two marked attempts of one event: the event once
        what = "maintenance attempt" if op == "sync" else "flow event"
        if not idents:
            hint = "select an attempt (tab 3) to sync" if op == "sync" else f"select a row with a flow event to {op}"
            self.notify(hint, severity="warning")
            return
        explain = {
            "retry": "Re-sends the same event to the same backend; a backend that already has it answers duplicate.",
            "replay": "Asks the backend (or the local runner) for new runs of this event.",
            "sync": "Re-reads its runs and records the outcome if it changed.",
        }[op]
        if len(idents) == 1 and not marked:
            body = f"{op.capitalize()} {what}\n{idents[0]}\n\n{explain}"
        else:
            shown = "\n".join(f"  {shorten(i, 68)}" for i in idents[:6])
            more = f"\n  … and {len(idents) - 6} more" if len(idents) > 6 else ""
            body = f"{op.capitalize()} {len(idents)} marked {what}s, one after the other:\n{shown}{more}\n\n{explain}"

        def done(reason: str | None) -> None:
            if reason is None:
                return
            if len(idents) == 1 and not marked:
                self.run_action_worker(op, idents[0], reason or None)
            else:
                self.run_bulk(op, kind, idents, reason or None)

        placeholder = None if op == "sync" else "reason (optional, recorded with the dispatch)"
        title = f"{op.capitalize()}?" if len(idents) == 1 and not marked else f"{op.capitalize()} {len(idents)}?"
        self.push_screen(ConfirmScreen(title, body, placeholder=placeholder), done)

    async def _act(self, op: str, ident: str, reason: str | None) -> dict[str, Any]:
        if op == "retry":
            return await self.client.retry(ident, reason)
        if op == "replay":
            return await self.client.replay(ident, reason)
        return await self.client.sync(ident)

    @work(group="actions", exit_on_error=False)
    async def run_bulk(self, op: str, kind: str, idents: list[str], reason: str | None) -> None:
        """One after the other (a backend is not flooded); a failure is counted and the rest go on; the marks
        are cleared when every one went through."""
        outcomes: dict[str, int] = {}
        failures: list[str] = []
        for n, ident in enumerate(idents, 1):
            self.notify(f"{op} {n}/{len(idents)}: {shorten(ident, 60)}", title=op)
            try:
                result = await self._act(op, ident, reason)
            except Exception as exc:  # every kind of failure is reported, and the others still run
                failures.append(f"{shorten(ident, 40)}: {exc}")
                continue
            status = str(((result.get("attempt") if op == "sync" else result.get("record")) or {}).get("status"))
            outcomes[status] = outcomes.get(status, 0) + 1
        summary = ", ".join(f"{count} {status}" for status, count in sorted(outcomes.items()))
        if failures:
            self.notify(
                f"{op}: {summary or 'none done'}; {len(failures)} failed: {'; '.join(failures[:3])}",
                title=op,
                severity="error",
            )
        else:
            self.marks[kind] = {}
            self.render_table(kind)
            self.notify(f"{op} of {len(idents)}: {summary}", title=op)
        self.update_status()

    @work(group="actions", exit_on_error=False)
    async def run_action_worker(self, op: str, ident: str, reason: str | None) -> None:
        try:
            result = await self._act(op, ident, reason)
        except PatchmoiError as exc:
            self.notify(f"{op} failed: {exc}", severity="error", timeout=10)
            return
        except Exception as exc:
            self.notify(f"{op} failed: {type(exc).__name__}: {exc}", severity="error", timeout=10)
            return
        record = result.get("record") or {}
        attempt = result.get("attempt") or {}
        if op == "sync":
            self.notify(f"attempt is {attempt.get('status')}", title="sync")
        elif record.get("status") == "failed":
            self.notify(f"{op}: dispatch failed: {record.get('error')}", severity="error", timeout=10)
        elif record.get("status") == "skipped":
            self.notify(f"{op}: skipped: {record.get('error')}", severity="warning", timeout=10)
        else:
            self.notify(
                f"{record.get('status')} via {record.get('transport')}; attempt {attempt.get('status')}", title=op
            )
        await self.refresh_detail()

    async def refresh_detail(self) -> None:
        """The detail view on screen, drawn again from a fresh chain (after an action changed it)."""
        screen = self.screen
        if isinstance(screen, DetailScreen) and screen.record is not None:
            with contextlib.suppress(PatchmoiError):  # if not, the message line has said what happened
                screen.show(await self.client.describe(screen.kind, screen.record))

    async def action_poll_now(self) -> None:
        """`p` on the Sources tab: poll the selected source now (no dialog: it is what its schedule does next).
        A local dashboard polls it under the poller lease (refused while a `serve` polls this DATA_DIR: use
        `--url`); a remote one asks the server, whose poller does it."""
        if self.client.read_only:
            self.notify("read-only mode: poll now is disabled", severity="warning")
            return
        if self.screen is not self.dashboard:
            return
        record = self.selected("sources") if self.active_kind == "sources" else None
        if record is None or not record.get("sourceId"):
            self.notify("p polls a feed source now: select one on tab 6 (Sources)", severity="warning")
            return
        self.run_poll_now(str(record["sourceId"]))

    @work(group="actions", exit_on_error=False)
    async def run_poll_now(self, source_id: str) -> None:
        self.notify(f"polling {source_id}…", title="p")
        try:
            result = await self.client.poll_source(source_id)
        except PatchmoiError as exc:
            self.notify(f"poll {source_id}: {exc}", severity="error", timeout=10)
            return
        except Exception as exc:  # a fetch that broke in a way of its own: said, never a crash of the dashboard
            self.notify(f"poll {source_id}: {type(exc).__name__}: {exc}", severity="error", timeout=10)
            return
        found = int(result.get("newEntries") or 0)
        events = len(result.get("events") or [])
        said = f"{found} new entr{'y' if found == 1 else 'ies'}"
        if events:
            said += f", {events} flow event{'' if events == 1 else 's'}"
        if result.get("error"):
            self.notify(f"poll {source_id}: {result.get('status')}: {result['error']}", severity="error", timeout=10)
        else:
            nxt = f"; next poll {result['nextDueAt']}" if result.get("nextDueAt") else ""
            self.notify(f"poll {source_id}: {result.get('status')}, {said}{nxt}", title="p")
        await self.refresh_health()

    async def action_retry(self) -> None:
        await self._confirm_bulk("retry")

    async def action_replay(self) -> None:
        await self._confirm_bulk("replay")

    async def action_sync(self) -> None:
        await self._confirm_bulk("sync")

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
        await self.refresh_detail()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        actions: list[tuple[str, str, Callable[[], Any]]] = [
            ("Retry selected event", "re-dispatch to the same backend", self.action_retry),
            ("Replay selected event", "new runs for the event", self.action_replay),
            ("Sync selected attempt", "refresh from its runs", self.action_sync),
            ("Adopt selected attempt", "move main and the patch branches to its candidate", self.action_adopt),
            ("Poll source now", "tab 6: fetch the selected feed source now", self.action_poll_now),
            ("Filter rows", "repo: status: state: type: source: since: until: or text", self.action_filter),
            ("Toggle follow", "keep the newest rows in view", self.action_toggle_follow),
            ("Queue or every attempt", "tab 3: the open queue, or the whole history", self.action_toggle_queue),
            ("Mark row", "mark for a bulk retry, replay or sync", self.action_mark),
            ("Unmark all", "clear this tab's marks", self.action_unmark_all),
            ("Wide or fitted columns", "every column in full, or fitted to the terminal", self.action_toggle_wide),
            ("Sort by next column", "the loaded rows; again for the next column", self.action_sort),
            ("Reverse sort", "the same column, the other way", self.action_reverse_sort),
            ("Copy id", "the selected record's id (OSC 52)", self.action_copy_id),
            ("Refresh now", "every list and the health", self.action_refresh),
            ("Show keys", "every key binding", self.action_help),
            ("Messages", "what the dashboard said, newest first", self.action_messages),
        ]
        for spec in TABS:
            actions.append((f"Go to {spec.title}", f"tab {spec.kind}", lambda kind=spec.kind: self.action_tab(kind)))  # type: ignore[misc]
        if self.client.read_only:  # read-only refuses these: do not offer them
            acting = (self.action_retry, self.action_replay, self.action_sync, self.action_adopt, self.action_poll_now)
            actions = [a for a in actions if a[2] not in acting]
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
