"""The dashboard and the CLI on the PostgreSQL store (#17): PATCHMOI_DATABASE_URL is all they need, and a record
another replica writes appears live (LISTEN/NOTIFY), as an append to DATA_DIR's files does."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from patchmoi.core.config import Settings
from patchmoi.core.store import Store
from patchmoi.core.store.postgres import PostgresStore
from patchmoi.tui.app import PatchmoiApp
from patchmoi.tui.client import LocalClient

from .conftest import PYTHON, ROOT
from .loopback import free_port
from .test_tui import EID, EID2, NOW, seed, wait_for


def database_store(url: str, tmp_path: Path) -> Store:
    return Store(PostgresStore(url), data_dir=tmp_path / "other")


async def test_the_dashboard_reads_the_database_and_tails_another_replicas_writes(
    postgres_url: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    other = database_store(postgres_url, tmp_path)
    seed(data, store=other)
    settings = Settings.from_env({"DATA_DIR": str(data), "PATCHMOI_DATABASE_URL": postgres_url})
    app = PatchmoiApp(LocalClient(settings), clock=lambda: NOW, health_interval=3600)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(pilot, lambda: app.table("signals").row_count == 2)
        await pilot.press("2")
        await wait_for(pilot, lambda: app.table("events").row_count == 2)
        assert not list(data.glob("*.jsonl"))  # nothing went to DATA_DIR's files
        other.record_event({"id": "patch:later:v9:upstream.release", "type": "upstream.release", "payload": {}})
        await wait_for(pilot, lambda: app.table("events").row_count == 3)
        assert app.table("events").row_count == 3
        newest = app.selected()
        assert newest is not None and newest["id"] == "patch:later:v9:upstream.release"
    other.close()


def test_the_cli_lists_from_the_database_and_never_prints_the_password(postgres_url: str, tmp_path: Path) -> None:
    other = database_store(postgres_url, tmp_path)
    seed(tmp_path, store=other)
    other.close()
    url = f"{postgres_url} password=hunter2-secret"  # the test server trusts the socket: any password works
    env = {"PATH": "/usr/bin:/bin", "PATCHMOI_DATABASE_URL": url, "DATA_DIR": str(tmp_path / "nowhere")}
    out = subprocess.run(
        [PYTHON, "-m", "patchmoi", "events", "--json"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert {e["id"] for e in json.loads(out.stdout)["events"]} == {EID, EID2}
    status = subprocess.run([PYTHON, "-m", "patchmoi", "status"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert status.returncode == 0 and status.stdout.startswith("database     host=") and "hunter2" not in status.stdout
    assert "malformed lines" not in status.stdout and "ok, schema 1" in status.stdout
    status = subprocess.run(
        [PYTHON, "-m", "patchmoi", "doctor", "--json"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60
    )
    assert "hunter2" not in status.stdout + status.stderr
    checks = {c["name"]: c for c in json.loads(status.stdout)["checks"]}
    assert checks["database"]["status"] == "PASS" and "password=***" in checks["database"]["detail"]
    down = subprocess.run(
        [PYTHON, "-m", "patchmoi", "events"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**env, "PATCHMOI_DATABASE_URL": "host=127.0.0.1 port=1 dbname=x password=hunter2-secret"},
        timeout=60,
    )
    assert down.returncode == 1 and "hunter2" not in down.stdout + down.stderr
    assert "cannot connect to PostgreSQL" in down.stderr and "Traceback" not in down.stderr
    serving = subprocess.run(  # a replica started while its database is down: one line, exit 1 (systemd retries)
        [PYTHON, "-m", "patchmoi", "serve", "--port", str(free_port())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**env, "PATCHMOI_DATABASE_URL": "host=127.0.0.1 port=1 dbname=x password=hunter2-secret"},
        timeout=60,
    )
    assert serving.returncode == 1 and "Traceback" not in serving.stderr and "hunter2" not in serving.stderr
    assert [line for line in serving.stderr.splitlines() if line.startswith("error:")] == [
        line for line in serving.stderr.splitlines() if "cannot connect to PostgreSQL" in line
    ]


def test_a_connection_string_that_does_not_parse_never_shows_its_password(tmp_path: Path) -> None:
    """(review of #17) The driver's parse error quoted the whole string: a traceback with the password."""
    for url in (
        "postgres://pmuser:Sekr1tPw77@[::1",
        "host=x password=Sekr1tPw77 dbname=a nosuch=1",
        "host=x password='Sekr1tPw77 dbname=a",
        "postgresql://u:Sekr1tPw77@h/db?nosuchopt=1",
    ):
        env = {"PATH": "/usr/bin:/bin", "PATCHMOI_DATABASE_URL": url, "DATA_DIR": str(tmp_path)}
        for args in (["status"], ["db", "migrate"], ["doctor"]):
            out = subprocess.run(
                [PYTHON, "-m", "patchmoi", *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60
            )
            said = out.stdout + out.stderr
            assert "Sekr1tPw77" not in said and "Traceback" not in said, (url, args, said)
            assert out.returncode in (1, 2) and "does not parse" in said, (url, args, said)
