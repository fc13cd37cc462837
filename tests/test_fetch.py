"""The feed fetcher against real loopback servers: encodings, byte counts, proxies, cookies."""

from __future__ import annotations

import gzip
import zlib

import pytest

from patchmoi.core.feeds.fetch import Fetcher, FetchLimits
from tests.loopback import LoopbackServer, Reply, Request

BODY = b"<rss><channel><title>x</title></channel></rss>" * 200


@pytest.mark.parametrize(
    ("encoding", "payload"),
    [
        ("gzip", gzip.compress(BODY)),
        ("x-gzip", gzip.compress(BODY)),
        ("deflate", zlib.compress(BODY)),  # zlib-wrapped, as RFC 9110 says
        ("deflate", zlib.compress(BODY)[2:-4]),  # raw deflate, as some servers send it
        ("identity", BODY),
    ],
    ids=["gzip", "x-gzip", "deflate", "raw-deflate", "identity"],
)
async def test_bodies_are_decoded_and_the_wire_bytes_counted(
    server: LoopbackServer, encoding: str, payload: bytes
) -> None:
    server.route("/f", Reply(body=payload, headers={"content-encoding": encoding}))
    fetcher = Fetcher()
    try:
        result = await fetcher.fetch(f"{server.url}/f")
    finally:
        await fetcher.aclose()
    assert result.ok and result.body == BODY
    assert result.bytes_read == len(payload) == fetcher.bytes_downloaded
    assert server.requests[-1].headers["accept-encoding"] == "gzip, deflate"


async def test_a_compressed_body_is_capped_on_its_decoded_size(server: LoopbackServer) -> None:
    server.route("/f", Reply(body=gzip.compress(b"x" * 3_000_000), headers={"content-encoding": "gzip"}))
    fetcher = Fetcher(FetchLimits(max_bytes=1024 * 1024))
    try:
        result = await fetcher.fetch(f"{server.url}/f")
    finally:
        await fetcher.aclose()
    assert result.error == "response larger than 1 MiB (after decompression); refused"


async def test_unknown_encodings_and_bad_gzip_are_named(server: LoopbackServer) -> None:
    server.route("/br", Reply(body=b"\x0b\x02\x80hello\x03", headers={"content-encoding": "br"}))
    server.route("/gz", Reply(body=b"not gzip at all", headers={"content-encoding": "gzip"}))
    fetcher = Fetcher()
    try:
        br = await fetcher.fetch(f"{server.url}/br")
        gz = await fetcher.fetch(f"{server.url}/gz")
    finally:
        await fetcher.aclose()
    assert br.error == "unsupported Content-Encoding 'br' (asked for gzip or deflate)"
    assert gz.error == "response body is not valid gzip or deflate data"


async def test_http_proxy_from_the_environment_and_no_proxy(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY sends the request to the proxy (absolute-form target); NO_PROXY bypasses it."""
    server.route("/r.atom", Reply(body=BODY))
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.setenv("NO_PROXY", "bypassed.invalid")
    monkeypatch.delenv("no_proxy", raising=False)
    fetcher = Fetcher(FetchLimits(connect_timeout=2, deadline=5))
    try:
        via_proxy = await fetcher.fetch("http://feeds.example.invalid/r.atom")
        bypassed = await fetcher.fetch("http://bypassed.invalid/r.atom")
    finally:
        await fetcher.aclose()
    assert via_proxy.ok and via_proxy.body == BODY
    assert server.requests[-1].headers["host"] == "feeds.example.invalid"
    assert len(server.requests) == 1  # the bypassed host was resolved directly (and does not exist)
    assert bypassed.error is not None and bypassed.error.startswith("request failed: ")


async def test_one_feeds_cookies_are_not_sent_to_another(server: LoopbackServer) -> None:
    server.route("/a", Reply(body=BODY, headers={"set-cookie": "session=secret; Path=/"}))
    server.route("/b", Reply(body=BODY))
    fetcher = Fetcher()
    try:
        await fetcher.fetch(f"{server.url}/a")
        await fetcher.fetch(f"{server.url}/b")
    finally:
        await fetcher.aclose()
    assert "cookie" not in server.requests[-1].headers


async def test_what_httpx_read_is_still_read(server: LoopbackServer) -> None:
    """Long header lines, a cookie set on the way through a redirect, and a URL sent as it was written."""
    server.route("/long", Reply(body=BODY, headers={"x-long": "a" * 9000}))
    hops: list[str] = []

    def login(req: Request) -> Reply:
        hops.append(req.headers.get("cookie", ""))
        if "session=ok" in req.headers.get("cookie", ""):
            return Reply(body=BODY)
        return Reply(302, headers={"location": "/login", "set-cookie": "session=ok; Path=/"})

    server.route("/login", login)
    server.route_prefix("/raw/", lambda _r: Reply(body=BODY))
    fetcher = Fetcher()
    try:
        long = await fetcher.fetch(f"{server.url}/long")
        logged = await fetcher.fetch(f"{server.url}/login")
        raw = await fetcher.fetch(f"{server.url}/raw/a%7eb?r=%2F&t=a%20b")
        again = await fetcher.fetch(f"{server.url}/login")  # a new fetch starts without the cookie
    finally:
        await fetcher.aclose()
    assert long.ok and logged.ok and raw.ok and again.ok
    assert hops == ["", "session=ok", "", "session=ok"]
    raw_req = next(r for r in server.requests if r.path.startswith("/raw/"))
    assert raw_req.path == "/raw/a%7eb" and raw_req.query == {"r": ["/"], "t": ["a b"]}


async def test_no_proxy_entries_with_a_port(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.route("/r.atom", Reply(body=BODY))
    port = server.url.rsplit(":", 1)[1]
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.setenv("NO_PROXY", f"127.0.0.1:{port}")
    monkeypatch.delenv("no_proxy", raising=False)
    fetcher = Fetcher()
    try:
        result = await fetcher.fetch(f"{server.url}/r.atom")
    finally:
        await fetcher.aclose()
    assert result.ok, result.error


async def test_a_read_timeout_says_so(server: LoopbackServer) -> None:
    server.route("/slow", Reply(body=BODY, drip_every=3.0))
    fetcher = Fetcher(FetchLimits(read_timeout=1.0, deadline=10.0))
    try:
        result = await fetcher.fetch(f"{server.url}/slow")
    finally:
        await fetcher.aclose()
    assert result.error == "timed out (ReadTimeout)"
