"""Every HTTP client of a process shares one TLS context (core.tls), and it still trusts what the environment
says (SSL_CERT_FILE): a feed served over HTTPS by a loopback server with its own certificate is polled."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchmoi.core.config import Settings
from patchmoi.core.service import Service
from patchmoi.core.tls import tls_context

from .conftest import PYTHON, ROOT

FEED = (
    b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>r</title><entry>'
    b"<id>tag:github.com,2008:Repository/1/v1.0.0</id><updated>2026-11-20T00:00:00Z</updated>"
    b'<link rel="alternate" href="https://github.com/acme/widget/releases/tag/v1.0.0"/><title>v1.0.0</title>'
    b"</entry></feed>"
)


@pytest.fixture
def https_feed(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/atom+xml")
            self.send_header("content-length", str(len(FEED)))
            self.end_headers()
            self.wfile.write(FEED)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/releases.atom", cert
    finally:
        server.shutdown()
        server.server_close()


async def test_the_clients_of_a_service_share_one_tls_context(tmp_path: Path) -> None:
    service = Service(Settings.from_env({"DATA_DIR": str(tmp_path / "data")}))
    try:
        clients = [service.http, service.dispatcher.client]
        contexts = {id(c._transport._pool._ssl_context) for c in clients}  # type: ignore[attr-defined]
        contexts.add(id(service.fetcher.session().connector._ssl))  # type: ignore[union-attr]
        assert contexts == {id(tls_context())}
    finally:
        await service.stop()


def test_a_feed_over_https_is_trusted_by_ssl_cert_file(tmp_path: Path, https_feed: tuple[str, Path]) -> None:
    url, cert = https_feed
    sources = tmp_path / "feed-sources.json"
    sources.write_text(
        json.dumps(
            {
                "sources": [
                    {
                        "id": "tls",
                        "provider": "github",
                        "url": url,
                        "event": "release",
                        "repo": {
                            "owner": "acme",
                            "name": "widget",
                            "fullName": "acme/widget",
                            "webUrl": "https://github.com/acme/widget",
                        },
                    }
                ]
            }
        )
    )
    env = {"PATH": os.environ["PATH"], "DATA_DIR": str(tmp_path / "data"), "FEED_SOURCES_PATH": str(sources)}

    def poll(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "patchmoi", "poll", "--once", "--json"],
            cwd=ROOT,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )

    untrusted = poll({})
    assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stdout + untrusted.stderr
    trusted = poll({"SSL_CERT_FILE": str(cert)})
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert json.loads(trusted.stdout)["sources"][0]["status"] == "primed"
