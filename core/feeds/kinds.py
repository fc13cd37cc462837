"""Kinds of upstream source, one reader each, chosen by the source's `kind` (the way nvchecker picks plugins).

| kind   | reads                                   | module                  | "not modified" by          |
|--------|-----------------------------------------|-------------------------|----------------------------|
| `feed` | Atom / RSS (GitHub, GitLab, Forgejo...) | `core.feeds.parse`      | ETag / Last-Modified       |
| `npm`  | an npm packument                        | `core.feeds.npm`        | ETag / Last-Modified       |
| `pypi` | the PyPI JSON API                       | `core.feeds.pypi`       | ETag / Last-Modified       |
| `git`  | tags and branch heads of a git remote   | `core.feeds.gitremote`  | digest of `git ls-remote`  |

Every reader returns a `Read`: a parsed document (entries newest first), "not modified", or an error in
operator terms. Parsing runs off the event loop: a big document takes a while, and other sources' fetches
(with their deadlines) go on meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from patchmoi.core.feeds.entries import FeedParseError, ParsedFeed
from patchmoi.core.feeds.fetch import Fetcher
from patchmoi.core.feeds.gitremote import GitRemoteError, list_remote, parse_refs, refs_digest
from patchmoi.core.feeds.npm import parse_npm
from patchmoi.core.feeds.parse import parse_xml_feed
from patchmoi.core.feeds.pypi import parse_pypi
from patchmoi.core.feeds.versions import Key, parse_version
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


def _http(parse: Callable[[bytes, str | None], ParsedFeed]) -> Reader:
    async def read(source: FeedSource, ctx: ReadContext) -> Read:
        etag, last_modified = _validators(ctx.prev)
        result = await ctx.fetcher.fetch(source.url, etag=etag, last_modified=last_modified)
        if result.error:
            return Read(error=f"Feed {source.id} {result.error}", retry_after=result.retry_after)
        if result.not_modified:
            return Read(not_modified=True, etag=result.etag, last_modified=result.last_modified)
        try:
            parsed = await asyncio.to_thread(parse, result.body, result.content_type)
        except FeedParseError as exc:
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
    "feed": _http(lambda body, content_type: parse_xml_feed(body, content_type=content_type)),
    "npm": _http(lambda body, _content_type: parse_npm(body)),
    "pypi": _http(lambda body, _content_type: parse_pypi(body)),
    "git": _read_git,
}


async def read_source(source: FeedSource, ctx: ReadContext) -> Read:
    return await READERS[source.kind](source, ctx)
