"""Polite, bounded feed fetching over one shared aiohttp connection pool.

Every fetch has connect/read timeouts *and* an overall deadline (a server that drips a byte every few seconds
never trips a read timeout), a size cap counted on decoded bytes (so a gzip bomb stops at the cap),
at most five redirects and only to http(s), conditional GET (ETag / Last-Modified; a 304 to a request that
sent neither is an error, not "not modified"), and per-host
`Retry-After` after a 429 or 503. Every response is read or closed, so connections are reused.

Why aiohttp and not httpx (which the backend and Discord clients use): a poll pass is a thousand requests, and
per request httpx spent 1.4-2.1 ms of CPU where aiohttp spends 0.2-0.3 ms (1,000 GETs at 64 at a time on
loopback, #14); with httpx a cold pass was CPU-bound at 4-5x the network floor. Bodies are decompressed here
(not by aiohttp) so the cap counts decoded bytes as they come and `bytes_downloaded` counts what was sent.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
import urllib.request
import zlib
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
import yarl

from patchmoi.core import __version__
from patchmoi.core.config import redact_url
from patchmoi.core.errors import UpstreamError
from patchmoi.core.tls import tls_context

ACCEPT = "application/json, application/atom+xml, application/rss+xml, application/xml, text/xml;q=0.9"
USER_AGENT = f"patchmoi/{__version__} (+https://github.com/patchmoi/patchmoi)"
MAX_REDIRECTS = 5
HEADERS = {"user-agent": USER_AGENT, "accept": ACCEPT, "accept-encoding": "gzip, deflate"}
MAX_HEADER_BYTES = 64 * 1024  # one header line (httpx read far longer ones than aiohttp's 8 KiB default)


@dataclass(frozen=True)
class FetchLimits:
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    deadline: float = 20.0
    max_bytes: int = 5 * 1024 * 1024
    max_connections: int = 64


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


class _Decoder:
    """Content-Encoding gzip/deflate/identity, decoded a bounded piece at a time (`max_length`), so a small
    compressed chunk cannot expand past the cap in one call."""

    def __init__(self, encoding: str) -> None:
        enc = encoding.strip().lower()
        self.zlib: zlib._Decompress | None = None
        self.raw_deflate = False
        if enc in ("gzip", "x-gzip"):
            self.zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc == "deflate":  # zlib-wrapped as the RFC says, or raw deflate as some servers send
            self.zlib = zlib.decompressobj()
            self.raw_deflate = True
        elif enc not in ("", "identity"):
            raise FetchError(f"unsupported Content-Encoding {encoding[:40]!r} (asked for gzip or deflate)")

    def feed(self, chunk: bytes, room: int) -> bytes:
        """Decoded bytes of `chunk`, at most room + 1 (one more than fits tells the caller it is too big)."""
        if self.zlib is None:
            return chunk
        try:
            out = self.zlib.decompress(chunk, room + 1)
        except zlib.error:
            if not self.raw_deflate:
                raise FetchError("response body is not valid gzip or deflate data") from None
            self.zlib = zlib.decompressobj(-zlib.MAX_WBITS)  # the first bytes were not a zlib header
            self.raw_deflate = False
            return self.feed(chunk, room)
        self.raw_deflate = False  # the format is settled by the first bytes
        return out

    def more(self, room: int) -> bytes:
        """What `max_length` held back of the last chunk (it decoded to more than one call gave)."""
        if self.zlib is None or not self.zlib.unconsumed_tail:
            return b""
        return self.feed(self.zlib.unconsumed_tail, room)


class Fetcher:
    def __init__(self, limits: FetchLimits | None = None) -> None:
        self.limits = limits or FetchLimits()
        self._session: aiohttp.ClientSession | None = None  # made in the running loop, on first use
        self._proxies: dict[str, str] = {}
        self._proxy_for: dict[str, str | None] = {}
        self.host_not_before: dict[str, float] = {}
        self.requests = 0
        self.bytes_downloaded = 0

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            lim = self.limits
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=lim.max_connections, ssl=tls_context()),
                timeout=aiohttp.ClientTimeout(sock_connect=lim.connect_timeout, sock_read=lim.read_timeout),
                headers=HEADERS,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # one feed's cookies are not sent to another (see _fetch)
                max_line_size=MAX_HEADER_BYTES,  # aiohttp's default (8 KiB) refuses what httpx read
                max_field_size=MAX_HEADER_BYTES,
                # not trust_env: aiohttp would then look up netrc and the proxy on a thread for every request
                # (a third of a steady pass's CPU); the proxy variables are read once, below
            )
            self._proxies = urllib.request.getproxies_environment()
            self._proxy_for.clear()
        return self._session

    def proxy_for(self, url: str) -> str | None:
        """HTTP_PROXY / HTTPS_PROXY / ALL_PROXY for the URL's scheme, unless NO_PROXY covers its host."""
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        if key not in self._proxy_for:
            proxy = self._proxies.get(parts.scheme) or self._proxies.get("all")
            host = parts.hostname or ""
            with_port = f"{host}:{parts.port}" if parts.port else host  # `host:port` entries too, as httpx did
            if proxy and urllib.request.proxy_bypass(with_port):  # NO_PROXY (on Linux: the environment only)
                proxy = None
            self._proxy_for[key] = proxy or None
        return self._proxy_for[key]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

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
        except aiohttp.ServerTimeoutError as exc:  # (a TimeoutError too: it goes first)
            return FetchResult(url=url, error=f"timed out ({_timeout_kind(exc)})")
        except TimeoutError:
            return FetchResult(url=url, error=f"no complete response within {self.limits.deadline:.0f}s (deadline)")
        except (aiohttp.ClientError, ValueError) as exc:  # ValueError: yarl on a URL it cannot build
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
        session = self.session()
        jar: aiohttp.CookieJar | None = None  # cookies set on the way through redirects, for this fetch only
        for _ in range(MAX_REDIRECTS + 1):
            if urlsplit(current).scheme not in ("http", "https"):
                raise FetchError(f"refused redirect to a non-http(s) URL ({urlsplit(current).scheme}:)")
            self.requests += 1
            target = as_sent(current)
            cookies = jar.filter_cookies(yarl.URL(current)) if jar is not None else None
            proxy = self.proxy_for(current)
            async with session.get(
                target, headers=headers, allow_redirects=False, proxy=proxy, cookies=cookies
            ) as resp:
                if resp.status in (301, 302, 303, 307, 308) and "location" in resp.headers:
                    if resp.cookies:
                        jar = jar or aiohttp.CookieJar(unsafe=True)
                        jar.update_cookies(resp.cookies, resp.url)
                    current = urljoin(current, resp.headers["location"])
                    continue
                result = FetchResult(
                    url=current,
                    status=resp.status,
                    etag=resp.headers.get("etag"),
                    last_modified=resp.headers.get("last-modified"),
                    content_type=resp.headers.get("content-type"),
                )
                if resp.status == 304:
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
                if resp.status in (429, 503):
                    delay = parse_retry_after(resp.headers.get("retry-after"))
                    if delay is None:
                        delay = 60.0
                    self.host_not_before[urlsplit(current).netloc] = time.monotonic() + delay
                    result.error = f"returned {resp.status}; backing off this host for {delay:.0f}s"
                    result.retry_after = delay
                    return result
                if not 200 <= resp.status < 300:
                    result.error = f"returned {resp.status}"
                    return result
                result.body, result.bytes_read = await self._body(resp)
                self.bytes_downloaded += result.bytes_read
                return result
        raise FetchError(f"more than {MAX_REDIRECTS} redirects")

    async def _body(self, resp: aiohttp.ClientResponse) -> tuple[bytes, int]:
        """The decoded body and the bytes that came over the wire; FetchError past `max_bytes` decoded."""
        cap = self.limits.max_bytes
        decoder = _Decoder(resp.headers.get("content-encoding", ""))
        chunks: list[bytes] = []
        total = wire = 0
        async for chunk in resp.content.iter_any():
            wire += len(chunk)
            piece = decoder.feed(chunk, cap - total)
            while piece:
                total += len(piece)
                if total > cap:
                    raise FetchError(f"response larger than {cap // (1024 * 1024)} MiB (after decompression); refused")
                chunks.append(piece)
                piece = decoder.more(cap - total)
        return b"".join(chunks), wire


_AS_WRITTEN = re.compile(r"[!-~]+")  # printable ASCII, no space: a URL that is already encoded


def as_sent(url: str) -> yarl.URL | str:
    """The URL as its author wrote it (`%7e` stays `%7e`, `?r=%2F` stays encoded, as httpx sent them), unless
    it has characters that must be encoded first (spaces, non-ASCII): then yarl encodes it."""
    return yarl.URL(url, encoded=True) if _AS_WRITTEN.fullmatch(url) else url


def _timeout_kind(exc: aiohttp.ServerTimeoutError) -> str:
    text = str(exc).lower()
    return "ConnectTimeout" if "connect" in text else "ReadTimeout" if "read" in text else type(exc).__name__


def _safe(text: str) -> str:
    """Error text may embed URLs; strip credentials and queries."""
    words = []
    for word in text.split():
        stripped = word.strip("'\"<>(),[]")
        words.append(word.replace(stripped, redact_url(stripped)) if "://" in stripped else word)
    return " ".join(words)[:300]
