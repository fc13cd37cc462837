"""The distribution installs one import name, `patchmoi`, and lives beside any other package that ships `core`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from .conftest import PYTHON, ROOT

pytestmark = pytest.mark.slow

SOURCES = ("pyproject.toml", "README.md", "patchmoi", "core", "server", "patchmoi_tui")


def build_wheel(source: Path, out: Path) -> Path:
    """`pip wheel` without build isolation: the venv's setuptools, no registry needed."""
    result = subprocess.run(
        [PYTHON, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("*.whl")
    return wheel


def copy_sources(dest: Path) -> Path:
    """A clean copy of what the wheel is built from, so a stale build/ in the checkout cannot leak in."""
    dest.mkdir()
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def dummy_core(dest: Path) -> Path:
    """Another distribution whose top-level package is `core`, as many projects have."""
    (dest / "core").mkdir(parents=True)
    (dest / "core" / "__init__.py").write_text('WHO = "dummy"\n')
    (dest / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "dummy-core"\nversion = "1.0"\n[tool.setuptools]\npackages = ["core"]\n'
    )
    return dest


def test_the_wheel_has_one_top_level_package_and_works_next_to_another_core(tmp_path: Path) -> None:
    wheel = build_wheel(copy_sources(tmp_path / "src"), tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"patchmoi", "patchmoi-0.1.0.dist-info"}
    assert {
        "patchmoi/__main__.py",
        "patchmoi/core/store/jsonl.py",
        "patchmoi/server/app.py",
        "patchmoi/tui/app.tcss",
        "patchmoi/core/py.typed",
    } <= set(names)
    other = build_wheel(dummy_core(tmp_path / "dummy"), tmp_path / "dist-dummy")

    venv = tmp_path / "fresh"
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            PYTHON,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(other),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # The dependencies (textual, httpx, ...) come from the test venv, after the fresh venv's own packages: a plain
    # path entry, so the checkout's editable install is not seen.
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    version = run(str(venv / "bin" / "patchmoi"), "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "patchmoi 0.1.0"
    assert run(str(python), "-m", "patchmoi", "--version").stdout.strip() == "patchmoi 0.1.0"
    assert run(str(python), "-c", "import core; print(core.WHO)").stdout.strip() == "dummy"
    where = run(str(python), "-c", "import patchmoi.core; print(patchmoi.core.__file__)").stdout.strip()
    assert where.startswith(str(site)), where

    data = tmp_path / "data"
    record = (
        "import sys; from patchmoi.core.store import Store; Store(sys.argv[1]).record_event({'id': "
        "'patch:upstream.release:acme/widget:v1.0.0', 'type': 'upstream.release', 'source': 'patch', "
        "'receivedAt': '2026-11-22T10:00:00.000Z', 'payload': {'repo': 'acme/widget', 'tag': 'v1.0.0'}})"
    )
    assert run(str(python), "-c", record, str(data)).returncode == 0
    events = run(str(venv / "bin" / "patchmoi"), "events", "--json", "--data-dir", str(data))
    assert events.returncode == 0, events.stderr
    listed = [event["id"] for event in json.loads(events.stdout)["events"]]
    assert listed == ["patch:upstream.release:acme/widget:v1.0.0"]

    # Uninstalling the other `core` leaves patchmoi whole.
    removed = subprocess.run(
        [PYTHON, "-m", "pip", "--python", str(python), "uninstall", "-y", "-q", "dummy-core"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert removed.returncode == 0, removed.stderr
    assert run(str(venv / "bin" / "patchmoi"), "--version").returncode == 0
    assert (site / "patchmoi" / "core" / "__init__.py").is_file()


def test_python_dash_m_patchmoi_is_the_command() -> None:
    result = subprocess.run([PYTHON, "-m", "patchmoi", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: patchmoi")
    assert sys.version_info >= (3, 11)
