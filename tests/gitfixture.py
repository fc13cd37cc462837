"""Real git repositories for tests: an upstream project, and a fork with a stack of patch branches."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, env=ENV, capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {out.stderr}")
    return out.stdout.strip()


def commit_files(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


GREETING = "hello\nworld\n"


class Forge:
    """upstream/ (the project), fork/ (our checkout: remotes origin + upstream) and origin.git (our remote)."""

    def __init__(self, root: Path, config: str = "", patches: int = 2) -> None:
        self.root = root
        self.upstream = root / "upstream"
        self.fork = root / "fork"
        self.origin = root / "origin.git"
        self.upstream.mkdir(parents=True)
        git(self.upstream, "init", "-q", "-b", "main")
        commit_files(self.upstream, {"greeting.txt": GREETING, "README": "upstream project\n"}, "initial")
        git(self.upstream, "tag", "v1.0.0")
        git(root, "init", "-q", "--bare", str(self.origin))
        git(root, "clone", "-q", "-o", "upstream", str(self.upstream), str(self.fork))
        git(self.fork, "remote", "add", "origin", str(self.origin))
        (self.fork / ".git" / "info" / "exclude").write_text(".patchmoi.toml\n")
        (self.fork / ".patchmoi.toml").write_text(config)
        self.patch_names: list[str] = []
        specs = [
            ("patch/010-maintained-greeting", {"greeting.txt": "hello from the fork\nworld\n"}),
            ("patch/020-shout-mode", {"shout.txt": "LOUD\n"}),
            ("patch/030-package-identity", {"IDENTITY": "fork of upstream\n"}),
        ][:patches]
        for name, files in specs:
            git(self.fork, "checkout", "-q", "-b", name, "v1.0.0")
            commit_files(self.fork, files, f"patch: {name.split('-', 1)[1].replace('-', ' ')}")
            self.patch_names.append(name)
        git(self.fork, "checkout", "-q", "-B", "main", "v1.0.0")
        for name in self.patch_names:
            git(self.fork, "cherry-pick", name)
        git(self.fork, "push", "-q", "origin", "main")

    def release(self, tag: str, files: dict[str, str]) -> str:
        """Upstream commits `files` and tags `tag`; the fork fetches it."""
        sha = commit_files(self.upstream, files, f"release {tag}") if files else git(self.upstream, "rev-parse", "HEAD")
        git(self.upstream, "tag", tag)
        git(self.fork, "fetch", "-q", "upstream", "--tags")
        return sha

    def rev(self, ref: str) -> str:
        return git(self.fork, "rev-parse", ref)
