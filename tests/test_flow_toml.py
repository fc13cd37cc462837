"""codex-flows workspaces (#15): `.codex/flows/*/flow.toml` and `flows/*/flow.toml` steps, matched by trigger type
and payload JSON Schema, run as codex-flows runs them (`bun <script>`, its context on stdin, `timeout_ms`).

Bun is not installed here: a tiny `bun` on PATH (a shell script that runs the step's script with this Python)
stands in for it. It is a real process, as every workspace and step here is real.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from patchmoi.core.config import Settings
from patchmoi.core.dispatch.dispatcher import Dispatcher
from patchmoi.core.doctor import run_checks
from patchmoi.core.errors import ConfigError
from patchmoi.core.events import upstream_release_event
from patchmoi.core.store import Store
from patchmoi.core.workspace import flows
from patchmoi.core.workspace.filecache import RACY_NS
from patchmoi.core.workspace.runner import parse_flow_result
from patchmoi.core.workspace.steps import load_steps, matching_steps

from .conftest import present

# A step script (the flow's "exec/*.py"; `bun` runs it with Python here): it reports its context, argv and cwd.
ECHO_STEP = """
import json, os, sys
ctx = json.load(sys.stdin)
payload = ctx["flow"]["event"]["payload"]
print("log line before the result")
print("FLOW_RESULT " + json.dumps({"status": "changed", "message": "built " + str(payload.get("tag")),
      "context": ctx, "argv": sys.argv, "cwd": os.getcwd()}))
"""
SLEEP_STEP = "import time\nprint('started', flush=True)\ntime.sleep(30)\n"


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    flows.clear_cache()


@pytest.fixture
def bun_dir(tmp_path: Path) -> Path:
    """A directory holding a `bun` that runs the script it is given with this Python."""
    d = tmp_path / "bin"
    d.mkdir()
    bun = d / "bun"
    bun.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    bun.chmod(0o755)
    return d


def env_with(bun_dir: Path | None, tmp_path: Path) -> dict[str, str]:
    """The steps' environment: `bun_dir` first on PATH, or a PATH with no `bun` on it at all."""
    if bun_dir is not None:
        return {"PATH": f"{bun_dir}:/usr/bin:/bin"}
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    return {"PATH": str(empty)}


def write_flow(
    ws: Path,
    where: str,
    manifest: str,
    files: dict[str, str] | None = None,
) -> Path:
    root = ws / where
    root.mkdir(parents=True, exist_ok=True)
    (root / "flow.toml").write_text(manifest)
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def age(*paths: Path) -> None:
    """Date files a minute back, as files are that nobody is editing (the cache re-reads fresh ones), and wait
    until their ctime, which cannot be set, is out of the cache's racy window too."""
    past = time.time() - 60
    for p in paths:
        os.utime(p, (past, past))
    newest = max(p.stat().st_ctime_ns for p in paths)
    time.sleep(max(0.0, (newest + RACY_NS) / 1e9 - time.time() + 0.05))


RELEASE_FLOW = """
name = "release"
version = 3
description = "two steps for one event type; the payload's schema picks one"

[config]
channel = "stable"

[[steps]]
name = "v1-line"
runner = "bun"
script = "exec/echo.py"
timeout_ms = 30000
[steps.trigger]
type = "upstream.release"
schema = "schemas/v1.json"

[[steps]]
name = "v2-line"
runner = "bun"
script = "exec/echo.py"
[steps.trigger]
type = "upstream.release"
schema = "schemas/v2.json"

[[steps]]
name = "by-hand"        # no trigger: never runs for an event
runner = "bun"
script = "exec/echo.py"
"""


def tag_schema(pattern: str) -> str:
    return json.dumps(
        {
            "type": "object",
            "required": ["repo", "tag"],
            "properties": {"repo": {"const": "o/r"}, "tag": {"type": "string", "pattern": pattern}},
        }
    )


def release_workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    write_flow(
        ws,
        "flows/release",
        RELEASE_FLOW,
        {"exec/echo.py": ECHO_STEP, "schemas/v1.json": tag_schema("^v1\\."), "schemas/v2.json": tag_schema("^v2\\.")},
    )
    return ws


def event(tag: str, repo: str = "o/r") -> dict[str, Any]:
    return upstream_release_event(repo, tag).to_dict()


def names(ws: Path, ev: dict[str, Any]) -> list[str]:
    return [f"{s.flow}/{s.name}" for s in matching_steps(ws, ev)]


# -- discovery and matching ----------------------------------------------------------------------------------


def test_discovery_order_and_first_name_wins(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    step = '[[steps]]\nname = "s"\nrunner = "bun"\nscript = "x.ts"\n'
    write_flow(ws, "flows/a-source", f'name = "demo"\nversion = 1\ndescription = "source"\n{step}')
    write_flow(ws, ".codex/flows/z-installed", f'name = "demo"\nversion = 2\ndescription = "installed"\n{step}')
    write_flow(ws, "flows/b-other", f'name = "other"\nversion = 1\n{step}')
    write_flow(ws, ".codex/flows/c-more", f'name = "more"\nversion = 1.5\n{step}')
    (ws / "flows" / "no-manifest").mkdir()  # not a flow: skipped
    (ws / "flows" / "README.md").write_text("a file, not a flow directory")
    (ws / ".codex" / "flows" / "0-link").symlink_to(ws / "flows" / "b-other")  # codex-flows skips symlinks too

    scanned = flows.scan_flows(ws)
    assert [(f.name, f.description or "") for f in scanned] == [
        ("more", ""),
        ("demo", "installed"),
        ("demo", "source"),
        ("other", ""),
    ]
    found = flows.discover_flows(ws)
    assert [(f.name, f.version) for f in found] == [("more", 1.5), ("demo", 2), ("other", 1)]
    assert found[1].root == ws / ".codex" / "flows" / "z-installed"
    # no flows at all: nothing, and a workspace without .codex/flows or flows/ is fine
    assert flows.discover_flows(tmp_path / "nothing-here") == []


def test_a_step_is_selected_by_its_payload_schema(tmp_path: Path) -> None:
    ws = release_workspace(tmp_path)
    assert names(ws, event("v1.4.0")) == ["release/v1-line"]
    assert names(ws, event("v2.0.0")) == ["release/v2-line"]
    assert names(ws, event("v3.0.0")) == []  # the type matches, neither schema does
    assert names(ws, event("v1.4.0", repo="someone/else")) == []
    other_type = {**event("v1.4.0"), "type": "upstream.branch_update"}
    assert names(ws, other_type) == []
    # the step without a trigger is loaded but never matches
    by_hand = [s for s in load_steps(ws) if s.name == "by-hand"]
    assert len(by_hand) == 1 and by_hand[0].on == ()
    # no payload at all does not satisfy an object schema
    assert names(ws, {"id": "e", "type": "upstream.release"}) == []


def test_schema_draft_follows_dollar_schema_and_defaults_to_2020_12(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    manifest = """
name = "drafts"
version = 1
[[steps]]
name = "latest"
runner = "bun"
script = "x.py"
[steps.trigger]
type = "upstream.release"
schema = "latest.json"
[[steps]]
name = "draft7"
runner = "bun"
script = "x.py"
[steps.trigger]
type = "upstream.release"
schema = "draft7.json"
"""
    prefix = {"properties": {"tags": {"prefixItems": [{"const": "a"}]}}}  # a 2020-12 keyword; draft 7 ignores it
    write_flow(
        ws,
        "flows/drafts",
        manifest,
        {
            "latest.json": json.dumps(prefix),
            "draft7.json": json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", **prefix}),
        },
    )
    ev = {"id": "e", "type": "upstream.release", "payload": {"tags": ["b"]}}
    assert names(ws, ev) == ["drafts/draft7"]
    assert names(ws, {**ev, "payload": {"tags": ["a"]}}) == ["drafts/latest", "drafts/draft7"]


def test_flow_steps_join_patchmoi_toml_steps_and_the_builtin_rebuild_rule(tmp_path: Path) -> None:
    ws = release_workspace(tmp_path)
    # flows but no [[steps]]: only the flows run (no built-in rebuild)
    assert [s.runner for s in load_steps(ws)] == ["bun", "bun", "bun"]
    # a patchmoi workspace (.patchmoi.toml) reads flows only when it asks: a fork of a project that ships flows
    (ws / ".patchmoi.toml").write_text('[git]\ntargetBranch = "main"\n')
    assert [(s.name, s.runner) for s in load_steps(ws)] == [("rebuild", "builtin:rebuild")]
    mine = '[[steps]]\nname = "mine"\non = ["upstream.release"]\ncommand = "true"\n'
    (ws / ".patchmoi.toml").write_text(mine)
    assert names(ws, event("v2.1.0")) == ["patchmoi/mine"]
    (ws / ".patchmoi.toml").write_text("[flows]\ndiscover = true\n" + mine)
    assert names(ws, event("v2.1.0")) == ["patchmoi/mine", "release/v2-line"]
    rebuild = '[[steps]]\nname = "rebuild"\non = ["upstream.release"]\nbuiltin = "rebuild"\n'
    (ws / ".patchmoi.toml").write_text("[flows]\ndiscover = true\n" + rebuild)
    assert [s.runner for s in matching_steps(ws, event("v1.0.0"))] == ["builtin:rebuild", "bun"]
    (ws / ".patchmoi.toml").write_text('[flows]\ndiscover = "yes"\n')
    with pytest.raises(ConfigError, match="discover must be true or false"):
        load_steps(ws)
    # no flows and no [[steps]]: the built-in rebuild, as before
    bare = tmp_path / "bare"
    bare.mkdir()
    assert [(s.name, s.runner) for s in load_steps(bare)] == [("rebuild", "builtin:rebuild")]


def test_parsed_flows_and_schemas_are_cached_until_a_file_changes(tmp_path: Path) -> None:
    ws = release_workspace(tmp_path)
    root = ws / "flows" / "release"
    age(root / "flow.toml", root / "schemas" / "v1.json", root / "schemas" / "v2.json")
    for i in range(1000):
        assert names(ws, event(f"v1.{i}.0")) == ["release/v1-line"]
    assert flows.cache_stats() == {"manifestReads": 1, "schemaReads": 2}  # both steps' schemas, read once each
    assert names(ws, event("v2.0.0")) == ["release/v2-line"]
    assert flows.cache_stats() == {"manifestReads": 1, "schemaReads": 2}
    # an edited schema and manifest are read afresh
    (root / "schemas" / "v1.json").write_text(tag_schema("^v9\\."))
    assert names(ws, event("v1.0.0")) == []
    assert names(ws, event("v9.0.0")) == ["release/v1-line"]
    (root / "flow.toml").write_text(RELEASE_FLOW.replace('type = "upstream.release"', 'type = "downstream.x"', 1))
    assert names(ws, event("v9.0.0")) == []
    # a file just written is not trusted to the cache (it could change again within the same timestamp tick)
    before = flows.cache_stats()["manifestReads"]
    names(ws, event("v9.0.0"))
    assert flows.cache_stats()["manifestReads"] == before + 1


# -- errors --------------------------------------------------------------------------------------------------

GOOD_STEP = '[[steps]]\nname = "s"\nrunner = "bun"\nscript = "x.ts"\n'


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ('name = "x"\nversion = \n', "invalid TOML"),
        (f"version = 1\n{GOOD_STEP}", "field 'name' is required"),
        (f'name = "x"\n{GOOD_STEP}', "field 'version' is required"),
        (f'name = "x"\nversion = "1"\n{GOOD_STEP}', "field 'version' is required (a number"),
        ('name = "x"\nversion = 1\n', "field 'steps' is required: at least one [[steps]]"),
        ('name = "x"\nversion = 1\nsteps = []\n', "field 'steps' is required"),
        ('name = "x"\nversion = 1\n[[steps]]\nname = "s"\nrunner = "python"\nscript = "x"\n', "field 'runner'"),
        ('name = "x"\nversion = 1\n[[steps]]\nname = "s"\nrunner = "bun"\n', "steps[0] (s): field 'script'"),
        ('name = "x"\nversion = 1\n[[steps]]\nrunner = "bun"\nscript = "x"\n', "steps[0]: field 'name'"),
        (f'name = "x"\nversion = 1\n{GOOD_STEP}timeout_ms = -5\n', "field 'timeout_ms' must be a positive"),
        (f'name = "x"\nversion = 1\n{GOOD_STEP}[steps.trigger]\nschema = "s.json"\n', "trigger: field 'type'"),
        (f'name = "x"\nversion = 1\n{GOOD_STEP}trigger = "upstream.release"\n', "field 'trigger' must be a table"),
        (f'name = "x"\nversion = 1\nconfig = 3\n{GOOD_STEP}', "field 'config' must be a table"),
        (f'name = "x"\nversion = 1\n{GOOD_STEP}{GOOD_STEP}', "steps[1] (s): field 'name' duplicates"),
    ],
)
def test_invalid_flow_toml_is_a_config_error_naming_file_and_field(
    tmp_path: Path, manifest: str, expected: str
) -> None:
    ws = tmp_path / "ws"
    write_flow(ws, "flows/good", f'name = "good"\nversion = 1\n{GOOD_STEP}')
    bad = write_flow(ws, "flows/zz-bad", manifest) / "flow.toml"
    with pytest.raises(ConfigError) as err:
        load_steps(ws)
    assert str(err.value).startswith(str(bad)) and expected in str(err.value)


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (None, "cannot read"),
        ("{ not json", "invalid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"type": "objekt"}', "not a valid JSON Schema at type"),
        ('{"$schema": "https://example.invalid/my-draft"}', "unknown $schema"),
        ('{"$ref": "https://example.invalid/remote.json"}', "cannot apply the schema"),  # never fetched
    ],
)
def test_invalid_or_unreadable_schema_is_a_clear_error(tmp_path: Path, schema: str | None, expected: str) -> None:
    ws = tmp_path / "ws"
    manifest = f'name = "f"\nversion = 1\n{GOOD_STEP}[steps.trigger]\ntype = "upstream.release"\nschema = "s.json"\n'
    root = write_flow(ws, "flows/f", manifest, {"s.json": schema} if schema is not None else {})
    with pytest.raises(ConfigError) as err:
        matching_steps(ws, event("v1.0.0"))
    text = str(err.value)
    assert text.startswith(f"{root / 'flow.toml'}: steps[0] (s): trigger.schema {root / 's.json'}"), text
    assert expected in text
    # only an event the step's trigger type matches reads the schema
    assert matching_steps(ws, {**event("v1.0.0"), "type": "something.else"}) == []


def test_flow_result_line_follows_codex_flows_for_flow_steps() -> None:
    out = 'x\nFLOW_RESULT {"status": "completed", "message": "m"}\ncleanup done\n'
    assert parse_flow_result(out) is None  # .patchmoi.toml steps: the last line must be the result
    assert present(parse_flow_result(out, codex=True))["message"] == "m"
    assert present(parse_flow_result('[info] FLOW_RESULT {"status": "skipped"}', codex=True))["status"] == "skipped"
    assert parse_flow_result('FLOW_RESULT {"status": "done"}', codex=True) is None  # unknown status
    assert parse_flow_result("no result here\n", codex=True) is None


# -- running through the dispatcher -------------------------------------------------------------------------


def run_record(store: Store, run_id: str) -> dict[str, Any]:
    """A stored run as plain JSON (codex-flows records `flowVersion` as the flow's number)."""
    return {**present(store.get_run(run_id))}


async def dispatch(store: Store, ws: Path, env: dict[str, str], ev: dict[str, Any]) -> Any:
    store.record_event(ev)
    dispatcher = Dispatcher(store, env, workspace=ws)
    try:
        return await dispatcher.retry(ev["id"])
    finally:
        await dispatcher.aclose()


async def test_dispatch_runs_the_selected_flow_step_with_the_codex_flows_context(
    data_dir: Path, tmp_path: Path, bun_dir: Path
) -> None:
    ws = release_workspace(tmp_path)
    (ws / ".patchmoi.toml").write_text(
        "[flows]\ndiscover = true\n"
        f'[[steps]]\nname = "mine"\non = ["upstream.release"]\ncommand = ["{sys.executable}", "own.py"]\n'
    )
    (ws / "own.py").write_text(
        "import json, sys\nctx = json.load(sys.stdin)\n"
        'print("FLOW_RESULT " + json.dumps({"status": "completed", "keys": sorted(ctx)}))\n'
    )
    store = Store(data_dir)
    ev = event("v2.3.0")
    outcome = await dispatch(store, ws, env_with(bun_dir, tmp_path), ev)
    assert outcome.record["transport"] == "local" and outcome.record["matched"] == 2
    assert outcome.attempt["status"] == "changed" and outcome.attempt["message"] == "built v2.3.0"
    own, flow_run = (run_record(store, rid) for rid in outcome.record["runIds"])
    # the .patchmoi.toml step: patchmoi's own context, unchanged
    assert own["flowName"] == "patchmoi" and own["runner"] == "command" and "flowVersion" not in own
    assert own["resultPayload"]["keys"] == ["dataDir", "event", "run", "workspace"]
    # the flow step: recorded with its flow, version, step and runner
    assert (flow_run["flowName"], flow_run["flowVersion"], flow_run["stepName"], flow_run["runner"]) == (
        "release",
        3,
        "v2-line",
        "bun",
    )
    assert flow_run["status"] == "changed" and "log line before the result" in flow_run["output"][0]["text"]
    result = flow_run["resultPayload"]
    root = ws / "flows" / "release"
    stored_event = present(store.get_event(ev["id"]))
    assert result["context"] == {
        "flow": {
            "name": "release",
            "version": 3,
            "root": str(root),
            "step": "v2-line",
            "config": {"channel": "stable"},
            "event": stored_event,
        }
    }
    assert result["argv"] == [str(root / "exec" / "echo.py")]  # `bun <script>`, the script's absolute path
    assert result["cwd"] == str(root)  # the flow directory, not the workspace


async def test_step_cwd_and_a_flow_without_config(data_dir: Path, tmp_path: Path, bun_dir: Path) -> None:
    ws = tmp_path / "ws"
    manifest = (
        'name = "plain"\nversion = 1\n[[steps]]\nname = "s"\nrunner = "bun"\nscript = "echo.py"\ncwd = "../.."\n'
        '[steps.trigger]\ntype = "upstream.release"\n'
    )
    write_flow(ws, ".codex/flows/plain", manifest, {"echo.py": ECHO_STEP})
    outcome = await dispatch(Store(data_dir), ws, env_with(bun_dir, tmp_path), event("v1.0.0"))
    run = run_record(Store(data_dir), outcome.record["runIds"][0])
    assert run["resultPayload"]["cwd"] == str(ws / ".codex")
    assert "config" not in run["resultPayload"]["context"]["flow"]


async def test_timeout_ms_kills_the_step_and_fails_the_run(data_dir: Path, tmp_path: Path, bun_dir: Path) -> None:
    ws = tmp_path / "ws"
    manifest = (
        'name = "slow"\nversion = 1\n[[steps]]\nname = "hang"\nrunner = "bun"\nscript = "sleep.py"\n'
        'timeout_ms = 400\n[steps.trigger]\ntype = "upstream.release"\n'
    )
    write_flow(ws, "flows/slow", manifest, {"sleep.py": SLEEP_STEP})
    started = time.monotonic()
    outcome = await dispatch(Store(data_dir), ws, env_with(bun_dir, tmp_path), event("v1.0.0"))
    assert time.monotonic() - started < 10
    run = run_record(Store(data_dir), outcome.record["runIds"][0])
    assert run["status"] == "failed" and outcome.attempt["status"] == "failed"
    assert run["error"] == "step 'slow/hang' timed out after 400 ms (timeout_ms) and was killed"
    assert (run["flowName"], run["flowVersion"], run["stepName"]) == ("slow", 1, "hang")


async def test_code_mode_and_missing_bun_are_clear_failed_runs(data_dir: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    manifest = """
name = "mixed"
version = 2
[[steps]]
name = "agent"
runner = "code-mode"
script = "agent.ts"
[steps.trigger]
type = "upstream.release"
[[steps]]
name = "script"
runner = "bun"
script = "echo.py"
[steps.trigger]
type = "upstream.release"
"""
    write_flow(ws, "flows/mixed", manifest, {"echo.py": ECHO_STEP})
    store = Store(data_dir)
    outcome = await dispatch(store, ws, env_with(None, tmp_path), event("v1.0.0"))  # PATH without bun
    assert outcome.record["status"] == "dispatched" and outcome.attempt["status"] == "failed"
    agent, script = (run_record(store, rid) for rid in outcome.record["runIds"])
    assert (agent["runner"], agent["status"], agent["flowVersion"]) == ("code-mode", "failed", 2)
    assert agent["error"].startswith("runner code-mode: step 'mixed/agent' needs the codex app-server")
    assert script["runner"] == "bun" and script["status"] == "failed"
    assert script["error"].startswith("runner bun: `bun` not found on PATH")


async def test_an_invalid_flow_fails_the_dispatch_as_configuration(data_dir: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    bad = write_flow(ws, "flows/bad", 'name = "bad"\nversion = 1\n[[steps]]\nname = "s"\nrunner = "deno"\n')
    outcome = await dispatch(Store(data_dir), ws, {}, event("v1.0.0"))
    assert outcome.record["status"] == "failed" and outcome.record["errorKind"] == "config"
    assert str(bad / "flow.toml") in outcome.attempt["message"] and "'runner'" in outcome.attempt["message"]


# -- doctor --------------------------------------------------------------------------------------------------


def doctor(tmp_path: Path, ws: Path, path_env: str) -> list[tuple[str, str]]:
    sources = tmp_path / "feed-sources.json"
    target = {"mode": "workspace_flow", "eventType": "upstream.release", "transport": "local", "workspace": str(ws)}
    repo = {"owner": "o", "name": "r", "fullName": "o/r", "webUrl": "https://x.invalid"}
    source = {"id": "rel", "provider": "github", "url": "https://github.com/o/r/releases.atom", "event": "release"}
    sources.write_text(json.dumps({"sources": [{**source, "repo": repo, "target": target}]}))
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    settings = Settings.from_env({"DATA_DIR": str(data), "FEED_SOURCES_PATH": str(sources), "PATH": path_env})
    return [(c.status, c.detail) for c in run_checks(settings) if c.name == "flows rel"]


def test_doctor_reports_flows(tmp_path: Path, bun_dir: Path) -> None:
    ws = release_workspace(tmp_path)
    write_flow(
        ws,
        ".codex/flows/agent",
        'name = "agent"\nversion = 1\ntimeout = 5\n[[steps]]\nname = "think"\nrunner = "code-mode"\n'
        'script = "a.ts"\ntimeout = 9\n[steps.trigger]\ntype = "upstream.release"\n',
    )
    write_flow(
        ws, "flows/shadowed", 'name = "agent"\nversion = 9\n[[steps]]\nname = "x"\nrunner = "bun"\nscript = "x"\n'
    )
    with_bun = doctor(tmp_path, ws, f"{bun_dir}:/usr/bin:/bin")
    assert with_bun[0] == ("PASS", "2 flow(s), 4 step(s): agent v1, release v3")
    warns = [d for s, d in with_bun if s == "WARN"]
    assert any("flows/shadowed/flow.toml: ignored: flow 'agent' is" in d for d in warns)
    assert any("step agent/think uses runner code-mode" in d for d in warns)
    assert any("unknown key(s) ignored: timeout, steps[0].timeout (did you mean 'timeout_ms'?)" in d for d in warns)
    assert not any("`bun` not found" in d for d in warns)
    no_bun = doctor(tmp_path, ws, str(tmp_path / "empty"))
    assert ("WARN", "runner bun: `bun` not found on PATH: step(s) release/v1-line, release/v2-line will fail") in no_bun
    # an invalid schema, then an invalid flow.toml: FAIL, naming the file
    (ws / "flows" / "release" / "schemas" / "v2.json").write_text("{")
    broken = doctor(tmp_path, ws, f"{bun_dir}:/usr/bin:/bin")
    assert [s for s, _ in broken].count("PASS") == 0
    assert any(s == "FAIL" and "v2.json: invalid JSON" in d for s, d in broken)
    (ws / "flows" / "release" / "flow.toml").write_text('name = "release"\n')
    assert doctor(tmp_path, ws, "/usr/bin") == [
        ("FAIL", f"{ws / 'flows' / 'release' / 'flow.toml'}: field 'version' is required (a number, e.g. version = 1)")
    ]
    # a workspace without flows gets no flows line
    plain = tmp_path / "plain"
    plain.mkdir()
    assert doctor(tmp_path, plain, "/usr/bin") == []


def test_odd_manifests_and_schemas_are_config_errors_not_crashes(tmp_path: Path) -> None:
    """A `$schema` that is not a string (jsonschema raised TypeError) and a flow.toml nested thousands deep
    (RecursionError) failed doctor and dispatch with a traceback."""
    ws = tmp_path / "ws"
    flow = ws / "flows" / "demo"
    (flow / "schemas").mkdir(parents=True)
    (flow / "flow.toml").write_text(
        'name = "demo"\nversion = 1\n[[steps]]\nname = "s"\nrunner = "bun"\nscript = "x.ts"\n'
        '[steps.trigger]\ntype = "upstream.release"\nschema = "schemas/r.json"\n'
    )
    (flow / "schemas" / "r.json").write_text('{"$schema": ["https://example.invalid"], "type": "object"}')
    with pytest.raises(ConfigError, match=r"r\.json: cannot be read: TypeError"):
        matching_steps(ws, {"type": "upstream.release", "payload": {}})
    (flow / "flow.toml").write_text("x = " + "[" * 3000 + "]" * 3000 + "\n")
    flows.clear_cache()
    with pytest.raises(ConfigError, match=r"flow\.toml: nested too deeply to read"):
        load_steps(ws)
