"""What the next poll of a source would do, without doing it (`patchmoi sources test`).

The source is read live (a full read: no ETag, so a 304 cannot hide the entries) and run through the
poller's own newness and selection rules against the saved state; nothing is recorded or changed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from patchmoi.core.errors import UpstreamError
from patchmoi.core.feeds.fetch import Fetcher
from patchmoi.core.feeds.kinds import ReadContext, read_source
from patchmoi.core.feeds.npm import dist_tag_moves
from patchmoi.core.feeds.poller import Newness, Poller
from patchmoi.core.feeds.selection import Decision, advance
from patchmoi.core.sources import FeedSource


@dataclass
class PreviewRow:
    entry_id: str
    title: str
    published_at: str
    state: str
    """`new` (the next poll takes it), `seen` (taken before), `prime` (history at the first poll),
    `capped` (new, but beyond the burst cap)."""
    decision: Decision

    @property
    def outcome(self) -> str:
        if self.state not in ("new",):
            return self.state
        return "emit" if self.decision.selected else "filtered"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "entryId": self.entry_id,
            "title": self.title,
            "publishedAt": self.published_at,
            "state": self.state,
            "outcome": self.outcome,
            "tag": self.decision.tag,
            "version": self.decision.version,
        }
        if self.decision.reason:
            out["reason"] = self.decision.reason
        return {k: v for k, v in out.items() if v is not None}


@dataclass
class Preview:
    source_id: str
    kind: str
    priming: bool
    rows: list[PreviewRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sourceId": self.source_id,
            "kind": self.kind,
            "priming": self.priming,
            "wouldEmit": sum(1 for r in self.rows if r.outcome == "emit"),
            "wouldFilter": sum(1 for r in self.rows if r.outcome == "filtered"),
            "entries": [r.to_dict() for r in self.rows],
            "warnings": self.warnings,
            "skipped": self.skipped,
            "signals": self.signals,
        }


class PreviewError(UpstreamError):
    """The source could not be read; the message is the poller's own."""


async def preview_source(source: FeedSource, state: dict[str, Any] | None, fetcher: Fetcher) -> Preview:
    read = await read_source(source, ReadContext(fetcher, asyncio.Semaphore(1), {}))
    if read.error:
        raise PreviewError(read.error)
    parsed = read.parsed
    assert parsed is not None
    new, warnings, priming = Poller.select_new(source, parsed.entries, state)
    preview = Preview(source.id, source.kind, priming, warnings=[*parsed.warnings, *warnings])
    preview.skipped = [{"entryId": s.id, "reason": s.reason} for s in parsed.skipped]
    newest = before = Poller.starting_newest(source, state, parsed.entries, new)
    taken: dict[str, Decision] = {}
    for entry in new:
        decision = Poller.decide(source, entry, newest)
        taken[entry.id] = decision
        newest = advance(newest, decision)
    newness = Newness(state)
    for entry in parsed.entries:
        if entry.id in taken:
            state_name, decision = "new", taken[entry.id]
        else:
            decision = Poller.decide(source, entry, before)  # the policy's verdict were it new now
            seen = newness.legacy or newness.has(entry.id)
            state_name = "prime" if priming else ("seen" if seen else "capped")
        preview.rows.append(PreviewRow(entry.id, entry.title, entry.published_at, state_name, decision))
    previous = (state or {}).get("distTags")
    if parsed.dist_tags is not None and isinstance(previous, dict) and not priming:
        preview.signals = [
            m.title
            for m in dist_tag_moves(
                parsed.package or source.repo.full_name, previous, parsed.dist_tags, parsed.modified
            )
        ]
    return preview
