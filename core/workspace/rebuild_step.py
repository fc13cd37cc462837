"""The built-in `rebuild` step: `python -m patchmoi.core.workspace.rebuild_step` with the step context on stdin.

It maps the event to an upstream base (release → tag, branch update → sha or the upstream branch), runs
the patch-stack rebuild, and prints `FLOW_RESULT {json}` as its last stdout line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from patchmoi.core.errors import ConfigError
from patchmoi.core.workspace.forkconfig import load_fork_config
from patchmoi.core.workspace.rebuild import Rebuild


def base_for(event: dict[str, Any], upstream_remote: str) -> tuple[str, str, str] | str:
    """(base, label, kind) for an event, or a reason it cannot be rebuilt."""
    payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
    assert isinstance(payload, dict)
    if event.get("type") == "upstream.release":
        tag = payload.get("tag")
        return (str(tag), str(tag), "tag") if tag else "upstream.release event has no payload.tag"
    if event.get("type") == "upstream.branch_update":
        sha, ref = payload.get("sha"), payload.get("ref")
        if sha:
            return str(sha), str(sha)[:12], "sha"
        if isinstance(ref, str) and ref.startswith("refs/heads/"):
            branch = ref[len("refs/heads/") :]
            return f"refs/remotes/{upstream_remote}/{branch}", branch, "branch"
        return "upstream.branch_update event has neither payload.sha nor a refs/heads/ ref"
    return f"the rebuild step does not handle {event.get('type')!r} events"


def run(context: dict[str, Any]) -> dict[str, Any]:
    event = context.get("event") or {}
    workspace = Path(context.get("workspace") or ".").absolute()
    if not context.get("dataDir"):
        return {
            "status": "failed",
            "message": "the step context has no dataDir: the rebuild worktrees need a place outside the fork checkout",
        }
    data_dir = Path(context["dataDir"]).absolute()
    try:
        config = load_fork_config(workspace)
    except ConfigError as exc:
        return {"status": "failed", "message": str(exc)}
    payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
    repo = payload.get("repo") if isinstance(payload, dict) else None
    if config.upstream_repo and repo and repo != config.upstream_repo:
        return {"status": "skipped", "message": f"event is for {repo}, this fork follows {config.upstream_repo}"}
    target = base_for(event, config.upstream_remote)
    if isinstance(target, str):
        return {"status": "skipped", "message": target}
    base, label, kind = target
    return Rebuild(workspace, data_dir / "worktrees", config).run(
        base, label=label, key=str(event.get("id")), kind=kind
    )


def main() -> None:
    try:
        context = json.load(sys.stdin)
    except ValueError as exc:
        result: dict[str, Any] = {"status": "failed", "message": f"step context on stdin is not JSON: {exc}"}
    else:
        result = run(context)
    print(result.get("message", ""), file=sys.stderr)
    print("FLOW_RESULT " + json.dumps(result, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
