"""Polite, bounded feed fetching over one shared httpx client.

Every fetch has connect/read timeouts *and* an overall deadline (a server that drips a byte every few seconds
never trips a read timeout), a size cap counted on decoded bytes (so a gzip bomb stops at the cap),
at most five redirects and only to http(s), conditional GET (ETag / Last-Modified; a 304 to a request that
sent neither is an error, not "not modified"), and per-host
`Retry-After` after a 429 or 503. Every response is read or closed, so connections are reused.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
import zlib
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from patchmoi.core import __version__
from patchmoi.core.config import redact_url
from patchmoi.core.errors import UpstreamError
from patchmoi.core.tls import tls_context

ACCEPT = "application/json, application/atom+xml, application/rss+xml, application/xml, text/xml;q=0.9"
USER_AGENT = f"patchmoi/{__version__} (+https://github.com/patchmoi/patchmoi)"
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class FetchLimits:
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    deadline: float = 20.0
    max_bytes: int = 5 * 1024 * 1024
    max_connections: int = 64
    shards: int = 8


@dataclass
class FetchResult:
    url: str
    status: int = 0
    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None
    not_modified: bool = False
    error: str | None = None
    retry_after: float | None = None
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


class FetchError(UpstreamError):
    """A feed or registry document could not be fetched (the message names the URL, without credentials)."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), capped at one day."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (now if now is not None else time.time())
    return max(0.0, min(seconds, 86400.0))


class Fetcher:
    def __init__(self, limits: FetchLimits | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.limits = limits or FetchLimits()
        lim = self.limits
        per_shard = max(1, lim.max_connections // lim.shards)
        # Several small pools, not one big one: httpcore's pool bookkeeping grows with pool size x waiting
        # requests, and 8 pools of 8 measured 3-4x faster than one pool of 64 (bench/poll_bench.py).
        self.clients = [
            httpx.AsyncClient(
                timeout=httpx.Timeout(lim.read_timeout, connect=lim.connect_timeout),
                limits=httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard),
                headers={"user-agent": USER_AGENT, "accept": ACCEPT, "accept-encoding": "gzip, deflate"},
                follow_redirects=False,
                transport=transport,
                verify=tls_context(),
            )
            for _ in range(lim.shards)
        ]
        self.host_not_before: dict[str, float] = {}
        self.requests = 0
        self.bytes_downloaded = 0

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()

    def client_for(self, url: str) -> httpx.AsyncClient:
        """A stable shard per URL, so a feed's polls reuse one kept-alive connection."""
        return self.clients[zlib.crc32(url.encode()) % len(self.clients)]

    def host_wait(self, url: str) -> float:
        host = urlsplit(url).netloc
        return max(0.0, self.host_not_before.get(host, 0.0) - time.monotonic())

    async def fetch(self, url: str, *, etag: str | None = None, last_modified: str | None = None) -> FetchResult:
        wait = self.host_wait(url)
        if wait > 0:
            return FetchResult(
                url=url, error=f"host asked us to wait (Retry-After); next try in {wait:.0f}s", retry_after=wait
            )
        try:
            async with asyncio.timeout(self.limits.deadline):
                return await self._fetch(url, etag, last_modified)
        except TimeoutError:
            return FetchResult(url=url, error=f"no complete response within {self.limits.deadline:.0f}s (deadline)")
        except httpx.TimeoutException as exc:
            return FetchResult(url=url, error=f"timed out ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            return FetchResult(url=url, error=f"request failed: {type(exc).__name__}: {_safe(str(exc))}")
        except FetchError as exc:
            return FetchResult(url=url, error=str(exc))

    async def _fetch(self, url: str, etag: str | None, last_modified: str | None) -> FetchResult:
        headers = {}
        if etag:
            headers["if-none-match"] = etag
        if last_modified:
            headers["if-modified-since"] = last_modified
        current = url
        client = self.client_for(url)
        for _ in range(MAX_REDIRECTS + 1):
            if urlsplit(current).scheme not in ("http", "https"):
                raise FetchError(f"refused redirect to a non-http(s) URL ({urlsplit(current).scheme}:)")
            self.requests += 1
            async with client.stream("GET", current, headers=headers) as resp:
                if resp.status_code in (301, 302, 303, 307, 308) and "location" in resp.headers:
                    await resp.aclose()
                    current = urljoin(current, resp.headers["location"])
                    continue
                result = FetchResult(
                    url=current,
                    status=resp.status_code,
                    etag=resp.headers.get("etag"),
                    last_modified=resp.headers.get("last-modified"),
                    content_type=resp.headers.get("content-type"),
                )
                if resp.status_code == 304:
                    await resp.aread()
                    if not headers:
                        # "not modified" since what? Nothing was asked; taking it as "nothing new" would hide
                        # every later entry for as long as the server keeps answering so.
                        result.error = (
                            "server answered 304 Not Modified to an unconditional request "
                            "(no If-None-Match or If-Modified-Since was sent)"
                        )
                        return result
                    result.not_modified = True
                    result.etag = result.etag or etag
                    result.last_modified = result.last_modified or last_modified
                    return result
                if resp.status_code in (429, 503):
                    delay = parse_retry_after(resp.headers.get("retry-after"))
                    await resp.aclose()
                    if delay is None:
                        delay = 60.0
                    self.host_not_before[urlsplit(current).netloc] = time.monotonic() + delay
                    result.error = f"returned {resp.status_code}; backing off this host for {delay:.0f}s"
                    result.retry_after = delay
                    return result
                if not 200 <= resp.status_code < 300:
                    await resp.aclose()
                    result.error = f"returned {resp.status_code}"
                    return result
                chunks = []
                total = 0
                async for chunk in resp.aiter_bytes():
                    total += len(chunk)
                    if total > self.limits.max_bytes:
                        await resp.aclose()
                        raise FetchError(
                            f"response larger than {self.limits.max_bytes // (1024 * 1024)} MiB (after decompression);"
                            " refused"
                        )
                    chunks.append(chunk)
                result.body = b"".join(chunks)
                result.bytes_read = resp.num_bytes_downloaded
                self.bytes_downloaded += resp.num_bytes_downloaded
                return result
        raise FetchError(f"more than {MAX_REDIRECTS} redirects")


def _safe(text: str) -> str:
    """Error text from httpx may embed URLs; strip credentials and queries."""
    words = []
    for word in text.split():
        stripped = word.strip("'\"<>(),")
        words.append(word.replace(stripped, redact_url(stripped)) if "://" in stripped else word)
    return " ".join(words)[:300]
