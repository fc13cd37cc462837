"""The transport registry: one transport module each (`local`, `http`, `ws`), chosen by name or URL scheme.

The dispatcher, doctor and service ask the registry and the transport's capabilities (core.dispatch.contract);
none of them branches on a transport's name, so a new transport is one module and one line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from patchmoi.core.dispatch.actions import ACTIONS_TRANSPORT
from patchmoi.core.dispatch.contract import Backend, Transport
from patchmoi.core.dispatch.http import HTTP_TRANSPORT
from patchmoi.core.dispatch.local import LOCAL_TRANSPORT
from patchmoi.core.dispatch.ws import WS_TRANSPORT
from patchmoi.core.errors import ConfigError

REGISTRY: dict[str, Transport] = {t.name: t for t in (LOCAL_TRANSPORT, ACTIONS_TRANSPORT, HTTP_TRANSPORT, WS_TRANSPORT)}
LOCAL = LOCAL_TRANSPORT.name


def by_name(name: str) -> Transport:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown transport {name!r}; known: {', '.join(REGISTRY)}") from None


def for_url(url: str) -> Transport:
    scheme = url.split(":", 1)[0].lower()
    for transport in REGISTRY.values():
        if scheme in transport.schemes:
            return transport
    known = sorted(s for t in REGISTRY.values() for s in t.schemes)
    raise ConfigError(f"no transport for {scheme}:// backend URLs; known schemes: {', '.join(known)}")


def backend_for_url(url: str, secret: str | None = None) -> Backend:
    return Backend(for_url(url).name, url=url, secret=secret)


def local_backend(workspace: Path | None) -> Backend:
    return Backend(LOCAL, workspace=workspace)


def actions_backend(workspace: Path) -> Backend:
    return Backend(ACTIONS_TRANSPORT.name, workspace=workspace)


def record_transport(record: Mapping[str, Any]) -> Transport | None:
    """The transport a stored dispatch or attempt went through (None when unknown)."""
    name = record.get("transport")
    return REGISTRY.get(name) if isinstance(name, str) else None
