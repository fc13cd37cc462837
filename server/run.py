"""`patchmoi serve`: uvicorn with the app's lifespan (start/stop the core service), JSON access logs."""

from __future__ import annotations

import sys

import uvicorn

from core.config import Settings, is_loopback
from core.errors import UsageError
from core.log import configure, log_event
from server.app import create_app


def serve(settings: Settings, *, poll: bool = True, insecure_no_auth: bool = False) -> int:
    if not is_loopback(settings.host) and not settings.admin_token and not insecure_no_auth:
        raise UsageError(
            f"refusing to serve on {settings.host} without PATCH_ADMIN_TOKEN: anyone who can reach it could "
            "retry and replay events. Set PATCH_ADMIN_TOKEN, bind 127.0.0.1, or pass --insecure-no-auth."
        )
    configure()
    app = create_app(settings, poll=poll)
    log_event("server.listening", host=settings.host, port=settings.port, auth=bool(settings.admin_token))
    print(f"patchmoi serving on http://{settings.host}:{settings.port} (data {settings.data_dir})", file=sys.stderr)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, access_log=False, log_level="warning",
                            lifespan="on", timeout_graceful_shutdown=15)
    uvicorn.Server(config).run()
    return 0
