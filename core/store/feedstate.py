"""Per-source poll state on disk: `feed-state.json` (the Bun service's file) plus an append-only journal.

A save appends one small line per changed source to `feed-state.journal` (one write, one fsync) instead of
rewriting the whole file: what changed in the source's state, with the seen-id list as "these ids in front of
what was there" and the id digests as added/removed. When the journal outgrows the snapshot (or a minute
passes, or the store closes) the state is written whole to `feed-state.json` again, atomically, one source
per line, and the journal is emptied. So a burst of 1,000 new entries costs 1,000 small appends, not 1,000
rewrites of every source's state.

Journal lines are idempotent and replayed in order over the snapshot, so a crash between writing the snapshot
and emptying the journal replays lines the snapshot already holds, and ends in the same state. Readers take the
journal before the snapshot for the same reason. A torn last line (a crash mid-append) is skipped: that one
save is lost, and the poller's steps are idempotent, so the entry is taken again.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from patchmoi.core.errors import StoreWriteError
from patchmoi.core.fsutil import FILE_MODE, atomic_write, ensure_dir, write_all

JOURNAL_FILE = "feed-state.journal"
COMPACT_MIN_BYTES = 1 << 20
"""The journal is folded into the snapshot once it is bigger than this and than the snapshot itself."""
COMPACT_SECONDS = 60.0
"""... or when its oldest line is this old (then the Bun-compatible file is at most a minute behind)."""
DIGEST = 10  # characters per id digest in `known` (core.feeds.poller.DIGEST_CHARS)

State = dict[str, dict[str, Any]]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def encode_snapshot(state: Mapping[str, Any]) -> bytes:
    """The whole state as a JSON object with one source per line (C encoder: ~100x json.dumps(indent=2))."""
    if not state:
        return b"{}\n"
    body = ",\n".join(f"  {_dumps(key)}: {_dumps(value)}" for key, value in state.items())
    return ("{\n" + body + "\n}\n").encode("utf-8")


# -- deltas ------------------------------------------------------------------------------------------------
def delta(source_id: str, old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any] | None:
    """The journal line that turns `old` into `new` (None if they are equal)."""
    old = old or {}
    line: dict[str, Any] = {"s": source_id}
    changed: dict[str, Any] = {}
    for key, value in new.items():
        if key in old and old[key] == value:
            continue
        if key == "seen" and isinstance(value, list) and isinstance(old.get("seen"), list):
            seen = _seen_delta(old["seen"], value)
            if seen is not None:
                line["seen"] = seen
                continue
        if key == "known" and isinstance(value, str) and isinstance(old.get("known"), str):
            known = _known_delta(old["known"], value)
            if known is not None:
                line["known"] = known
                continue
        changed[key] = value
    if changed:
        line["set"] = changed
    removed = [key for key in old if key not in new]
    if removed:
        line["del"] = removed
    return line if len(line) > 1 else None


def _seen_delta(old: list[Any], new: list[Any]) -> dict[str, Any] | None:
    """`new` as ids pushed in front of `old[:keep]`, anchored on old's first id (so a replay is idempotent)."""
    if not old or not new:
        return None
    try:
        pushed = new.index(old[0])
    except ValueError:
        return None
    keep = len(new) - pushed
    if new[pushed:] != old[:keep] or pushed > len(new) // 2:
        return None
    return {"push": new[:pushed], "anchor": old[0], "keep": keep}


def _known_delta(old: str, new: str) -> dict[str, str] | None:
    before = {old[i : i + DIGEST] for i in range(0, len(old), DIGEST)}
    after = {new[i : i + DIGEST] for i in range(0, len(new), DIGEST)}
    added, gone = "".join(sorted(after - before)), "".join(sorted(before - after))
    if len(added) + len(gone) >= len(new) // 2:
        return None
    return {"add": added, "remove": gone}


def apply(state: State, line: Mapping[str, Any]) -> None:
    source_id = line.get("s")
    if not isinstance(source_id, str):
        return
    current = dict(state.get(source_id) or {})
    for key in line.get("del") or []:
        current.pop(key, None)
    if isinstance(line.get("set"), dict):
        current.update(line["set"])
    seen = line.get("seen")
    if isinstance(seen, dict) and isinstance(seen.get("push"), list):
        before = current.get("seen") if isinstance(current.get("seen"), list) else []
        assert isinstance(before, list)
        at = before.index(seen["anchor"]) if seen.get("anchor") in before else 0
        current["seen"] = seen["push"] + before[at : at + int(seen.get("keep") or 0)]
    known = line.get("known")
    if isinstance(known, dict):
        text = current.get("known") if isinstance(current.get("known"), str) else ""
        assert isinstance(text, str)
        digests = {text[i : i + DIGEST] for i in range(0, len(text), DIGEST)}
        add, remove = str(known.get("add") or ""), str(known.get("remove") or "")
        digests |= {add[i : i + DIGEST] for i in range(0, len(add), DIGEST)}
        digests -= {remove[i : i + DIGEST] for i in range(0, len(remove), DIGEST)}
        current["known"] = "".join(sorted(digests))
    state[source_id] = current


def replay(state: State, journal: bytes) -> int:
    """Apply every complete, readable line of a journal; returns how many were skipped (torn or invalid)."""
    skipped = 0
    for raw in journal.split(b"\n"):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            skipped += 1
            continue
        if isinstance(line, dict):
            apply(state, line)
        else:
            skipped += 1
    return skipped


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class Journal:
    """The journal file: batched appends (one fsync), reads, and folding into the snapshot.

    A fold renames the journal to `feed-state.journal.1` (new saves go to a fresh journal at once), writes the
    snapshot on a thread, then deletes `.1`: the poll loop never waits for a snapshot of every source. Readers
    replay `.1` then the journal; a crash at any point leaves lines that replay to the same state.
    """

    def __init__(self, data_dir: Path, snapshot: Path) -> None:
        self.path = data_dir / JOURNAL_FILE
        self.rotated = data_dir / (JOURNAL_FILE + ".1")
        self.snapshot = snapshot
        self.first_at: float | None = None  # when the oldest line not folded yet was written (this process)
        self._folding: threading.Thread | None = None
        self.fold_error: str | None = None

    def read(self) -> bytes:
        """`.1` then the journal. Read again if a fold set the journal aside meanwhile (its lines would be
        missed: read neither in the journal nor, yet, in the snapshot)."""
        for _ in range(5):
            before = _identity(self.rotated)
            out = b""
            for path in (self.rotated, self.path):
                try:
                    out += path.read_bytes()
                except FileNotFoundError:
                    continue
                if out and not out.endswith(b"\n"):
                    out += b"\n"  # a torn last line of .1 stays one bad line
            if _identity(self.rotated) == before:
                break
        return out

    def append(self, lines: Iterable[Mapping[str, Any]]) -> None:
        data = "".join(_dumps(line) + "\n" for line in lines).encode("utf-8")
        if not data:
            return
        try:
            ensure_dir(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
            try:
                start = os.fstat(fd).st_size
                if start and os.pread(fd, 1, start - 1) != b"\n":
                    data = b"\n" + data  # a torn last line (a crash mid-append) stays one bad line, alone
                try:
                    write_all(fd, data)
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, start)  # no half line left behind on a full disk
                    raise
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreWriteError(f"cannot save feed state to {self.path}: {exc.strerror or exc}") from exc
        if self.first_at is None:
            self.first_at = time.monotonic()

    def due(self) -> bool:
        """Whether to fold the journal into the snapshot now (and no fold is running)."""
        if self.first_at is None or (self._folding is not None and self._folding.is_alive()):
            return False
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return False
        try:
            snapshot = os.stat(self.snapshot).st_size
        except FileNotFoundError:
            snapshot = 0
        return size >= max(COMPACT_MIN_BYTES, snapshot) or time.monotonic() - self.first_at >= COMPACT_SECONDS

    def fold(self, state: Mapping[str, Any], *, background: bool = False) -> None:
        """Write the whole state as the snapshot (atomically) and drop the journal lines it holds. With
        `background`, the journal is set aside at once and the snapshot written on a thread (`state` must not
        change under it: the store replaces a source's dict on a save, never edits it)."""
        self.wait()
        if self.rotated.exists():  # a fold that did not finish (a crash, a full disk): its lines are in `state` too
            self._write(state, self.rotated)
            if self.rotated.exists():  # still cannot write the snapshot: keep both files, try again later
                return
        if self.path.exists():
            os.replace(self.path, self.rotated)
        self.first_at = None
        frozen = dict(state)
        if not background:
            self._write(frozen, self.rotated)
            return
        self._folding = threading.Thread(target=self._write, args=(frozen, self.rotated), name="feed-state-fold")
        self._folding.start()

    def wait(self) -> None:
        if self._folding is not None:
            self._folding.join()
            self._folding = None

    def _write(self, state: Mapping[str, Any], rotated: Path) -> None:
        try:
            atomic_write(self.snapshot, encode_snapshot(state))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(rotated)
            self.fold_error = None
        except (OSError, StoreWriteError) as exc:  # the lines stay in `.1`: nothing is lost, the next fold retries
            self.fold_error = f"cannot write {self.snapshot}: {exc}"
            if self.first_at is None:
                self.first_at = time.monotonic()
