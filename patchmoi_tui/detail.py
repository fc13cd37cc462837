"""The detail view of one record: the record opened first and expanded, the rest of its chain after it.

`build_document` turns a chain (client.describe: the signal, flow event, dispatches, attempts and runs around one
record) into blocks of text: the opened record's block first (an attempt with its runs, a run, an event, ...),
then the rest in chain order. `layout` wraps them to a width on spaces only (a path or a sha is never cut; a
token wider than the screen stays whole and the view scrolls sideways), and says on which line each block, and
each failing command, starts: the places `]` and `[` jump to. A failing command's output is kept whole, its
CONFLICT lines highlighted; a successful one shows its first lines. `p`, `e` and `!` hand the terminal to a
pager, an editor or a shell (App.suspend), and come back.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.containers import Horizontal, ScrollableContainer
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from patchmoi.core.adopt import review_reason
from patchmoi.core.errors import PatchmoiError
from patchmoi.core.shortid import short_id
from patchmoi.tui.client import chain_id
from patchmoi.tui.rows import state_text, status_text, upstream_label

# -- what was opened --------------------------------------------------------------------------------------------
TAB_FOCUS = {"signals": "signal", "events": "event", "dispatches": "dispatch", "attempts": "attempt", "runs": "run"}
FOCUS_TAB = {v: k for k, v in TAB_FOCUS.items()}
SUCCESS_LINES = 3  # output lines of a command that succeeded (a failing one shows all of it)
RANGE_DIFF_LINES = 40  # of a range-diff in the view (the pager has all of it)
FAILED = frozenset({"failed", "needs_intervention", "blocked"})
CRUMB = " \N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK} "  # between the breadcrumb's steps


def pick_attempt(chain: dict[str, Any], kind: str, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The attempt a chain is about: the attempt row it was opened on (its fresher copy in the chain), else
    the newest attempt waiting for adoption, else the newest attempt."""
    attempts = [a for a in chain.get("attempts") or [] if isinstance(a, dict)]
    if kind == "attempts" and record is not None:
        wanted = str(record.get("id"))
        return next((a for a in attempts if str(a.get("id")) == wanted), record)
    return next((a for a in attempts if a.get("state") == "ready"), attempts[0] if attempts else None)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [x for x in value or [] if isinstance(x, dict)] if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def artifacts_of(run: Mapping[str, Any]) -> dict[str, Any]:
    return _dict(_dict(run.get("resultPayload")).get("artifacts"))


@dataclass(frozen=True)
class Focus:
    """The record the view was opened on: `kind` is signal, event, dispatch, attempt or run; `record` its freshest
    copy in the chain; `id` what `y` copies and the CLI takes (a dispatch's: its event's)."""

    kind: str
    record: dict[str, Any]
    id: str


def find_focus(chain: Mapping[str, Any], kind: str, record: Mapping[str, Any] | None) -> Focus:
    """The opened record from the dashboard row (`kind` a tab, `record` its row), or from the chain's own
    `kind`/`id` when there is no row."""
    fkind = TAB_FOCUS.get(kind) or str(chain.get("kind") or "event")
    if fkind not in FOCUS_TAB:
        fkind = "event"
    rec: dict[str, Any] = dict(record) if record else _dict(chain.get(fkind))
    if fkind == "event" and not rec:
        rec = _dict(chain.get("event"))
    if fkind == "attempt":
        wanted = str(rec.get("id") or chain.get("id"))
        fresher = [a for a in [_dict(chain.get("attempt")), *_dicts(chain.get("attempts"))] if a.get("id") == wanted]
        rec = fresher[0] if fresher else rec
    elif fkind == "run":
        wanted = str(rec.get("id") or chain.get("id"))
        fresher = [r for r in [_dict(chain.get("run")), *_dicts(chain.get("runs"))] if r.get("id") == wanted]
        rec = fresher[0] if fresher else rec
    elif fkind == "event" and chain.get("event"):
        rec = _dict(chain.get("event"))
    elif fkind == "signal" and chain.get("signal"):
        rec = _dict(chain.get("signal"))
    elif fkind == "dispatch":
        same = [
            d
            for d in _dicts(chain.get("dispatches"))
            if d.get("createdAt") == rec.get("createdAt") and d.get("operation") == rec.get("operation")
        ]
        rec = same[0] if same else rec
    ident = (chain_id(FOCUS_TAB[fkind], rec) if rec else "") or str(chain.get("id") or "")
    return Focus(fkind, rec, ident)


def attempt_of_run(chain: Mapping[str, Any], run_id: str) -> dict[str, Any] | None:
    return next(
        (a for a in _dicts(chain.get("attempts")) if run_id in [str(r) for r in a.get("workspaceRunIds") or []]),
        None,
    )


def runs_of_attempt(chain: Mapping[str, Any], attempt: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The attempt's runs in the chain, newest first."""
    runs = {str(r.get("id")): r for r in _dicts(chain.get("runs"))}
    wanted = [str(r) for r in attempt.get("workspaceRunIds") or []]
    return [runs[r] for r in reversed(wanted) if r in runs]


def attempt_numbers(attempts: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Each attempt's place among its event's attempts, oldest first: (n, of)."""
    order = sorted(range(len(attempts)), key=lambda i: (str(attempts[i].get("createdAt") or ""), -i))
    return {str(attempts[i].get("id")): (n + 1, len(attempts)) for n, i in enumerate(order)}


# -- text helpers -----------------------------------------------------------------------------------------------
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean(text: Any) -> str:
    """Text from a command, safe to show: terminal escapes removed, a `\\r`-rewritten line as it ended, tabs
    expanded, other control characters (the NULs of `-z` output) as visible symbols."""
    s = _ESCAPES.sub("", "" if text is None else str(text)).replace("\r\n", "\n")
    lines = [line.rsplit("\r", 1)[-1].expandtabs(4) for line in s.split("\n")]
    return _CONTROL.sub(_visible, "\n".join(lines))


def _visible(m: re.Match[str]) -> str:
    """A control character as its symbol; a NUL (the record separator of `-z` output) with a space after it,
    so what it separates can wrap."""
    c = m.group()
    return "␡" if c == "\x7f" else "␀ " if c == "\x00" else chr(0x2400 + ord(c))


OUTPUT_STYLES = (
    (re.compile(r"^\s*(CONFLICT\b|Merge conflict\b|both (modified|added|deleted):|UU |AA |DU |UD )"), "bold red"),
    (re.compile(r"^\s*(error|fatal)\b:?", re.IGNORECASE), "red"),
    (re.compile(r"^\s*(warning|Recorded preimage|Resolved|Staged)\b", re.IGNORECASE), "yellow"),
    (re.compile(r"^\s*hint:"), "bright_black"),
)


def output_style(line: str, default: str = "") -> str:
    for pattern, style in OUTPUT_STYLES:
        if pattern.match(line):
            return style
    return default


def is_conflict_line(line: str) -> bool:
    return OUTPUT_STYLES[0][0].match(line) is not None


# -- the document -----------------------------------------------------------------------------------------------
@dataclass
class Block:
    """One section of the view: a header line, then body lines (logical: `layout` wraps them). `anchors` are
    places inside the body that `]` and `[` stop at too (a failing command): (body line, title)."""

    key: str
    title: str
    crumb: str
    body: list[Text] = field(default_factory=list)
    opened: bool = False
    anchors: list[tuple[int, str]] = field(default_factory=list)
    unwrapped: set[int] = field(default_factory=set)  # body lines kept on one row (ids: the short one leads)

    def add(self, text: str | Text = "", style: str = "", *, nowrap: bool = False) -> None:
        """Lines of text (a string may hold several), each a body line."""
        t = text if isinstance(text, Text) else Text(text, style=style)
        if nowrap:
            self.unwrapped.add(len(self.body))
        self.body.extend(t.split("\n", allow_blank=True) if "\n" in t.plain else [t])

    def anchor(self, title: str) -> None:
        """The next body line is a place to jump to."""
        self.anchors.append((len(self.body), title))


@dataclass
class Crumb:
    label: str
    key: str | None  # the block it stands for
    opened: bool = False


@dataclass
class Document:
    focus: Focus
    title: Text
    crumbs: list[Crumb]
    blocks: list[Block]


def _ident(t: Text, label: str, value: Any, when: str = "") -> None:
    """`label shortid [when] FULL-ID`, on one row: the short id first (a long id runs past the screen's edge
    (scroll sideways, or `y` copies it): the short one is always seen, and the CLI takes either)."""
    ident = str(value or "")
    t.append(f"  {label} ", style="bright_black")
    if ident:
        t.append(short_id(ident), style="cyan")
        t.append("  ")
    if when:
        t.append(when + "  ", style="bright_black")
    t.append(ident or "-")


def signal_block(signal: dict[str, Any], *, opened: bool) -> Block:
    b = Block("signal", "Upstream signal", "signal", opened=opened)
    repo = _dict(signal.get("repo"))
    t = Text("  ")
    t.append_text(status_text("filtered" if signal.get("filtered") else signal.get("event")))
    t.append(f"  {repo.get('fullName') or '-'}  {signal.get('ref') or str(signal.get('sha') or '')[:12]}  ")
    t.append(str(signal.get("title") or ""), style="bold")
    b.add(t)
    if signal.get("filtered"):
        b.add(f"  filtered: {signal['filtered']}", style="bright_black")
    t = Text()
    _ident(t, "id", f"{signal.get('sourceId')}:{signal.get('entryId')}")
    b.add(t, nowrap=True)
    b.add(f"  published {signal.get('publishedAt') or '-'}  received {signal.get('receivedAt') or '-'}", "bright_black")
    if signal.get("url"):
        b.add(f"  {signal['url']}", style="bright_black")
    return b


def event_block(event: dict[str, Any], *, opened: bool) -> Block:
    b = Block("event", "Flow event", "event", opened=opened)
    b.add(f"  {event.get('type')}  upstream {upstream_label(event)}")
    t = Text()
    _ident(t, "id", event.get("id"))
    b.add(t, nowrap=True)
    b.add(f"  received {event.get('receivedAt')}", style="bright_black")
    return b


def dispatches_block(dispatches: list[dict[str, Any]], opened: dict[str, Any] | None) -> Block:
    title = "Dispatch" if opened is not None else f"Dispatches ({len(dispatches)})"
    b = Block("dispatches", title, "dispatch" if opened is not None else "dispatches", opened=opened is not None)
    if opened is not None:  # the opened one first, marked
        dispatches = [opened, *[d for d in dispatches if d is not opened]]
    for d in dispatches:
        t = Text("▸ " if d is opened else "  ", style="bold")
        t.append_text(status_text(d.get("status")))
        t.append(f"  {d.get('operation')} via {d.get('transport')}  {d.get('createdAt')}")
        if d.get("runIds"):
            t.append(f"  runs {', '.join(map(str, d['runIds']))}", style="bright_black")
        b.add(t)
        if d.get("reason"):
            b.add(f"    reason: {d['reason']}", style="italic")
        if d.get("error"):
            b.add(f"    {d['error']}", style="red")
    return b


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


def span(start: Any, end: Any) -> str:
    """`2026-11-22T15:06:49.641Z → 15:06:49.853Z` (the end's date only when it differs)."""
    a, b = str(start or "-"), str(end or "")
    if not b or b == a:
        return a
    return f"{a} → {b[11:] if a[:11] == b[:11] and len(b) > 11 else b}"


def attempt_block(a: dict[str, Any], number: tuple[int, int] | None, *, opened: bool) -> Block:
    """What the attempt came to (status, state, message, candidate, adoption), then its id and times."""
    label = f"Attempt {number[0]} of {number[1]}" if number else "Attempt"
    b = Block(f"attempt:{a.get('id')}", label, label.lower(), opened=opened)
    t = Text("  ")
    t.append_text(status_text(a.get("status")))
    t.append(f"  {a.get('operation') or 'dispatch'}  {upstream_label(a)}")
    b.add(t)
    if a.get("state"):
        t = Text("  state ")
        t.append_text(state_text(a.get("state")))
        t.append(f"  {STATE_HINTS.get(str(a['state']), '')}", style="bright_black")
        b.add(t)
    if a.get("message"):
        b.add(f"  {clean(a['message'])}")
    if a.get("error") and a.get("error") != a.get("message"):
        b.add(f"  {clean(a['error'])}", style="red")
    for ref in _dicts(a.get("candidateRefs")):
        b.add(
            f"  candidate {ref.get('ref')} {str(ref.get('sha') or '')[:12]}{' (pushed)' if ref.get('pushed') else ''}",
            style="green",
        )
    if a.get("adoptionError"):
        b.add(f"  adoption: {a['adoptionError']}", style="yellow")
    adoption = a.get("adoption")
    if isinstance(adoption, dict):
        t = Text()
        render_adoption(t, adoption)
        t.rstrip()
        b.add(t)
    t = Text()
    _ident(t, "id", a.get("id"), span(a.get("createdAt"), a.get("updatedAt")))
    b.add(t, nowrap=True)
    return b


FATE_STYLES = {"conflict": "bold red", "applied": "green", "dropped": "bright_black", "pending": "bright_black"}


def series_lines(b: Block, artifacts: dict[str, Any]) -> None:
    """The rebuild report: every source commit of every patch and what became of it."""
    series = _dicts(artifacts.get("series"))
    if series:
        b.add("  patches:", style="bold")
    for patch in series:
        for c in _dicts(patch.get("commits")):
            fate = str(c.get("fate") or "?")
            t = Text(f"    {fate:<9} ", style=FATE_STYLES.get(fate, "yellow"))
            rebuilt = f" → {str(c['rebuilt'])[:12]}" if c.get("rebuilt") else ""
            t.append(f"{patch.get('patch')}  {str(c.get('sha') or '')[:12]}{rebuilt}  ")
            t.append(str(c.get("subject") or ""), style="bright_black")
            b.add(t)
    for r in _dicts(artifacts.get("resolved")):
        files = ", ".join(map(str, r.get("files") or []))
        b.add(f"    resolved  {r.get('patch')} ({files}) by {r.get('by')}", style="yellow")
    for r in _dicts(artifacts.get("reused")):
        files = ", ".join(map(str, r.get("files") or []))
        b.add(f"    reused    recorded resolution for {r.get('patch')}: {files}")


def worktree_lines(b: Block, run: dict[str, Any], artifacts: dict[str, Any]) -> None:
    """What conflicts and where to resume, or that there is no worktree (and where the rebuild ran)."""
    unmerged = [str(f) for f in artifacts.get("unmergedFiles") or []]
    if artifacts.get("failedPatch"):
        t = Text("  conflict: ", style="bold red")
        commit = str(artifacts.get("failedCommit") or "")[:12]
        t.append(f"{artifacts['failedPatch']}" + (f" ({commit})" if commit else ""), style="bold")
        if unmerged:
            t.append(f" in {', '.join(unmerged)}", style="bold yellow")
        b.add(t)
    elif unmerged:
        b.add(f"  unmergedFiles: {', '.join(unmerged)}", style="bold yellow")
    if artifacts.get("worktree"):
        b.add(f"  resume in {artifacts['worktree']}", style="bold yellow")
        on = unmerged[0] if unmerged else "the worktree"
        b.add(f"    e: edit {on} · !: shell there · w: copy path · then r: retry", style="bright_black")
    elif artifacts or run.get("workspace"):
        where = artifacts.get("workspace") or run.get("workspace")
        b.add(f"  no worktree kept{f' (the rebuild ran in {where})' if where else ''}", style="bright_black")


def output_lines(b: Block, text: str, *, failed: bool, indent: str = "      ") -> None:
    """A failing command's output whole (its CONFLICT lines bold red); a successful one's first lines."""
    lines = clean(text).strip("\n").splitlines()
    if not failed and len(lines) > SUCCESS_LINES:
        shown, more = lines[:SUCCESS_LINES], len(lines) - SUCCESS_LINES
    else:
        shown, more = lines, 0
    for line in shown:
        b.add(f"{indent}{line}", style=output_style(line, "" if failed else "bright_black"))
    if more:
        b.add(f"{indent}… {more} more line(s): p shows them", style="bright_black italic")


_SHA = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{28}\b")


def shown_command(command: Any) -> str:
    """A logged command as the view shows it: full 40-hex shas as 12 (git takes either; `p` shows them whole)."""
    return _SHA.sub(r"\1", clean(command))


def command_line(b: Block, entry: dict[str, Any], *, note: str = "") -> None:
    code = entry.get("exitCode")
    failed = code != 0
    t = Text(f"  $ {shown_command(entry.get('command'))}", style="bold red" if failed else "bold")
    t.append(f"  → {code}{note}", style="bold red" if failed else "bright_black")
    b.add(t)


def run_block(
    run: dict[str, Any], *, opened: bool, full: bool, skip_message: set[str], attempt: str | None = None
) -> Block:
    """What the run came to: the conflict and where to resume, the failing commands with their whole output,
    then (`full`) the patches' fates, the range-diff and every command it ran; its id and times last."""
    step = f"{run.get('flowName')}/{run.get('stepName')}"
    title = f"Run {step}" + (f" · {attempt}" if attempt else "")
    b = Block(f"run:{run.get('id')}", title, f"run {step}", opened=opened)
    payload = _dict(run.get("resultPayload"))
    artifacts = _dict(payload.get("artifacts"))
    t = Text("  ")
    t.append_text(status_text(run.get("status")))
    t.append(f"  {run.get('runner') or run.get('backend') or ''}", style="bright_black")
    b.add(t)
    message = str(payload.get("message") or "")
    if message and message not in skip_message:
        b.add(f"  {clean(message)}", style="red" if run.get("status") in FAILED else "")
    worktree_lines(b, run, artifacts)
    if artifacts.get("needsReview"):
        b.add(f"  review before adopting: {review_reason(artifacts)}", style="bold yellow")
    if run.get("error"):
        b.add(f"  {clean(run['error'])}", style="red")
    log = _dicts(run.get("log"))
    failing = [e for e in log if e.get("exitCode") != 0]
    if full:
        for entry in failing:  # first: what went wrong, whole
            b.anchor(f"✗ {shorten_command(shown_command(entry.get('command')))}")
            command_line(b, entry)
            if entry.get("cwd") and entry.get("cwd") != artifacts.get("worktree"):
                b.add(f"      in {entry['cwd']}", style="bright_black")
            output_lines(b, str(entry.get("output") or ""), failed=True)
        if artifacts.get("failedCheck"):
            b.anchor(f"✗ verify {artifacts['failedCheck']}")
            b.add(f"  verify `{artifacts['failedCheck']}` failed:", style="bold red")
            output_lines(b, str(artifacts.get("checkOutput") or ""), failed=True)
        if not log:  # a step of the fork's own (no git log): what the process printed
            out = process_output(run)
            if out:
                failed = run.get("status") in FAILED or run.get("processStatus") == "failed"
                if failed:
                    b.anchor(f"✗ output of {step}")
                b.add("  output:", style="bold red" if failed else "bold")
                output_lines(b, out, failed=failed, indent="    ")
        for key in ("applied", "dropped") if not artifacts.get("series") else ():  # (the series says it per commit)
            if artifacts.get(key):
                b.add(f"  {key}: {', '.join(map(str, artifacts[key]))}")
        series_lines(b, artifacts)
        if artifacts.get("statusOutput"):
            b.add("  git status in the worktree:", style="bold")
            output_lines(b, str(artifacts["statusOutput"]), failed=True, indent="    ")
        if artifacts.get("rangeDiff"):
            lines = clean(artifacts["rangeDiff"]).splitlines()
            b.add("  range-diff (old stack vs new):", style="bold")
            for line in lines[:RANGE_DIFF_LINES]:
                b.add(f"    {line}")
            if len(lines) > RANGE_DIFF_LINES:
                b.add(f"    … {len(lines) - RANGE_DIFF_LINES} more line(s): p shows the whole range-diff", "italic")
        if log:
            b.add(
                f"  log: {len(log)} command(s)"
                + (f", {len(failing)} failed (above)" if failing else "")
                + " · p: every output",
                style="bold",
            )
        for entry in log:
            if entry.get("exitCode") != 0:
                command_line(b, entry, note="  ↑")
            else:
                command_line(b, entry)
                output_lines(b, str(entry.get("output") or ""), failed=False)
    elif failing:
        command_line(b, failing[0])
        conflicts = [x for x in clean(failing[0].get("output")).splitlines() if is_conflict_line(x)]
        for line in conflicts:
            b.add(f"      {line}", style="bold red")
    t = Text()
    _ident(t, "id", run.get("id"), span(run.get("startedAt") or run.get("createdAt"), run.get("completedAt")))
    b.add(t, nowrap=True)
    return b


def shorten_command(command: str, width: int = 40) -> str:
    """`git -c a=b -c c=d cherry-pick --allow-empty SHA…` as `git cherry-pick --allow-empty…`: the verb a person
    looks for, for the header's section name."""
    words = command.split()
    while len(words) > 2 and words[0] == "git" and words[1] == "-c":
        words = [words[0], *words[3:]]
    s = " ".join(words)
    return s if len(s) <= width else s[: width - 1] + "…"


def process_output(run: dict[str, Any]) -> str:
    """The process's stdout and stderr as recorded (without its FLOW_RESULT line: its fields are shown)."""
    parts: list[str] = []
    items = run.get("output")
    if isinstance(items, list):
        for item in items:
            text = item.get("text") if isinstance(item, dict) else item if isinstance(item, str) else None
            if isinstance(text, str):
                parts.append(text)
    else:
        parts = [str(run[k]) for k in ("stdout", "stderr") if isinstance(run.get(k), str) and run.get(k)]
    lines = [line for p in parts for line in p.splitlines() if not line.startswith("FLOW_RESULT ")]
    return "\n".join(lines).strip("\n")


def build_document(chain: dict[str, Any], kind: str = "", record: dict[str, Any] | None = None) -> Document:
    """The opened record's blocks first (an attempt: with its runs; a run: then its attempt), then the rest of
    the chain in its order: signal, event, dispatches, attempts, runs."""
    focus = find_focus(chain, kind, record)
    signal = _dict(chain.get("signal")) or (focus.record if focus.kind == "signal" else {})
    event = _dict(chain.get("event"))
    dispatches = _dicts(chain.get("dispatches"))
    attempts = _dicts(chain.get("attempts"))
    runs = _dicts(chain.get("runs"))
    if focus.kind == "attempt" and focus.record and not any(a.get("id") == focus.record.get("id") for a in attempts):
        attempts = [focus.record, *attempts]
    if focus.kind == "run" and focus.record and not any(r.get("id") == focus.record.get("id") for r in runs):
        runs = [focus.record, *runs]
    numbers = attempt_numbers(attempts)
    focus_attempt: dict[str, Any] | None = None
    focus_runs: list[dict[str, Any]] = []
    if focus.kind == "attempt":
        focus_attempt = next((a for a in attempts if a.get("id") == focus.record.get("id")), focus.record)
        focus_runs = runs_of_attempt({"runs": runs}, focus_attempt)
        if not focus_runs and chain.get("kind") == "attempt":  # an attempt's chain holds only its own runs
            focus_runs = runs
    elif focus.kind == "run":
        focus_runs = [next((r for r in runs if r.get("id") == focus.record.get("id")), focus.record)]
        focus_attempt = attempt_of_run({"attempts": attempts}, str(focus.record.get("id")))
    messages = {str(a.get(k)) for a in attempts for k in ("message", "error") if a.get(k)}

    def number_of(a: dict[str, Any] | None) -> tuple[int, int] | None:
        return numbers.get(str(a.get("id"))) if a else None

    def attempt_label(run: dict[str, Any]) -> str | None:
        a = attempt_of_run({"attempts": attempts}, str(run.get("id")))
        n = number_of(a)
        return f"attempt {n[0]}" if n and n[1] > 1 else None

    first: list[Block] = []
    rest: list[Block] = []
    related = focus.kind in ("attempt", "run")
    if focus.kind == "attempt" and focus_attempt is not None:
        first.append(attempt_block(focus_attempt, number_of(focus_attempt), opened=True))
        if not focus_runs:
            first[-1].add("  no run of it here: no worktree, no log (a backend's runs keep theirs)", "bright_black")
        first += [run_block(r, opened=False, full=True, skip_message=messages) for r in focus_runs]
    elif focus.kind == "run":
        first += [run_block(r, opened=True, full=True, skip_message=messages) for r in focus_runs]
        if focus_attempt is not None:
            first.append(attempt_block(focus_attempt, number_of(focus_attempt), opened=False))
    elif focus.kind == "signal" and signal:
        first.append(signal_block(signal, opened=True))
    elif focus.kind == "event" and event:
        first.append(event_block(event, opened=True))
    elif focus.kind == "dispatch":
        opened = focus.record if focus.record in dispatches else None
        first.append(dispatches_block(dispatches if opened else [focus.record, *dispatches], focus.record))
    if signal and focus.kind != "signal":
        rest.append(signal_block(signal, opened=False))
    if event and focus.kind != "event":
        rest.append(event_block(event, opened=False))
    if dispatches and focus.kind != "dispatch":
        rest.append(dispatches_block(dispatches, None))
    shown_attempt = focus_attempt.get("id") if focus_attempt else None
    for a in attempts:
        if a.get("id") != shown_attempt:
            rest.append(attempt_block(a, number_of(a), opened=False))
    shown_runs = {r.get("id") for r in focus_runs}
    for r in runs:
        if r.get("id") not in shown_runs:
            rest.append(run_block(r, opened=False, full=not related, skip_message=messages, attempt=attempt_label(r)))
    blocks = first + rest
    if not event and not signal and not blocks:
        b = Block("record", "Record", focus.kind)
        b.add("  no flow event for this record", style="bright_black")
        for line in json.dumps(chain, indent=2, default=str)[:4000].splitlines():
            b.add(f"  {line}")
        blocks = [b]
    elif not event:
        b = Block("event", "Flow event", "event")
        b.add("  no flow event for this record", style="bright_black")
        blocks.insert(len(first), b)
    crumbs = breadcrumb(focus, signal, event, attempts, focus_attempt, focus_runs, number_of(focus_attempt))
    return Document(focus, title_of(focus, event, number_of(focus_attempt)), crumbs, blocks)


def breadcrumb(
    focus: Focus,
    signal: dict[str, Any],
    event: dict[str, Any],
    attempts: list[dict[str, Any]],
    attempt: dict[str, Any] | None,
    runs: list[dict[str, Any]],
    number: tuple[int, int] | None,
) -> list[Crumb]:
    """Where the opened record sits: signal, event, attempt N of M, run FLOW/STEP (joined by CRUMB)."""
    out: list[Crumb] = []
    if signal:
        out.append(Crumb("signal", "signal", focus.kind == "signal"))
    out.append(Crumb("event", "event" if event else None, focus.kind == "event"))
    if focus.kind == "dispatch":
        out.append(Crumb("dispatch", "dispatches", True))
    if attempt is not None:
        label = f"attempt {number[0]} of {number[1]}" if number else "attempt"
        out.append(Crumb(label, f"attempt:{attempt.get('id')}", focus.kind == "attempt"))
    elif attempts and focus.kind in ("event", "signal", "dispatch"):
        label = f"{len(attempts)} attempt{'s' if len(attempts) > 1 else ''}"
        out.append(Crumb(label, f"attempt:{attempts[0].get('id')}"))
    if focus.kind == "run" and runs:
        r = runs[0]
        out.append(Crumb(f"run {r.get('flowName')}/{r.get('stepName')}", f"run:{r.get('id')}", True))
    elif focus.kind == "attempt":
        if len(runs) == 1:
            out.append(Crumb(f"run {runs[0].get('flowName')}/{runs[0].get('stepName')}", f"run:{runs[0].get('id')}"))
        elif runs:
            out.append(Crumb(f"{len(runs)} runs", f"run:{runs[0].get('id')}"))
        else:
            out.append(Crumb("no run", None))
    return out


def title_of(focus: Focus, event: dict[str, Any], number: tuple[int, int] | None) -> Text:
    """`KIND  status  what  shortid`: the record opened, in one line."""
    r = focus.record
    t = Text()
    if focus.kind == "attempt":
        t.append("ATTEMPT" + (f" {number[0]}/{number[1]}" if number else ""), style="bold")
        t.append("  ")
        t.append_text(status_text(r.get("status")))
        if r.get("state"):
            t.append(" (")
            t.append_text(state_text(r.get("state")))
            t.append(")")
        t.append(f"  {upstream_label(r)}")
    elif focus.kind == "run":
        t.append("RUN", style="bold")
        t.append("  ")
        t.append_text(status_text(r.get("status")))
        t.append(f"  {r.get('flowName')}/{r.get('stepName')}")
        if event:
            t.append(f"  {upstream_label(event)}")
    elif focus.kind == "signal":
        t.append("SIGNAL", style="bold")
        t.append("  ")
        t.append_text(status_text("filtered" if r.get("filtered") else r.get("event")))
        t.append(f"  {_dict(r.get('repo')).get('fullName') or '-'}  {r.get('title') or ''}")
    elif focus.kind == "dispatch":
        t.append("DISPATCH", style="bold")
        t.append("  ")
        t.append_text(status_text(r.get("status")))
        t.append(f"  {r.get('operation')} via {r.get('transport')}  {upstream_label(event) if event else ''}")
    else:
        t.append("EVENT", style="bold")
        t.append(f"  {r.get('type') or '-'}  {upstream_label(r) if r else 'not found'}")
    if focus.id:
        t.append(f"  {short_id(focus.id)}", style="bold cyan")
    return t


def render_chain(chain: dict[str, Any], kind: str = "", record: dict[str, Any] | None = None) -> Text:
    """The whole view as one text, unwrapped (what the screen shows, before it wraps it to its width)."""
    doc = build_document(chain, kind, record)
    t = Text()
    for i, block in enumerate(doc.blocks):
        if i:
            t.append("\n")
        t.append(block.title + "\n", style="bold underline")
        for line in block.body:
            t.append_text(line)
            t.append("\n")
    return t


# -- layout: wrap on spaces, never inside a word ------------------------------------------------------------------
_WORD = re.compile(r"\S+\s*")


def wrap(line: Text, width: int) -> list[Text]:
    """`line` in rows of at most `width` cells, broken only at spaces; continuation rows hang two cells under the
    line's own indent. A word wider than a row gets a row of its own, whole (the view scrolls sideways)."""
    plain = line.plain
    if cell_len(plain) <= width:
        return [line]
    indent = len(plain) - len(plain.lstrip(" "))
    hang = min(indent + 2, max(0, width // 3))
    rows: list[Text] = []
    start = 0
    col = indent
    for m in _WORD.finditer(plain, indent):
        word = m.group().rstrip()
        used = col - (indent if not rows else hang)
        # a word no row can hold overflows anyway: after a short label (`resume in`, `id`) it stays on its row
        label = cell_len(word) > width - hang and used <= 16
        if used > 0 and col + cell_len(word) > width and not label:
            rows.append(line[start : m.start()])
            start, col = m.start(), hang
        col += cell_len(m.group())
    rows.append(line[start:])
    out = [rows[0]]
    for row in rows[1:]:
        cont = Text(" " * hang)
        cont.append_text(row)
        out.append(cont)
    for row in out:
        row.rstrip()
    return out


@dataclass(frozen=True)
class Anchor:
    """A place `]` and `[` stop at: a block's header or a failing command inside it."""

    line: int
    key: str
    title: str
    header: bool


@dataclass
class Layout:
    rows: list[Text]
    anchors: list[Anchor]
    width: int


def layout(doc: Document, width: int) -> Layout:
    width = max(20, width)
    rows: list[Text] = []
    anchors: list[Anchor] = []
    for i, block in enumerate(doc.blocks):
        if i:
            rows.append(Text())
        anchors.append(Anchor(len(rows), block.key, block.title, True))
        rows.append(Text())  # the header: painted by `paint` (it marks the current one)
        inner = dict(block.anchors)
        for n, line in enumerate(block.body):
            if n in inner:
                anchors.append(Anchor(len(rows), f"{block.key}#{n}", inner[n], False))
            rows.extend([line] if n in block.unwrapped else wrap(line, width))
    return Layout(rows, anchors, width)


def header_row(block: Block, current: bool) -> Text:
    t = Text("▶ " if current else "", style="bold reverse" if current else "")
    t.append(block.title, style="bold reverse" if current else "bold underline")
    if block.opened:
        t.append("  opened", style="bold cyan")
    return t


def paint(doc: Document, lay: Layout, current: int) -> Text:
    """The rows as one text: each block's header, the current place marked (▶)."""
    blocks = {b.key: b for b in doc.blocks}
    rows = list(lay.rows)
    for i, anchor in enumerate(lay.anchors):
        if anchor.header:
            rows[anchor.line] = header_row(blocks[anchor.key], i == current)
        elif i == current:
            row = rows[anchor.line]
            marked = Text("▶ ", style="bold reverse")
            marked.append_text(row[2:] if row.plain.startswith("  ") else row)
            rows[anchor.line] = marked
    return Text("\n").join(rows)


def crumbs_text(doc: Document, current_key: str | None) -> Text:
    t = Text()
    for i, c in enumerate(doc.crumbs):
        if i:
            t.append(CRUMB, style="bright_black")
        style = "bold reverse" if c.opened else "" if c.key else "bright_black"
        if c.key is not None and c.key == current_key:
            style += " underline"
        t.append(c.label, style=style.strip())
    return t


# -- hand-offs: a pager, an editor, a shell ------------------------------------------------------------------------
def pager_command(env: Mapping[str, str]) -> list[str]:
    """$PAGER (split like a shell would), else `less -R`, else `more`."""
    pager = (env.get("PAGER") or "").strip()
    if pager:
        return shlex.split(pager)
    return ["less", "-R"] if shutil.which("less") else ["more"]


def shell_command(env: Mapping[str, str]) -> list[str]:
    return shlex.split(env.get("SHELL") or "") or ["/bin/sh"]


def editor_command(env: Mapping[str, str], target: str) -> list[str]:
    """$EDITOR (or $VISUAL), else vi, on `target`."""
    editor = (env.get("EDITOR") or env.get("VISUAL") or "").strip()
    return [*(shlex.split(editor) or ["vi"]), target]


@dataclass(frozen=True)
class Place:
    """Where `!` and `e` go: a run's worktree (or, without one, the checkout it ran in). `path` None: nowhere,
    and `why` says so."""

    path: str | None
    files: tuple[str, ...]
    why: str
    worktree: bool


def focus_runs(chain: dict[str, Any], focus: Focus) -> list[dict[str, Any]]:
    """The runs the opened record is about, newest first (an event's: all of them)."""
    runs = _dicts(chain.get("runs"))
    if focus.kind == "run":
        return [focus.record, *[r for r in runs if r.get("id") != focus.record.get("id")]]
    if focus.kind == "attempt":
        own = runs_of_attempt(chain, focus.record)
        return own or (runs if chain.get("kind") == "attempt" else [])
    return runs


def find_place(chain: dict[str, Any], focus: Focus) -> Place:
    runs = focus_runs(chain, focus)
    for run in runs:
        art = artifacts_of(run)
        if art.get("worktree"):
            files = tuple(str(f) for f in art.get("unmergedFiles") or [])
            return Place(str(art["worktree"]), files, "", True)
    for run in runs:
        where = artifacts_of(run).get("workspace") or run.get("workspace")
        if where:
            return Place(str(where), (), "no worktree kept: this is the checkout the rebuild ran in", False)
    if not runs:
        return Place(None, (), f"no worktree: this {focus.kind} has no run here", False)
    return Place(None, (), "no worktree: its runs recorded none (a backend's runs keep theirs)", False)


def log_document(chain: dict[str, Any], focus: Focus) -> str:
    """What `p` pages: the candidate's range-diff, then every command of the runs with its whole output."""
    out: list[str] = [f"patchmoi: {focus.kind} {focus.id}", ""]
    runs = focus_runs(chain, focus)
    for run in runs:
        art = artifacts_of(run)
        if art.get("rangeDiff"):
            out += [f"== range-diff of run {run.get('id')} (old stack vs new)", clean(art["rangeDiff"]), ""]
    for run in runs:
        payload = _dict(run.get("resultPayload"))
        out.append(f"== run {run.get('flowName')}/{run.get('stepName')} {run.get('id')}: {run.get('status')}")
        if payload.get("message"):
            out.append(clean(payload["message"]))
        if run.get("error"):
            out.append(clean(run["error"]))
        art = artifacts_of(run)
        if art.get("worktree"):
            out.append(f"worktree: {art['worktree']}")
        if art.get("failedCheck"):
            out += [f"-- verify `{art['failedCheck']}` failed:", clean(art.get("checkOutput") or "")]
        out.append("")
        for entry in _dicts(run.get("log")):
            out.append(f"$ {clean(entry.get('command'))}    → exit {entry.get('exitCode')}    (in {entry.get('cwd')})")
            text = clean(entry.get("output") or "").strip("\n")
            if text:
                out.append(text)
            out.append("")
        output = process_output(run)
        if output:
            out += ["-- process output:", clean(output), ""]
    if not runs:
        out.append("no run recorded for this record")
    return "\n".join(out) + "\n"


# -- the screen ---------------------------------------------------------------------------------------------------
KEY_HELP = (  # (keys, word, what it does, mutating, on the keys line): the keys line and `?`
    ("esc", "back", "back to the tables", False, True),
    ("]/[", "section", "next / previous section or failing command (or tab)", False, True),
    ("j/k", "scroll", "scroll: ↓ ↑ pgdn pgup space b, g G home end, h l ← →", False, True),
    ("p", "pager", "the range-diff and every command's output in $PAGER", False, True),
    ("e", "edit", "$EDITOR on the first unmerged file, else the worktree", False, True),
    ("!", "shell", "$SHELL in the run's worktree (exit: back here)", False, True),
    ("y", "copy id", "copy the opened record's full id (for the CLI)", False, True),
    ("w", "copy path", "copy the worktree's path", False, False),
    ("^r", "reload", "read the chain again", False, True),
    ("r", "retry", "retry the event", True, True),
    ("R", "replay", "replay the event", True, True),
    ("s", "sync", "sync the attempt", True, True),
    ("a", "adopt", "adopt the attempt's candidate", True, True),
    ("?", "keys", "these keys", False, True),
)


def keys_line(width: int, read_only: bool) -> Text:
    """The keys that fit `width`, with their word; narrower, the action keys (r R s a) bare and no scroll keys
    (j k, arrows: what anyone tries first); read-only leaves the action keys out."""
    keys = [k for k in KEY_HELP if k[4] and not (read_only and k[3])]

    def render(compact: bool) -> Text:
        t = Text()
        for key, word, _, mutating, _ in keys:
            if compact and key == "j/k":
                continue
            if t:
                t.append(" " if compact else "  ")
            t.append(key, style="bold")
            if not (compact and mutating):
                t.append(f" {word.split()[0] if compact else word}", style="bright_black")
        return t

    full = render(False)
    return full if cell_len(full.plain) <= width else render(True)


class DetailScreen(Screen[None]):
    """The record opened (`kind`: its tab, `record`: its row), first and expanded, then the rest of its chain.
    The app's action keys (r, R, s, a) act on it; `a` adopts `attempt`. `show(chain)` re-renders with a fresh
    chain; ctrl+r fetches one."""

    BINDINGS = [
        Binding("escape,q", "back", "Back"),
        Binding("right_square_bracket,tab", "jump(1)", "Next section"),
        Binding("left_square_bracket,shift+tab", "jump(-1)", "Previous section"),
        Binding("j,down", "scroll_lines(1)", show=False),
        Binding("k,up", "scroll_lines(-1)", show=False),
        Binding("pagedown,space", "scroll_pages(1)", show=False),
        Binding("pageup,b", "scroll_pages(-1)", show=False),
        Binding("g,home", "scroll_edge(0)", show=False),
        Binding("G,end", "scroll_edge(1)", show=False),
        Binding("l,right", "scroll_sideways(8)", show=False),
        Binding("h,left", "scroll_sideways(-8)", show=False),
        Binding("p", "pager", "Pager"),
        Binding("e", "editor", "Editor"),
        Binding("exclamation_mark", "shell", "Shell"),
        Binding("y", "copy_id", "Copy id"),
        Binding("w", "copy_path", "Copy worktree path", show=False),
        Binding("ctrl+r", "reload", "Reload"),
        Binding("question_mark", "keys", "Keys"),
    ]

    def __init__(self, chain: dict[str, Any], *, kind: str = "", record: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.chain = chain
        self.kind = kind
        self.record = record
        self.doc = build_document(chain, kind, record)
        self.lay: Layout | None = None
        self.text = Text()  # what the body shows: the rows, the current place marked
        self.current = 0

    # -- what it shows ----------------------------------------------------------------------------------------
    @property
    def opened(self) -> Focus:
        return self.doc.focus

    @property
    def attempt(self) -> dict[str, Any] | None:
        """The attempt `a` adopts: the one opened, a run's own, else the chain's (pick_attempt)."""
        focus = self.opened
        if focus.kind == "attempt" and focus.record:
            return focus.record
        if focus.kind == "run":
            found = attempt_of_run(self.chain, str(focus.record.get("id")))
            if found is not None:
                return found
        return pick_attempt(self.chain, self.kind, self.record)

    def show(self, chain: dict[str, Any]) -> None:
        """Re-render with a fresh chain (after an action changed it), at the same place."""
        anchor = self.current_anchor
        offset = 0
        if anchor is not None:
            offset = max(0, int(self.scroller.scroll_y) - anchor.line)
        self.chain = chain
        self.doc = build_document(chain, self.kind, self.record)
        self.lay = None
        self.refresh_view()
        if anchor is not None and self.lay is not None:
            found = next((i for i, a in enumerate(self.lay.anchors) if a.key == anchor.key), None)
            if found is not None:
                self.current = found
                target = self.lay.anchors[found].line + offset
                self.paint()
                self.call_after_refresh(lambda: self.scroller.scroll_to(y=target, animate=False, immediate=True))

    def compose(self) -> ComposeResult:
        with Horizontal(id="detail-head"):
            yield Static(id="detail-title")
            yield Static(id="detail-where")
        yield Static(id="detail-crumbs")
        with ScrollableContainer(id="detail"):
            yield Static(id="detail-body")
        yield Static(id="detail-message")
        yield Static(id="detail-keys")

    def on_mount(self) -> None:
        self.refresh_view()
        self.watch(self.scroller, "scroll_y", self._scrolled, init=False)
        self.scroller.focus()

    def on_resize(self) -> None:
        if self.lay is not None and self.lay.width != self.wrap_width():
            self.show(self.chain)  # wrapped again to the new width, at the same place
        self.query_one("#detail-keys", Static).update(keys_line(self.size.width - 2, self.read_only))

    @property
    def scroller(self) -> ScrollableContainer:
        return self.query_one("#detail", ScrollableContainer)

    @property
    def read_only(self) -> bool:
        return bool(getattr(getattr(self.app, "client", None), "read_only", False))

    def wrap_width(self) -> int:
        width = self.scroller.scrollable_content_region.width
        return width if width > 0 else max(20, self.app.size.width - 3)  # (before the first layout: estimated)

    def refresh_view(self) -> None:
        self.lay = layout(self.doc, self.wrap_width())
        self.current = min(self.current, len(self.lay.anchors) - 1)
        self.query_one("#detail-title", Static).update(self.doc.title)
        self.query_one("#detail-keys", Static).update(keys_line(max(20, self.app.size.width - 2), self.read_only))
        self.paint()

    def paint(self) -> None:
        if self.lay is None:
            return
        self.text = paint(self.doc, self.lay, self.current)
        self.query_one("#detail-body", Static).update(self.text)
        anchor = self.current_anchor
        block_key = anchor.key.split("#", 1)[0] if anchor else None
        self.query_one("#detail-crumbs", Static).update(crumbs_text(self.doc, block_key))
        where = Text(f"§{self.current + 1}/{len(self.lay.anchors)}", style="bold")
        if anchor is not None and self.app.size.width >= 120:  # narrower: the ▶ in the text says which
            where.append(f" {anchor.title}", style="bright_black")
        self.query_one("#detail-where", Static).update(where)

    @property
    def current_anchor(self) -> Anchor | None:
        if self.lay is None or not self.lay.anchors:
            return None
        return self.lay.anchors[max(0, min(self.current, len(self.lay.anchors) - 1))]

    def _scrolled(self, y: float) -> None:
        """The marked place follows the scroll: it stays while its line is on screen (but at the top, it is the
        first), else it is the place the top line belongs to."""
        if self.lay is None or not self.lay.anchors:
            return
        top, height = int(y), max(1, self.scroller.scrollable_content_region.height)
        anchor = self.current_anchor
        if top > 0 and anchor is not None and top <= anchor.line < top + height:
            return
        at = max((i for i, a in enumerate(self.lay.anchors) if a.line <= top), default=0)
        if at != self.current:
            self.current = at
            self.paint()

    # -- the message line ---------------------------------------------------------------------------------------
    def say(self, message: str, severity: SeverityLevel = "information") -> None:
        """On this screen's message line, and in the app's messages (ctrl+p → Messages)."""
        self.app.notify(message, severity=severity)  # (the dashboard's notify shows it here too)
        self.show_message(message, severity)

    def show_message(self, message: str, severity: str = "information") -> None:
        """On the message line (the dashboard's notify calls it while this screen is on top)."""
        style = {"error": "bold red", "warning": "yellow"}.get(severity, "")
        self.query_one("#detail-message", Static).update(Text(message, style=style))

    # -- keys -----------------------------------------------------------------------------------------------
    def action_back(self) -> None:
        self.app.pop_screen()

    def action_scroll_lines(self, n: int) -> None:
        self.scroller.scroll_to(y=self.scroller.scroll_y + n, animate=False, immediate=True)

    def action_scroll_pages(self, n: int) -> None:
        page = max(1, self.scroller.scrollable_content_region.height - 1)
        self.scroller.scroll_to(y=self.scroller.scroll_y + n * page, animate=False, immediate=True)

    def action_scroll_edge(self, end: int) -> None:
        self.scroller.scroll_to(y=self.scroller.max_scroll_y if end else 0, animate=False, immediate=True)

    def action_scroll_sideways(self, n: int) -> None:
        self.scroller.scroll_to(x=self.scroller.scroll_x + n, animate=False, immediate=True)

    def action_jump(self, step: int) -> None:
        """To the next (previous) section or failing command, round at the ends; it is marked ▶."""
        if self.lay is None or not self.lay.anchors:
            return
        self.current = (self.current + step) % len(self.lay.anchors)
        self.paint()
        anchor = self.lay.anchors[self.current]
        self.scroller.scroll_to(x=0, y=anchor.line, animate=False, immediate=True)

    def action_copy_id(self) -> None:
        ident = self.opened.id
        if not ident:
            self.say("this record has no id to copy", "warning")
            return
        self.app.copy_to_clipboard(ident)
        self.say(f"copied {ident}")

    def action_copy_path(self) -> None:
        place = find_place(self.chain, self.opened)
        if place.path is None:
            self.say(place.why, "warning")
            return
        self.app.copy_to_clipboard(place.path)
        self.say(f"copied {place.path}")

    async def action_reload(self) -> None:
        client = getattr(self.app, "client", None)
        if client is None:
            self.say("nothing to reload from", "warning")
            return
        kind = self.kind or FOCUS_TAB.get(self.opened.kind, "events")
        record = self.record or self.opened.record or {"id": self.opened.id}
        try:
            chain = await client.describe(kind, record)
        except PatchmoiError as exc:
            self.say(f"reload failed: {exc}", "error")
            return
        self.show(chain)
        self.say("reloaded")

    def action_keys(self) -> None:
        t = Text()
        t.append("detail view keys\n", style="bold")
        for key, _, long, mutating, _ in KEY_HELP:
            if mutating and self.read_only:
                continue
            t.append(f"{key:>6}  ", style="bold cyan")
            t.append(long + "\n")
        if self.read_only:
            t.append("\nread-only: retry, replay, sync and adopt are off\n", style="bright_black")
        t.rstrip()
        self.app.push_screen(KeysScreen(t))

    def action_pager(self) -> None:
        self.hand_off("pager", pager_command(os.environ), stdin=log_document(self.chain, self.opened))

    def action_shell(self) -> None:
        place = self.place()
        if place is None or place.path is None:
            return
        if self.hand_off("shell", shell_command(os.environ), cwd=place.path):
            self.came_back("shell", place)

    def action_editor(self) -> None:
        place = self.place()
        if place is None or place.path is None:
            return
        target = place.path
        if place.files and (Path(place.path) / place.files[0]).exists():
            target = str(Path(place.path) / place.files[0])
        if self.hand_off("editor", editor_command(os.environ, target), cwd=place.path):
            self.came_back("editor", place)

    def came_back(self, what: str, place: Place) -> None:
        if place.worktree:
            self.say(f"back from the {what} in {place.path}; resolved and `git add`ed? r retries the event")
        else:
            self.say(f"back from the {what} in {place.path} ({place.why})")

    def place(self) -> Place | None:
        """The worktree to work in, or None after saying why there is none (here)."""
        place = find_place(self.chain, self.opened)
        if place.path is None:
            self.say(place.why, "warning")
            return None
        if not Path(place.path).is_dir():
            self.say(f"{place.path} is not on this machine (gone: resolved, adopted, gc; or a server's)", "warning")
            return None
        return place

    def hand_off(self, what: str, argv: list[str], *, cwd: str | None = None, stdin: str | None = None) -> bool:
        """Give the terminal to `argv` and take it back: whether it ran. The dashboard is suspended meanwhile
        (its live tail waits; a local run goes on and is read when the program exits)."""
        env = {**os.environ, "PATCHMOI_RECORD": self.opened.id}
        if cwd:
            env["PATCHMOI_WORKTREE"] = cwd
        try:
            with self.app.suspend():
                if what == "shell":
                    print(f"patchmoi: a shell in {cwd}; `exit` goes back to the dashboard", flush=True)
                result = subprocess.run(
                    argv, cwd=cwd, env=env, input=stdin.encode() if stdin is not None else None, check=False
                )
        except SuspendNotSupported:
            by_hand = (f"cd {shlex.quote(cwd)} && " if cwd else "") + (
                shlex.join(argv) if what != "pager" else f"patchmoi show {short_id(self.opened.id)}"
            )
            self.say(f"{what}: this terminal cannot be suspended; by hand: {by_hand}", "warning")
            return False
        except OSError as exc:
            self.say(f"{what}: cannot run {shlex.join(argv)}: {exc.strerror or exc}", "error")
            return False
        if result.returncode != 0 and what != "shell":  # (a shell exits with its last command's status)
            self.say(f"{what}: {shlex.join(argv[:1])} exited {result.returncode}", "warning")
        return True


class KeysScreen(ModalScreen[None]):
    """The detail view's keys (`?`); esc, q or ? closes it."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, text: Text) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        yield Static(self.text, id="dialog")

    def action_close(self) -> None:
        self.dismiss(None)
