"""Injected faults: short and failing writes, cut state files, crash backlogs, killed runs, read-only and
full disks, lines that are not strict JSON, concurrent retries, and the idempotency keys of external effects."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from patchmoi.core.errors import StoreWriteError
from patchmoi.core.store import Kind, Store

from .conftest import PYTHON, ROOT, present
from .feeds import atom_releases, source
from .gitfixture import Forge
from .loopback import FakeBackend, LoopbackServer, Reply, free_port

PATCHMOI = str(Path(PYTHON).with_name("patchmoi"))


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "patchmoi", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": os.environ["PATH"], **(env or {})},
    )


# -- state writes --------------------------------------------------------------------------------------------
def test_short_writes_are_completed_and_a_failed_write_never_publishes_a_cut_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "data")
    store.write_state({"src": {"lastSeenId": "a", "seen": ["a"]}})
    store.records.flush_feed_states()  # type: ignore[attr-defined]
    good = (store.data_dir / "feed-state.json").read_bytes()
    real_write = os.write

    def short(fd: int, data: Any) -> int:  # the kernel may write less than asked
        return real_write(fd, bytes(data[: max(1, len(data) // 3)]))

    monkeypatch.setattr("patchmoi.core.fsutil.os.write", short)
    big = {f"src{i}": {"lastSeenId": f"e{i}", "seen": [f"e{i}-{j}" for j in range(50)]} for i in range(40)}
    store.write_state(big)  # saves these sources, keeps the others
    assert Store(store.data_dir).read_state() == {"src": {"lastSeenId": "a", "seen": ["a"]}, **big}
    store.records.flush_feed_states()  # type: ignore[attr-defined]  # the snapshot, through the same short writes
    assert json.loads((store.data_dir / "feed-state.json").read_text()) == {
        "src": {"lastSeenId": "a", "seen": ["a"]},
        **big,
    }

    def full(fd: int, data: Any) -> int:
        if len(data) > 100:
            real_write(fd, bytes(data[:100]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("patchmoi.core.fsutil.os.write", full)
    before = (store.data_dir / "feed-state.json").read_bytes()
    journal = store.data_dir / "feed-state.journal"
    lines = journal.read_bytes() if journal.exists() else b""
    with pytest.raises(StoreWriteError, match="No space left on device"):
        store.write_state({"other": {"lastSeenId": "x"}})
    assert (store.data_dir / "feed-state.json").read_bytes() == before != good  # untouched, not cut
    assert (journal.read_bytes() if journal.exists() else b"") == lines  # no half line left behind
    monkeypatch.setattr("patchmoi.core.fsutil.os.write", real_write)
    store.write_state({"other": {"lastSeenId": "x"}})
    monkeypatch.setattr("patchmoi.core.fsutil.os.write", full)
    store.records.flush_feed_states()  # type: ignore[attr-defined]  # a failed fold is logged, never raised
    assert (store.data_dir / "feed-state.json").read_bytes() == before  # ... and leaves the snapshot whole
    monkeypatch.setattr("patchmoi.core.fsutil.os.write", real_write)
    assert Store(store.data_dir).read_state()["other"] == {"lastSeenId": "x"}  # kept in the set-aside journal
    store.records.flush_feed_states()  # type: ignore[attr-defined]
    assert json.loads((store.data_dir / "feed-state.json").read_text())["other"] == {"lastSeenId": "x"}
    assert not [p for p in store.data_dir.iterdir() if p.name.endswith(".tmp")]


def test_a_cut_state_file_is_kept_aside_and_rebuilt_from_the_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = Store(data)
    for i in range(3):
        store.append(
            Kind.SIGNALS,
            {"sourceId": "rel", "entryId": f"tag:v{i}", "provider": "github", "event": "release", "title": f"v{i}"},
        )
    (store.data_dir / "feed-state.json").write_text('{"rel": {"lastSeenId": "tag:v2", "se')  # published cut
    from patchmoi.core.config import Settings
    from patchmoi.core.service import Service

    service = Service(Settings.from_env({"DATA_DIR": str(data)}))  # starts: never stopped by the file
    state = service.poller.state.data
    assert state["rel"]["lastSeenId"] == "tag:v2" and set(state["rel"]["seen"]) == {"tag:v0", "tag:v1", "tag:v2"}
    aside = [p for p in data.iterdir() if p.name.startswith("feed-state.json.corrupt-")]
    assert len(aside) == 1 and aside[0].read_text() == '{"rel": {"lastSeenId": "tag:v2", "se'
    health = service.health()
    assert health["status"] == "degraded" and "rebuilt from feed-events.jsonl" in health["stateProblem"]
    assert json.loads((store.data_dir / "feed-state.json").read_text())["rel"]["lastSeenId"] == "tag:v2"


def test_data_dir_and_its_index_are_created_0700(tmp_path: Path) -> None:
    store = Store(tmp_path / "new" / "data")
    store.append(Kind.EVENTS, {"id": "e1", "type": "t"})
    assert store.get_event("e1") is not None
    for path in (tmp_path / "new", tmp_path / "new" / "data", tmp_path / "new" / "data" / ".index"):
        assert path.stat().st_mode & 0o777 == 0o700, path
    assert (tmp_path / "new" / "data" / "flow-events.jsonl").stat().st_mode & 0o777 == 0o600


# -- recovery ------------------------------------------------------------------------------------------------
def feed_env(tmp_path: Path, server: LoopbackServer, target: dict[str, Any], **extra: str) -> dict[str, str]:
    server.route("/r.atom", Reply(body=atom_releases(["v1"])))
    sources = tmp_path / "feed-sources.json"
    sources.write_text(json.dumps({"sources": [source("rel", f"{server.url}/r.atom", target=target)]}))
    return {"DATA_DIR": str(tmp_path / "data"), "FEED_SOURCES_PATH": str(sources), **extra}


def test_a_2000_event_backlog_is_dispatched_once_by_the_next_poll(tmp_path: Path, server: LoopbackServer) -> None:
    backend = FakeBackend(server)
    env = feed_env(
        tmp_path, server, {"mode": "workspace_flow", "eventType": "upstream.release", "workspaceUrl": backend.url}
    )
    store = Store(tmp_path / "data")
    store.append_many(
        Kind.EVENTS,
        [
            {
                "id": f"patch:rel:tag:v{i}:upstream.release",
                "type": "upstream.release",
                "source": "patch",
                "payload": {"sourceId": "rel", "repo": "openai/codex", "tag": f"v{i}"},
            }
            for i in range(2000)
        ],
    )
    # 300 of them had been dispatched before the crash, 100 without their attempt being written
    for i in range(300):
        store.append(
            Kind.DISPATCHES,
            {
                "eventId": f"patch:rel:tag:v{i}:upstream.release",
                "operation": "dispatch",
                "status": "dispatched",
                "transport": "workspace-http",
                "createdAt": f"2026-01-01T00:00:{i // 10:02d}.{i % 10:03d}Z",
            },
        )
        if i >= 100:
            store.append(
                Kind.ATTEMPTS,
                {
                    "id": f"patch:rel:tag:v{i}:upstream.release:dispatch:2026-01-01T00:00:{i // 10:02d}.{i % 10:03d}Z",
                    "eventId": f"patch:rel:tag:v{i}:upstream.release",
                    "status": "started",
                },
            )
    assert "1700 flow event(s) never dispatched" in cli("doctor", env=env).stdout
    out = cli("poll", "--once", env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert backend.posts == 1700 and len(backend.events) == 1700
    assert "nothing left behind by a crash" in cli("doctor", env=env).stdout
    fresh = Store(tmp_path / "data")
    dispatched = [d["eventId"] for d in (r for _, r in fresh.scan(Kind.DISPATCHES))]
    assert len(dispatched) == len(set(dispatched)) == 2000
    assert fresh.count(Kind.ATTEMPTS) == 2000
    again = cli("poll", "--once", env=env)
    assert again.returncode == 0 and backend.posts == 1700  # nothing twice
    mark = json.loads((tmp_path / "data" / ".recovery.json").read_text())["flowEvents"]["cursor"]
    assert mark.endswith(f":{(tmp_path / 'data' / 'flow-events.jsonl').stat().st_size}")  # past every event


def test_sigkill_during_a_local_run_then_poll_once_closes_it_and_notifies(
    tmp_path: Path, server: LoopbackServer
) -> None:
    forge = Forge(tmp_path / "forge", config='[verify]\ncommands = ["sleep 60"]\n')
    server.route("/discord", Reply(204))
    env = feed_env(
        tmp_path,
        server,
        {"mode": "workspace_flow", "eventType": "upstream.release", "transport": "local", "workspace": str(forge.fork)},
        DISCORD_OUTPUT_ENABLED="1",
        DISCORD_WEBHOOK_URL=f"{server.url}/discord",
        DISCORD_NOTIFY_EVENTS="attempt.failed",
    )
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "patchmoi",
            "run",
            "upstream-release",
            "--repo",
            "acme/widget",
            "--tag",
            "v1.0.0",
            "--workspace",
            str(forge.fork),
        ],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = Store(tmp_path / "data").list_runs(status="running")
            if runs:
                break
            time.sleep(0.1)
        assert runs, "the run never started"
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its step, at once
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert Store(tmp_path / "data").list_attempts()[0]["status"] == "started"
    out = cli("poll", "--once", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    store = Store(tmp_path / "data")
    attempt = store.list_attempts()[0]
    assert attempt["status"] == "failed" and "interrupted" in attempt["error"]
    assert store.list_runs()[0]["status"] == "failed"
    posts = [json.loads(r.body) for r in server.hits("/discord")]
    assert len(posts) == 1 and "failed" in posts[0]["embeds"][0]["title"]
    assert cli("poll", "--once", env=env).returncode == 0 and len(server.hits("/discord")) == 1


def test_orphan_runs_are_closed_and_their_event_dispatched_again(tmp_path: Path, server: LoopbackServer) -> None:
    backend = FakeBackend(server)
    env = feed_env(
        tmp_path, server, {"mode": "workspace_flow", "eventType": "upstream.release", "workspaceUrl": backend.url}
    )
    store = Store(tmp_path / "data")
    event = {
        "id": "patch:rel:tag:v9:upstream.release",
        "type": "upstream.release",
        "source": "patch",
        "payload": {"sourceId": "rel", "repo": "openai/codex", "tag": "v9"},
    }
    store.append(Kind.EVENTS, event)
    store.append(Kind.RUNS, {"id": "run-orphan", "eventId": event["id"], "status": "queued", "pid": 999999999})
    assert cli("poll", "--once", env=env).returncode == 0
    fresh = Store(tmp_path / "data")
    assert present(fresh.get_run("run-orphan"))["error"].startswith("orphan:")
    assert backend.posts == 1


# -- read-only and full disks --------------------------------------------------------------------------------
def unshare_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


needs_unshare = pytest.mark.skipif(not unshare_available(), reason="needs unshare (a private mount namespace)")


def in_namespace(script: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a bash script in a private mount namespace (its mounts vanish with it)."""
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": os.environ["PATH"], "PATCHMOI": PATCHMOI},
    )


@needs_unshare
def test_every_read_command_and_serve_work_on_a_read_only_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = Store(data)
    store.record_event({"id": "e:1", "type": "upstream.release", "payload": {"repo": "a/b", "tag": "v1"}})
    store.append(Kind.ATTEMPTS, {"id": "e:1:dispatch:x", "eventId": "e:1", "status": "needs_intervention"})
    store.append(Kind.RUNS, {"id": "run-1", "eventId": "e:1", "status": "failed"})
    store.close()
    shutil.rmtree(data / ".index")  # no index yet: it cannot be written there
    with (data / "flow-events.jsonl").open("ab") as fh:
        fh.write(b'{"id": "torn"')  # a torn tail it cannot repair
    commands = [
        "status",
        "status --json",
        "events",
        "events --json",
        "dispatches",
        "attempts",
        "attempts --open",
        "runs",
        "show e:1",
        "show e:1:dispatch:x",
        "show run-1",
        "doctor",
    ]
    port = free_port()
    script = f"""
set -u
D={data}
mount --bind $D $D && mount -o remount,ro,bind $D || exit 99
touch $D/probe 2>/dev/null && exit 98
for c in {" ".join(repr(c) for c in commands)}; do
  $PATCHMOI $c --data-dir $D > /tmp/ro-$$.out 2>&1; rc=$?
  echo "CMD $c rc=$rc"; grep -h Traceback /tmp/ro-$$.out
done
PORT={port} $PATCHMOI serve --no-poll --data-dir $D > /tmp/ro-serve-$$.out 2>&1 &
pid=$!
get() {{ python3 -c "import json, sys, urllib.request as u; print(json.dumps(json.load(u.urlopen(sys.argv[1]))))" \
  "$1"; }}
for i in $(seq 1 100); do get http://127.0.0.1:{port}/readyz >/dev/null 2>&1 && break; sleep 0.1; done
echo "LIST $(get http://127.0.0.1:{port}/flow-events)"
echo "READY $(get http://127.0.0.1:{port}/readyz)"
kill $pid; wait $pid
grep -h Traceback /tmp/ro-serve-$$.out
true
"""
    out = in_namespace(script)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stdout
    for command in commands:
        expected = 1 if command == "doctor" else 0  # doctor says the data dir is not writable
        assert f"CMD {command} rc={expected}" in out.stdout, out.stdout
    listing = json.loads(out.stdout.split("LIST ", 1)[1].splitlines()[0])
    ready = json.loads(out.stdout.split("READY ", 1)[1].splitlines()[0])
    assert [e["id"] for e in listing["events"]] == ["e:1"]
    assert ready["status"] == "degraded" and "kept in memory" in ready["store"]["degraded"][0]


@needs_unshare
def test_a_full_disk_fails_writes_clearly_keeps_records_and_recovers(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    script = f"""
set -u
M={mount}
mount -t tmpfs -o size=512k tmpfs $M || exit 99
D=$M/data
run() {{ $PATCHMOI run upstream-release --repo acme/widget --tag "$1" --record-only --data-dir $D; }}
run v1 >/dev/null || exit 97
head -c 2000000 /dev/zero > $M/filler 2>/dev/null
n=1; rc=0
while [ $n -lt 300 ] && [ $rc -eq 0 ]; do  # small appends fit in the last page for a while, then it is full
  n=$((n+1)); run "v$n-$(head -c 200 /dev/zero | tr '\\0' x)" > $M/../full.out 2>&1; rc=$?
done
echo "FULL rc=$rc after $n"
cat $M/../full.out
tail -c 1 $D/flow-events.jsonl | od -An -c
$PATCHMOI events --data-dir $D --json --limit 500 > $M/../events.json 2>&1; echo "READ rc=$?"
rm $M/filler
run v-after >/dev/null; echo "FREED rc=$?"
$PATCHMOI events --data-dir $D --json --limit 500
"""
    out = in_namespace(script)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FULL rc=1" in out.stdout and "No space left on device" in out.stdout
    assert "earlier records are intact" in out.stdout and "Traceback" not in out.stdout
    assert "\\n" in out.stdout.split("earlier records are intact", 1)[1].splitlines()[1]  # ends with a record
    assert "READ rc=0" in out.stdout and "FREED rc=0" in out.stdout
    stored = int(out.stdout.split("FULL rc=1 after ", 1)[1].split()[0]) - 1  # v1 plus every run that succeeded
    events = json.loads(out.stdout.split("FREED rc=0\n", 1)[1])["events"]
    assert events[0]["payload"]["tag"] == "v-after" and events[-1]["payload"]["tag"] == "v1"
    assert len(events) == stored + 1


# -- lines that are not strict JSON --------------------------------------------------------------------------
def test_nan_infinity_and_lone_surrogate_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from patchmoi.core.config import Settings
    from patchmoi.server.app import create_app

    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    lines = [
        b'{"id":"ok-1","type":"upstream.release","payload":{}}',
        b'{"id":"nan","type":"upstream.release","payload":{"x":NaN}}',
        b'{"id":"inf","type":"upstream.release","payload":{"x":1e999}}',
        b'{"id":"sur","type":"upstream.release","payload":{"x":"\\ud800"}}',
        b'{"id":"ok-2","type":"upstream.release","payload":{"x":"\\ud83d\\ude00"}}',
    ]
    (data / "flow-events.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    def strict(text: str) -> Any:
        return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))

    with TestClient(create_app(Settings.from_env({"DATA_DIR": str(data)}), poll=False)) as client:
        listing = client.get("/flow-events")
        assert listing.status_code == 200
        # 1e999 is valid JSON (JSON.parse reads Infinity): a list serves that line as stored; the index build
        # does not decode numbers it does not index (#14), so only a read that decodes the record skips it
        assert [e["id"] for e in strict(listing.text)["events"]] == ["ok-2", "inf", "ok-1"]
        assert client.get("/flow-events/nan").status_code == 404
        assert client.get("/flow-events/inf").status_code == 404
        store_health = client.get("/readyz").json()["store"]
        assert store_health["skippedLines"] == 2
    for args in (["events", "--json"], ["status", "--json"], ["show", "ok-2"], ["show", "nan"], ["status"]):
        out = cli(*args, "--data-dir", str(data))
        assert "Traceback" not in out.stderr, (args, out.stderr)
        if "--json" in args:
            strict(out.stdout)
    assert "2 malformed lines skipped" in cli("status", "--data-dir", str(data)).stdout


# -- idempotency keys ----------------------------------------------------------------------------------------
CONCURRENT = r"""
import asyncio, sys
from patchmoi.core.dispatch import dispatcher
from patchmoi.core.store import Store
dispatcher.now_iso = lambda: "2026-01-01T00:00:00.000Z"  # every retry in the same millisecond
async def main():
    d = dispatcher.Dispatcher(Store(sys.argv[1]), {"PATCH_WORKSPACE_BACKEND_URL": sys.argv[2]})
    for _ in range(int(sys.argv[3])):
        await d.retry("e:1")
    await d.aclose()
asyncio.run(main())
"""


def test_200_concurrent_retries_make_200_attempts(tmp_path: Path, server: LoopbackServer) -> None:
    backend = FakeBackend(server)
    data = tmp_path / "data"
    Store(data).record_event({"id": "e:1", "type": "upstream.release", "payload": {"repo": "a/b", "tag": "v1"}})
    procs = [subprocess.Popen([PYTHON, "-c", CONCURRENT, str(data), backend.url, "25"], cwd=ROOT) for _ in range(8)]
    try:
        assert [p.wait(timeout=240) for p in procs] == [0] * 8
    finally:
        for p in procs:  # none outlives a failed test
            if p.poll() is None:
                p.kill()
                p.wait()
    store = Store(data)
    ids = [a["id"] for a in (r for _, r in store.scan(Kind.ATTEMPTS))]
    assert len(ids) == len(set(ids)) == 200
    assert store.count(Kind.ATTEMPTS) == 200


def test_webhook_ids_per_intended_effect_verify_with_the_reference_library(
    tmp_path: Path, server: LoopbackServer
) -> None:
    import asyncio

    from standardwebhooks import Webhook

    from patchmoi.core.dispatch.dispatcher import Dispatcher

    captured: list[Any] = []
    whsec = "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM="
    for secret, verifier in ((whsec, Webhook(whsec)), ("a plain secret", Webhook(b"a plain secret"))):
        backend = FakeBackend(server, secret=secret, prefix=f"/b{len(captured)}")
        store = Store(tmp_path / f"data{len(captured)}")
        event = {"id": "e:1", "type": "upstream.release", "payload": {"repo": "a/b", "tag": "v1"}}
        store.record_event(event)

        async def go(
            url: str = backend.url, secret: str = secret, store: Store = store, event: dict[str, Any] = event
        ) -> None:
            d = Dispatcher(store, {"PATCH_WORKSPACE_BACKEND_URL": url, "PATCH_WORKSPACE_BACKEND_SECRET": secret})
            await d.dispatch(event, automatic=True)  # the poller's
            await d.dispatch(event, automatic=True)  # recovery sending it again: same id
            await d.retry("e:1")
            await d.replay("e:1")
            await d.aclose()

        asyncio.run(go())
        assert backend.bad_signatures == 0
        posts = [*server.hits(f"/b{len(captured)}/events"), *server.hits(f"/b{len(captured)}/events/e%3A1/replay")]
        assert len(posts) == 4
        for req in posts:
            verifier.verify(req.body, req.headers)  # raises if the reference library disagrees
        ids = backend.webhook_ids
        assert ids[0] == ids[1] == "e:1" and ids[2].startswith("retry:e:1:") and ids[3].startswith("replay:e:1:")
        assert len(set(ids)) == 3
        records = list((r for _, r in store.scan(Kind.DISPATCHES)))
        assert [r["webhookId"] for r in records] == ids
        captured.append(ids)
