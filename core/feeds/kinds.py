"""Kinds of upstream source, one reader each, chosen by the source's `kind` (the way nvchecker picks plugins).

| kind   | reads                                   | module                  | "not modified" by          |
|--------|-----------------------------------------|-------------------------|----------------------------|
| `feed` | Atom / RSS (GitHub, GitLab, Forgejo...) | `core.feeds.parse`      | ETag / Last-Modified       |
| `npm`  | an npm packument                        | `core.feeds.npm`        | ETag / Last-Modified       |
| `pypi` | the PyPI JSON API                       | `core.feeds.pypi`       | ETag / Last-Modified       |
| `git`  | tags and branch heads of a git remote   | `core.feeds.gitremote`  | digest of `git ls-remote`  |

Every reader returns a `Read`: a parsed document (entries newest first), "not modified", or an error in
operator terms. Parsing stays off the event loop where it is slow (#14): a feed the fast structural reader
(`core.feeds.fastparse`, under a millisecond for a usual feed) can read is read in the loop, one per turn;
one it declines, and a bigger one (`INLINE_MAX_BYTES`, `INLINE_MAX_TAGS`), goes to a worker process
(`core.feeds.workers`), so that feedparser never holds this process's GIL while the API answers. Registry
JSON and `git ls-remote` output are parsed in a thread.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from patchmoi.core.feeds import workers
from patchmoi.core.feeds.entries import FeedParseError, ParsedFeed
from patchmoi.core.feeds.fetch import Fetcher
from patchmoi.core.feeds.gitremote import GitRemoteError, list_remote, parse_refs, refs_digest
from patchmoi.core.feeds.npm import parse_npm
from patchmoi.core.feeds.parse import parse_xml_feed, parse_xml_feed_fast
from patchmoi.core.feeds.pypi import parse_pypi
from patchmoi.core.feeds.versions import Key, parse_version
from patchmoi.core.feeds.workers import ParseWorkerError
from patchmoi.core.sources import FeedSource


@dataclass
class Read:
    parsed: ParsedFeed | None = None
    not_modified: bool = False
    error: str | None = None
    retry_after: float | None = None
    etag: str | None = None
    last_modified: str | None = None


@dataclass
class ReadContext:
    fetcher: Fetcher
    git_slots: asyncio.Semaphore
    """How many `git ls-remote` processes run at once (each is a process, not a socket)."""
    prev: dict[str, Any]
    """The source's saved state: validators of the last read."""


Reader = Callable[[FeedSource, ReadContext], Awaitable[Read]]


def _validators(prev: dict[str, Any]) -> tuple[str | None, str | None]:
    """ETag and Last-Modified to send; none after an error, so a bad cached answer cannot stick."""
    if prev.get("lastError"):
        return None, None
    return prev.get("etag"), prev.get("lastModified")


Parse = Callable[[bytes, str | None], Awaitable[ParsedFeed]]
"""Reads a fetched body (with its Content-Type) into a ParsedFeed; FeedParseError or ParseWorkerError if not."""

INLINE_MAX_BYTES = 256 * 1024
INLINE_MAX_TAGS = 250
"""A feed is tried with the fast reader in the event loop when it is at most this big and has at most this many
'<' (tags: the reader's cost goes by elements, ~0.7 ms for 10 GitHub entries with their notes, #14); a bigger
one goes to a worker process whole (the fast reader first there too, then feedparser)."""


def _small(body: bytes) -> bool:
    return len(body) <= INLINE_MAX_BYTES and body.count(b"<") <= INLINE_MAX_TAGS


async def parse_feed_document(body: bytes, content_type: str | None) -> ParsedFeed:
    """An Atom/RSS body: the fast reader inline when it is small and the reader takes it, else a worker."""
    if _small(body):
        parsed = await _parse_inline(body, content_type)
        if parsed is not None:
            return parsed
        return await workers.run(parse_xml_feed, body, content_type=content_type, fast=False)
    return await workers.run(parse_xml_feed, body, content_type=content_type)


_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


async def _parse_inline(body: bytes, content_type: str | None) -> ParsedFeed | None:
    """The fast reader in the event loop, one document per turn of the loop.

    Up to 64 fetches complete together in a poll pass; parsed back to back in one turn of the loop they would
    hold it for tens of milliseconds. Each parse holds a per-loop lock across one yield, so the others wait
    for later turns and API requests and timers run between two parses.
    """
    loop = asyncio.get_running_loop()
    turn = _TURNS.get(loop)
    if turn is None:
        turn = _TURNS[loop] = asyncio.Lock()
    async with turn:
        parsed = parse_xml_feed_fast(body, content_type=content_type)
        await asyncio.sleep(0)
    return parsed


def _in_thread(parse: Callable[[bytes, str | None], ParsedFeed]) -> Parse:
    async def run(body: bytes, content_type: str | None) -> ParsedFeed:
        return await asyncio.to_thread(parse, body, content_type)

    return run


def _http(parse: Parse) -> Reader:
    async def read(source: FeedSource, ctx: ReadContext) -> Read:
        etag, last_modified = _validators(ctx.prev)
        result = await ctx.fetcher.fetch(source.url, etag=etag, last_modified=last_modified)
        if result.error:
            return Read(error=f"Feed {source.id} {result.error}", retry_after=result.retry_after)
        if result.not_modified:
            return Read(not_modified=True, etag=result.etag, last_modified=result.last_modified)
        try:
            parsed = await parse(result.body, result.content_type)
        except (FeedParseError, ParseWorkerError) as exc:
            return Read(error=f"Feed {source.id}: {exc}")
        return Read(parsed=parsed, etag=result.etag, last_modified=result.last_modified)

    return read


def tag_order(source: FeedSource) -> Callable[[str], Key | None]:
    """Newest-first order of a git remote's tags: by the source's version scheme, through its tagTemplate."""
    policy = source.versions

    def key(tag: str) -> Key | None:
        version = policy.version_of(tag)
        parsed = parse_version(version, policy.scheme) if version else None
        return parsed.key if parsed else None

    return key


async def _read_git(source: FeedSource, ctx: ReadContext) -> Read:
    limits = ctx.fetcher.limits
    async with ctx.git_slots:
        try:
            output = await list_remote(source.url, timeout=limits.deadline, max_bytes=limits.max_bytes)
        except GitRemoteError as exc:
            return Read(error=f"Feed {source.id}: {exc}")
    digest = refs_digest(output)
    etag, _ = _validators(ctx.prev)
    if etag == digest:
        return Read(not_modified=True, etag=digest)
    parsed = await asyncio.to_thread(
        parse_refs, output, event=source.event, branches=list(source.branches), tag_order=tag_order(source)
    )
    return Read(parsed=parsed, etag=digest)


READERS: dict[str, Reader] = {
    "feed": _http(parse_feed_document),
    "npm": _http(_in_thread(lambda body, _content_type: parse_npm(body))),
    "pypi": _http(_in_thread(lambda body, _content_type: parse_pypi(body))),
    "git": _read_git,
}


async def read_source(source: FeedSource, ctx: ReadContext) -> Read:
    return await READERS[source.kind](source, ctx)
