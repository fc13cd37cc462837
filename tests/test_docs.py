"""The docs site builds strictly, and the references match the code they describe."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from patchmoi.server.openapi import openapi_document
from patchmoi.tui.clidoc import render_cli_reference

from .conftest import ROOT

DOCS = ROOT / "docs"


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    out = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "reference" / "http-api" / "index.html").exists()


def test_cli_reference_is_generated_from_the_parser() -> None:
    assert (DOCS / "reference" / "cli.md").read_text() == render_cli_reference(), (
        "run: python -m patchmoi.tui.clidoc > docs/reference/cli.md"
    )


def test_http_reference_lists_every_openapi_path() -> None:
    text = (DOCS / "reference" / "http-api.md").read_text()
    missing = []
    for path in openapi_document()["paths"]:
        base = path.replace("/{id}/retry", "/{id}/retry").split("/{id}")[0]
        if f"`{path}`" not in text and f"{base}" not in text:
            missing.append(path)
        if path.endswith(("/retry", "/replay", "/sync")) and path.rsplit("/", 1)[1] not in text:
            missing.append(path)
    assert missing == []


def test_environment_reference_lists_every_variable_the_code_reads() -> None:
    names = set()
    for path in [p for folder in ("core", "patchmoi_tui", "server") for p in (ROOT / folder).rglob("*.py")]:
        names |= set(
            re.findall(r'"((?:PATCH|DISCORD|PATCHMOI|CODEX|FEED)_[A-Z_]+|DATA_DIR|HOST|PORT)"', path.read_text())
        )
    names -= {"PATCHMOI_RUN_ID", "PATCHMOI_EVENT_ID", "PATCHMOI_DATA_DIR", "PATCHMOI_WORKSPACE"}  # given to steps
    text = (DOCS / "reference" / "environment.md").read_text()
    assert sorted(n for n in names if f"`{n}`" not in text) == []


def test_systemd_unit_is_well_formed() -> None:
    unit = DOCS / "guides" / "patchmoi.service"
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    assert set(parser.sections()) == {"Unit", "Service", "Install"}
    service = parser["Service"]
    assert service["ExecStart"].startswith("/") and service["ExecStart"].endswith("patchmoi serve")
    assert service["Type"] in ("exec", "simple", "notify") and service["Restart"] == "on-failure"
    assert "SIGTERM" in service["SuccessExitStatus"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"
    analyze = shutil.which("systemd-analyze")
    if analyze:  # the full verifier where systemd is present
        out = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True)
        assert "Unknown key" not in out.stderr and "Invalid" not in out.stderr, out.stderr


def test_every_docs_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert sorted(p for p in pages if p not in nav) == []
