"""One exception hierarchy, one table from its codes to HTTP statuses and exit codes (core/errors.py)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
from pathlib import Path

import pytest
from starlette.testclient import TestClient

import patchmoi
from patchmoi.core.config import Settings
from patchmoi.core.errors import TABLE, BackendError, NotFoundError, PatchmoiError, exit_code, from_code, http_status
from patchmoi.core.log import log_event
from patchmoi.server.app import Api, create_app

from .conftest import PYTHON, ROOT


def every_error_class() -> list[type[PatchmoiError]]:
    for module in pkgutil.walk_packages(patchmoi.__path__, "patchmoi."):
        if not module.name.startswith("patchmoi.tui.") and module.name != "patchmoi.__main__":
            importlib.import_module(module.name)
    out, todo = [], [PatchmoiError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


def test_every_exception_patchmoi_raises_has_a_row_and_a_unique_code() -> None:
    classes = every_error_class()
    assert len(classes) >= 15
    own_codes = [cls.code for cls in classes if "code" in vars(cls)]
    assert len(own_codes) == len(set(own_codes)), own_codes
    assert set(own_codes) == set(TABLE), "a class with a code of its own needs a row (and a row needs a class)"
    for cls in classes:
        assert from_code(cls.code, "m").code == cls.code  # what the remote client reads back


def test_the_table_gives_statuses_and_exit_codes() -> None:
    assert (http_status(NotFoundError("x")), exit_code(NotFoundError("x"))) == (404, 1)
    assert http_status(BackendError("x", 503)) == 502
    from patchmoi.core.workspace.gitrun import GitError  # a subclass without a row of its own: its parent's

    assert GitError.code == "git_failed" and TABLE["git_failed"] == (500, 1)
    assert isinstance(from_code("workspace_run_not_found", "m"), NotFoundError)


def test_an_internal_error_is_logged_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logged: list[dict[str, object]]
) -> None:
    async def broken(self: Api, request: object, rest: list[str]) -> None:
        raise RuntimeError("kaput")

    monkeypatch.setattr(Api, "openapi", broken)  # a fault injected into one route
    settings = Settings.from_env({"DATA_DIR": str(tmp_path / "data")})
    with TestClient(create_app(settings, poll=False)) as http:
        resp = http.get("/openapi.json")
        assert resp.status_code == 500 and resp.json()["error"] == "internal_error"
        assert "kaput" not in resp.text  # details stay in the log
    errors = [line for line in logged if line["type"] == "http.error"]
    assert errors and errors[0]["error"] == "RuntimeError: kaput"
    trace = str(errors[0]["traceback"])
    assert trace.startswith("Traceback (most recent call last)") and "in broken" in trace


def test_log_event_without_an_exception_has_no_traceback(logged: list[dict[str, object]]) -> None:
    log_event("x.y", a=1)
    assert logged[-1]["type"] == "x.y" and logged[-1]["a"] == 1 and "traceback" not in logged[-1]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["events", "--data-dir", "/nonexistent/patchmoi"], 1),  # not_found
        (["runs", "--status", "bogus"], 2),  # invalid_request
        (["poll", "--once", "--sources", "{bad"], 2),  # invalid_config
    ],
)
def test_cli_exit_codes_come_from_the_table(tmp_path: Path, args: list[str], code: int) -> None:
    if "{bad" in args:
        bad = tmp_path / "feed-sources.json"
        bad.write_text("{bad")
        args = [str(bad) if a == "{bad" else a for a in args]
    if "--data-dir" not in args:
        (tmp_path / "data").mkdir()
        args = [*args, "--data-dir", str(tmp_path / "data")]
    out = subprocess.run([PYTHON, "-m", "patchmoi", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == code, out.stderr
    assert out.stderr.startswith("error: ")
