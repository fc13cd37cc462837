"""Crash driver: SIGKILL a running `patchmoi serve` at random moments during intake and dispatch, then check.

A loopback feed publishes a new upstream release every few hundred milliseconds for two sources: one
dispatched to an HTTP workspace backend on 127.0.0.1 (idempotent by event id, counting every POST and its
`webhook-id`), one rebuilt locally in a real fork (its verify step sleeps, so kills land mid-run too). The
driver starts `patchmoi serve`, reads the API while it runs (every record it sees is "acknowledged"), kills
the process with SIGKILL after a random delay, and starts it again, `--kills` times. A last clean run drains
everything, then it prints the figures and exits 1 if any check fails:

- acknowledged records lost (seen through the API before a kill, missing after): must be 0;
- flow events without exactly one dispatch record: must be 0;
- backend keys (`webhook-id`) delivered vs flow events for the backend: one key per event; repeats of a key
  (a re-send after a kill before its record) are counted and reported, never a second key;
- local attempts left `started` (a backend's stay `started` until its runs finish): must be 0.

    .venv/bin/python bench/crash_driver.py [--kills 30] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.feeds import atom_releases, source  # noqa: E402
from tests.gitfixture import Forge, git  # noqa: E402
from tests.loopback import FakeBackend, LoopbackServer, Reply, free_port  # noqa: E402

PYTHON = str(Path(sys.executable))


class Releases:
    """Cuts upstream releases (a tag in the upstream repo, fetched by the fork) and serves them as a feed."""

    def __init__(self, forge: Forge, every: float) -> None:
        self.forge = forge
        self.every = every
        self.tags: list[str] = ["v1.0.0"]
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def feed(self, _req: Any) -> Reply:
        with self.lock:
            return Reply(body=atom_releases(list(reversed(self.tags[-30:])), repo="acme/widget"))

    def run(self, total: int) -> None:
        n = 0
        while not self.stop.is_set() and n < total:
            n += 1
            tag = f"v1.{n}.0"
            (self.forge.upstream / "README").write_text(f"release {n}\n")
            git(self.forge.upstream, "commit", "-q", "-am", f"release {tag}")
            git(self.forge.upstream, "tag", tag)
            with self.lock:
                self.tags.append(tag)
            self.stop.wait(self.every)


def start_serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [PYTHON, "-m", "patchmoi", "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"serve did not start; see {log}")


def observe(port: int, seen: dict[str, set[str]]) -> None:
    """Read the API like a client would: every id it returns counts as acknowledged."""
    base = f"http://127.0.0.1:{port}"
    for path, key in (
        ("/flow-events?limit=500", "events"),
        ("/maintenance-attempts?limit=500", "attempts"),
        ("/workspace-dispatches?limit=500", "dispatches"),
    ):
        try:
            body = httpx.get(base + path, timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return
        for record in body.get(key, []):
            seen[key].add(str(record.get("id") or f"{record.get('eventId')}@{record.get('createdAt')}"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (data, fork, serve.log)")
    ap.add_argument("--every", type=float, default=0.4, help="seconds between upstream releases")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="patchmoi-crash-"))
    server = LoopbackServer().start()
    try:
        return drive(args, rng, root, server)
    finally:
        server.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def drive(args: argparse.Namespace, rng: random.Random, root: Path, server: LoopbackServer) -> int:
    forge = Forge(root / "forge", config='[fetch]\nallowFetch = true\n[verify]\ncommands = ["sleep 0.2"]\n')
    releases = Releases(forge, args.every)
    server.route("/releases.atom", releases.feed)
    backend = FakeBackend(server, secret="whsec_c2VjcmV0LWZvci10aGUtY3Jhc2gtZHJpdmVy")
    http_target = {
        "mode": "workspace_flow",
        "eventType": "upstream.release",
        "workspaceUrl": backend.url,
        "workspaceSecretEnv": "CRASH_SECRET",
    }
    local_target = {
        "mode": "workspace_flow",
        "eventType": "upstream.release",
        "transport": "local",
        "workspace": str(forge.fork),
    }
    sources = [
        source("http", f"{server.url}/releases.atom", target=http_target, repo="acme/widget"),
        source("local", f"{server.url}/releases.atom", target=local_target, repo="acme/widget"),
    ]
    for s in sources:
        s["pollIntervalSeconds"] = 0.2
    (root / "feed-sources.json").write_text(json.dumps({"sources": sources}))
    data = root / "data"
    env = {
        "PATH": os.environ["PATH"],
        "DATA_DIR": str(data),
        "FEED_SOURCES_PATH": str(root / "feed-sources.json"),
        "PATCHMOI_MIN_POLL_SECONDS": "0.2",
        "CRASH_SECRET": backend.secret or "",
        "HOME": str(root),
    }
    port = free_port()
    log = root / "serve.log"
    seen: dict[str, set[str]] = {"events": set(), "attempts": set(), "dispatches": set()}

    proc = start_serve(env, port, log)  # prime the feeds before the first release
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (data / "feed-state.json").exists():
        time.sleep(0.1)
    time.sleep(1.0)
    cutter = threading.Thread(target=releases.run, args=(args.kills * 2,), daemon=True)
    cutter.start()
    started = time.monotonic()
    for kill in range(args.kills):
        if kill:
            proc = start_serve(env, port, log)
        until = time.monotonic() + rng.uniform(0.3, 2.5)
        while time.monotonic() < until:
            observe(port, seen)
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    releases.stop.set()
    cutter.join()
    chaos = time.monotonic() - started

    # the clean run: recovery finishes, every release is polled, dispatched, rebuilt
    proc = start_serve(env, port, log)
    settle = time.monotonic() + 180
    quiet_since = time.monotonic()
    last = ""
    while time.monotonic() < settle:
        body = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
        attempts = [
            a
            for a in httpx.get(
                f"http://127.0.0.1:{port}/maintenance-attempts?status=started&limit=500", timeout=5
            ).json()["attempts"]
            if not a.get("workspaceBackendUrl")
        ]
        state = json.dumps(
            [
                body["dispatchQueueDepth"],
                body["localRunsInFlight"],
                len(attempts),
                body["recovery"]["backlog"],
                Path(data / "flow-events.jsonl").stat().st_size,
            ]
        )
        if state != last:
            last, quiet_since = state, time.monotonic()
        elif time.monotonic() - quiet_since > 3 and not attempts and body["dispatchQueueDepth"] == 0:
            break
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)

    from patchmoi.core.store import Kind, Store

    store = Store(data)
    events = {e["id"]: e for e in (r for _, r in store.scan(Kind.EVENTS))}
    dispatches: dict[str, int] = {}
    for d in (r for _, r in store.scan(Kind.DISPATCHES)):
        if d.get("operation") == "dispatch":
            dispatches[str(d["eventId"])] = dispatches.get(str(d["eventId"]), 0) + 1
    attempts = store.all_attempts()
    dispatch_keys = {f"{d.get('eventId')}@{d.get('createdAt')}" for d in (r for _, r in store.scan(Kind.DISPATCHES))}
    lost = {
        "events": seen["events"] - set(events),
        "attempts": seen["attempts"] - {a["id"] for a in attempts},
        "dispatches": seen["dispatches"] - dispatch_keys,
    }
    not_once = {eid: n for eid, n in dispatches.items() if n != 1}
    undispatched = [eid for eid in events if eid not in dispatches]
    http_events = [eid for eid, e in events.items() if e.get("payload", {}).get("sourceId") == "http"]
    keys = backend.webhook_ids
    # a backend's attempt stays `started` until the backend's runs finish (`sync`); a local one never may
    stuck = [a["id"] for a in attempts if a.get("status") == "started" and not a.get("workspaceBackendUrl")]
    local_runs = list((r for _, r in store.scan(Kind.RUNS)))
    interrupted = {r["id"] for r in local_runs if "interrupted" in str(r.get("error") or "")}
    orphans = {r["id"] for r in local_runs if str(r.get("error") or "").startswith("orphan")}
    tags = len(releases.tags) - 1

    print(f"crash driver: {args.kills} SIGKILLs of patchmoi serve over {chaos:.1f} s, seed {args.seed}")
    print(f"upstream releases cut                 {tags} (x2 sources)")
    print(f"flow events recorded                  {len(events)}")
    print(f"records acknowledged by the API       {sum(len(v) for v in seen.values())}")
    print(f"acknowledged records lost             {sum(len(v) for v in lost.values())}")
    print(f"flow events with != 1 dispatch        {len(not_once) + len(undispatched)}")
    print(
        f"backend: events / POSTs / keys        {len(http_events)} / {backend.posts} / {len(set(keys))}"
        f"  (repeats of a key: {len(keys) - len(set(keys))})"
    )
    print(f"attempts / local ones stuck in started {len(attempts)} / {len(stuck)}")
    print(f"local runs / closed as interrupted    {len(local_runs)} / {len(interrupted)} (orphans {len(orphans)})")
    ok = (
        not any(lost.values())
        and not not_once
        and not undispatched
        and not stuck
        and set(keys) == set(http_events)
        and len(events) == 2 * tags
    )
    if len(events) != 2 * tags:
        print(f"MISSED ENTRIES: {2 * tags - len(events)} of {2 * tags} releases have no flow event")
    print("result                                " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
