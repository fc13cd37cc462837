"""Derived attempt states: the operator queue (ARCHITECTURE §4, "the loop closes").

A state is computed from the attempts themselves, never stored or edited:

- `open`: needs a person now: needs_intervention, blocked or failed, with no later success for the same
  fork and release, and no later success of another release of that fork.
- `resolved`: it failed, and a later attempt for the same fork and release succeeded.
- `superseded`: a later release of the same fork succeeded (or a newer update of the same branch was
  rebuilt instead of it), so nobody needs to look at it.
- `ready`: a `changed` rebuild whose candidate waits to be adopted.
- `adopted`: its candidate was adopted (the fork moved to it).
- `running`: started, no outcome yet. `done`: anything else (completed, skipped).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from patchmoi.core.records import NEEDS_PERSON, SUCCESS, AttemptStatus

__all__ = ["NEEDS_PERSON", "STATES", "SUCCESS", "derive_states", "fork_key"]

STATES = ("open", "ready", "running", "resolved", "superseded", "adopted", "done")


def fork_key(attempt: Mapping[str, Any]) -> str:
    """The fork an attempt maintains: its local checkout, else its backend and upstream repo."""
    workspace = attempt.get("workspace")
    if isinstance(workspace, str) and workspace:
        return "local:" + workspace
    return f"{attempt.get('workspaceBackendUrl') or '-'}|{attempt.get('upstreamRepo') or '-'}"


def release_key(attempt: Mapping[str, Any]) -> str:
    for key in ("upstreamTag", "upstreamSha", "upstreamRef", "eventId"):
        value = attempt.get(key)
        if isinstance(value, str) and value:
            return f"{key}:{value}"
    return "-"


def derive_states(attempts: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """State of every attempt given (the latest record of each, any order) by attempt id."""
    ordered = sorted(attempts, key=lambda a: str(a.get("createdAt") or ""), reverse=True)
    succeeded: dict[str, set[str]] = {}  # fork -> releases with a success later than the attempt at hand
    states: dict[str, str] = {}
    for attempt in ordered:
        status = attempt.get("status")
        fork, release = fork_key(attempt), release_key(attempt)
        later = succeeded.get(fork, set())
        if attempt.get("adoption"):
            state = "adopted"
        elif status in NEEDS_PERSON:
            state = "resolved" if release in later else "superseded" if later else "open"
        elif status in SUCCESS:
            state = "superseded" if later else "ready" if status == "changed" else "done"
        elif status == AttemptStatus.STARTED:
            state = "running"
        else:
            state = "superseded" if attempt.get("supersededBy") else "done"
        states[str(attempt.get("id"))] = state
        if status in SUCCESS or attempt.get("adoption"):
            succeeded.setdefault(fork, set()).add(release)
    return states
