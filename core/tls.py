"""One TLS context for every HTTP client of a process.

Building one (certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR) costs about 47 ms on this machine, and
httpx and aiohttp build one per client unless given one: the poll fetcher, the service, the dispatcher and the
dashboard's remote client made a process start about 0.5 s slower. An SSLContext is safe to share.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()
