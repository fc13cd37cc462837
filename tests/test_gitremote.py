"""Git remotes as a source, against real git: bare repositories in tmp_path, real TCP listeners that hang."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patchmoi.core.feeds.entries import MAX_ID_CHARS
from patchmoi.core.feeds.gitremote import (
    GitRemoteError,
    _failure_detail,
    _scrub,
    list_remote,
    parse_refs,
    refs_digest,
    validate_remote_url,
)
from tests.gitfixture import ENV, commit_files, git
from tests.loopback import free_port

SEEN = "2024-05-01T10:00:00.000Z"
SHA_A = "a" * 40
SHA_B = "b" * 40


class Remote:
    """A bare repository and a work clone that pushes to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "upstream.git"
        self.work = root / "work"
        git(root, "init", "-q", "--bare", "-b", "main", str(self.bare))
        git(root, "init", "-q", "-b", "main", str(self.work))
        git(self.work, "remote", "add", "origin", str(self.bare))
        self.c1 = commit_files(self.work, {"a.txt": "1\n"}, "one")
        git(self.work, "tag", "v1.0.0")  # lightweight
        self.c2 = commit_files(self.work, {"a.txt": "2\n"}, "two")
        git(self.work, "tag", "-a", "-m", "1.2", "v1.2.0")  # annotated
        git(self.work, "tag", "-a", "-m", "rust", "rust-v0.170.0")
        self.c3 = commit_files(self.work, {"a.txt": "3\n"}, "three")
        git(self.work, "tag", "-a", "-m", "1.10", "v1.10.0")
        git(self.work, "tag", "release/2.0")
        git(self.work, "branch", "release/1.x", self.c2)
        git(self.work, "push", "-q", "origin", "main", "release/1.x", "--tags")

    def push_commit(self, branch: str = "main") -> str:
        git(self.work, "checkout", "-q", branch)
        sha = commit_files(self.work, {"b.txt": f"{time.time()}\n"}, "more")
        git(self.work, "push", "-q", "origin", branch)
        return sha


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Remote:
    """Built once for the read-only tests."""
    return Remote(tmp_path_factory.mktemp("remote"))


@pytest.fixture(params=["path", "file-url"])
def url(request: pytest.FixtureRequest, shared: Remote) -> str:
    return str(shared.bare) if request.param == "path" else shared.bare.as_uri()


async def read(url: str, **kw: Any) -> str:
    return await list_remote(url, timeout=kw.pop("timeout", 20.0), max_bytes=kw.pop("max_bytes", 1 << 20))


# -- tags ------------------------------------------------------------------------------------------------
async def test_tags_newest_first_with_peeled_commits(shared: Remote, url: str) -> None:
    parsed = parse_refs(await read(url), event="release", branches=[], seen_at=SEEN)
    assert parsed.kind == "git" and parsed.skipped == [] and parsed.warnings == []
    assert [e.tag for e in parsed.entries] == ["v1.10.0", "v1.2.0", "v1.0.0", "rust-v0.170.0", "release/2.0"]
    by_tag = {e.tag: e for e in parsed.entries}
    assert by_tag["v1.10.0"].sha == shared.c3  # annotated: the peeled commit, not the tag object
    assert by_tag["v1.2.0"].sha == shared.c2
    assert by_tag["rust-v0.170.0"].sha == shared.c2
    assert by_tag["v1.0.0"].sha == shared.c1  # lightweight: its own sha
    assert by_tag["release/2.0"].sha == shared.c3
    tag_object = git(shared.bare, "rev-parse", "refs/tags/v1.2.0")
    assert tag_object != shared.c2 and tag_object not in {e.sha for e in parsed.entries}
    entry = by_tag["release/2.0"]
    assert (entry.id, entry.title, entry.ref, entry.url, entry.author) == (
        "refs/tags/release/2.0",
        "release/2.0",
        "refs/tags/release/2.0",
        None,
        None,
    )
    assert (entry.published_raw, entry.published_at, entry.version) == (None, SEEN, None)


def test_tag_order_key_with_unplaceable_tags() -> None:
    listing = "".join(f"{SHA_A}\trefs/tags/{t}\n" for t in ["v2.0.0", "nightly", "v10.0.0", "weird", "v9.1.0"])

    def key(name: str) -> tuple[int, ...] | None:
        if name == "weird":
            raise ValueError("not a version")
        return tuple(int(p) for p in name[1:].split(".")) if name.startswith("v") else None

    parsed = parse_refs(listing, event="release", branches=[], tag_order=key)
    assert [e.tag for e in parsed.entries] == ["v10.0.0", "v9.1.0", "v2.0.0", "weird", "nightly"]
    # keys of kinds that do not compare with each other: the most common kind is ordered, the others follow
    mixed = parse_refs(
        listing,
        event="release",
        branches=[],
        tag_order=lambda n: n if n in ("nightly", "weird") else len(n) * 10 + int(n[1]),
    )
    assert [e.tag for e in mixed.entries] == ["v10.0.0", "v9.1.0", "v2.0.0", "weird", "nightly"]


def test_published_at_defaults_to_now() -> None:
    parsed = parse_refs(f"{SHA_A}\trefs/tags/v1\n", event="release", branches=[])
    stamp = parsed.entries[0].published_at
    assert stamp.endswith("Z") and len(stamp) == len(SEEN)


# -- branches --------------------------------------------------------------------------------------------
async def test_branch_heads_and_a_new_commit_is_a_new_entry(tmp_path: Path) -> None:
    remote = Remote(tmp_path)
    url = str(remote.bare)
    parsed = parse_refs(await read(url), event="push", branches=["main", "release/*", "nope/*"], seen_at=SEEN)
    assert [(e.id, e.title, e.ref, e.sha, e.tag) for e in parsed.entries] == [
        (f"refs/heads/main@{remote.c3}", f"main at {remote.c3[:12]}", "refs/heads/main", remote.c3, None),
        (
            f"refs/heads/release/1.x@{remote.c2}",
            f"release/1.x at {remote.c2[:12]}",
            "refs/heads/release/1.x",
            remote.c2,
            None,
        ),
    ]
    assert parsed.warnings == ["branch pattern 'nope/*' matched no branch of the remote"]
    before = refs_digest(await read(url))
    assert refs_digest(await read(url)) == before  # unchanged remote: same digest
    new = remote.push_commit("main")
    after = await read(url)
    assert refs_digest(after) != before and refs_digest(after).startswith("git-")
    ids = [e.id for e in parse_refs(after, event="push", branches=["main", "release/*"]).entries]
    assert ids == [f"refs/heads/main@{new}", f"refs/heads/release/1.x@{remote.c2}"]


def test_no_branch_patterns_warns() -> None:
    parsed = parse_refs(f"{SHA_A}\trefs/heads/main\n", event="push", branches=[])
    assert parsed.entries == [] and parsed.warnings == ["no branch patterns given; a push source watches nothing"]


def test_unknown_event_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown git remote event"):
        parse_refs("", event="tag", branches=[])


# -- odd listings ----------------------------------------------------------------------------------------
def test_unreadable_lines_and_refs_are_skipped_the_rest_proceed() -> None:
    long_name = "x" * MAX_ID_CHARS
    listing = "\n".join(
        [
            f"{SHA_A}\trefs/tags/v1.0.0",
            "not a ref line",
            f"{SHA_A[:39]}\trefs/tags/short-sha",
            f"{SHA_A}\trefs/tags/bad name",
            f"{SHA_A}\trefs/tags/has..dots",
            f"{SHA_A}\trefs/tags/ctl\x01",
            f"{SHA_A}\trefs/tags/bytes\udcff",
            f"{SHA_A}\trefs/tags/{long_name}",
            f"{SHA_A}\trefs/tags/x.lock",
            f"{SHA_A}\trefs/tags/line\u2028sep",  # a character splitlines() would break the line at
            f"{SHA_B}\trefs/tags/v0.9.0",
            f"{SHA_B}\trefs/tags/v0.9.0",
            f"{SHA_B}\trefs/heads/ignored-for-release",
            f"{SHA_B}\trefs/pull/1/head",
            "",
        ]
    )
    parsed = parse_refs(listing, event="release", branches=[])
    assert [e.tag for e in parsed.entries] == ["v1.0.0", "v0.9.0", "line\u2028sep"]
    reasons = {s.id: s.reason for s in parsed.skipped}
    assert "refs/tags/bad name" in reasons and "' '" in reasons["refs/tags/bad name"]
    assert "'..'" in reasons["refs/tags/has..dots"]
    assert "control character" in reasons["refs/tags/ctl\x01"]
    assert reasons["refs/tags/bytes\udcff"] == "its name is not valid UTF-8"
    assert "longer than" in reasons[f"refs/tags/{long_name}"]
    assert ".lock" in reasons["refs/tags/x.lock"]
    unreadable = [s for s in parsed.skipped if s.id is None]
    assert [s.reason.split(":")[0] for s in unreadable] == [
        "line 2 of the ref listing is not '<sha><TAB><ref>'",
        "line 3 of the ref listing is not '<sha><TAB><ref>'",
    ]
    assert all(s.position == len(parsed.entries) for s in unreadable)
    assert parsed.warnings == ["tag 'v0.9.0' is listed twice; kept the first"]


def test_skipped_tag_position_is_where_it_would_have_been() -> None:
    listing = f"{SHA_A}\trefs/tags/v3\n{SHA_A}\trefs/tags/v2 bad\n{SHA_A}\trefs/tags/v1\n"
    parsed = parse_refs(listing, event="release", branches=[])
    assert [e.tag for e in parsed.entries] == ["v3", "v1"]
    assert [(s.id, s.position) for s in parsed.skipped] == [("refs/tags/v2 bad", 1)]


def test_peeled_line_without_its_tag_line_still_gives_the_commit() -> None:
    parsed = parse_refs(f"{SHA_B}\trefs/tags/v1^{{}}\n", event="release", branches=[])
    assert [(e.tag, e.sha) for e in parsed.entries] == [("v1", SHA_B)]


def test_branch_with_forbidden_name_is_skipped_only_when_watched() -> None:
    listing = f"{SHA_A}\trefs/heads/ma~in\n{SHA_A}\trefs/heads/other:x\n{SHA_A}\trefs/heads/main\n"
    parsed = parse_refs(listing, event="push", branches=["ma*"])
    assert [e.ref for e in parsed.entries] == ["refs/heads/main"]
    assert [s.id for s in parsed.skipped] == [f"refs/heads/ma~in@{SHA_A}"]


# -- URL checks ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/openai/codex.git",
        "http://127.0.0.1:8080/x.git",
        "ssh://git@github.com/o/r.git",
        "git://example.org/r.git",
        "file:///srv/git/r.git",
        "git@github.com:openai/codex.git",
        "host:path/r.git",
        "/srv/git/r.git",
        "git+ssh://git@example.org/r",
        "https://user:token@example.org/r.git",
    ],
)
def test_accepted_urls(url: str) -> None:
    assert validate_remote_url(url) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "empty"),
        ("  ", "empty"),
        ("ext::sh -c touch% /tmp/x", "ext:: runs arbitrary commands"),
        ("fd::3", "remote-helper form"),
        ("EXT::sh", "remote-helper form"),
        ("-uhttps://x", "starts with '-'"),
        ("--upload-pack=touch /tmp/x", "starts with '-'"),
        ("https://x/\n", "whitespace"),
        ("https://x/a\x00b", "control"),
        ("ftp://example.org/r.git", "unsupported scheme ftp://"),
        ("https:///nohost", "no host"),
        ("relative/path", "not one git reads"),
        ("ssh://-oProxyCommand=x/r", "host starts with '-'"),
        ("file://relative", "absolute path"),
        ("https://[::1/x", "cannot be read"),
        (" /srv/r.git", "whitespace"),
    ],
)
def test_refused_urls(url: str, why: str) -> None:
    problem = validate_remote_url(url)
    assert problem is not None and why in problem


async def test_ext_transport_never_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "MARKER"
    command = f"ext::sh -c touch% {marker}% >&2"
    with pytest.raises(GitRemoteError, match="ext:: runs arbitrary commands"):
        await read(command)
    # a harmless-looking URL that the user's git config rewrites to ext:: (and allows): git itself refuses it
    config = tmp_path / "gitconfig"
    config.write_text(f'[url "{command} #"]\n\tinsteadOf = https://evil.example/\n[protocol "ext"]\n\tallow = always\n')
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.delenv("GIT_ALLOW_PROTOCOL", raising=False)
    with pytest.raises(GitRemoteError, match="transport 'ext' not allowed"):
        await read("https://evil.example/x.git")
    assert not marker.exists()


async def test_the_operators_protocol_list_narrows_ours(shared: Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_ALLOW_PROTOCOL", "https:ext")
    with pytest.raises(GitRemoteError, match="transport 'file' not allowed"):
        await read(str(shared.bare))
    monkeypatch.setenv("GIT_ALLOW_PROTOCOL", "ext")
    with pytest.raises(GitRemoteError, match="transport 'file' not allowed"):
        await read(str(shared.bare))
    monkeypatch.setenv("GIT_ALLOW_PROTOCOL", "file:ext")
    assert "refs/tags/v1.0.0" in await read(str(shared.bare))


# -- failures --------------------------------------------------------------------------------------------
async def test_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(GitRemoteError) as info:
        await read(str(tmp_path / "nope.git"))
    message = str(info.value)
    assert message.startswith("git ls-remote failed (exit 128): ")
    assert "does not appear to be a git repository" in message and "Please make sure" not in message


@pytest.mark.parametrize(
    ("form", "secret"),
    [
        ("https://user:s3cr3t-passw0rd@127.0.0.1:{port}/x.git", "s3cr3t-passw0rd"),
        ("https://ghp_T0KENVALUE1234@127.0.0.1:{port}/x.git", "ghp_T0KENVALUE1234"),
        ("https://127.0.0.1:{port}/x.git?private_token=T0KEN-IN-QUERY", "T0KEN-IN-QUERY"),  # git prints this one
    ],
)
async def test_credentials_never_in_the_message(form: str, secret: str) -> None:
    with pytest.raises(GitRemoteError) as info:
        await read(form.format(port=free_port()))
    message = str(info.value)
    assert "Couldn't connect to server" in message and "127.0.0.1" in message
    assert secret not in message


def test_failure_detail_keeps_the_cause_and_drops_the_advice() -> None:
    advice = (
        "fatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\n"
        "and the repository exists.\n"
    )
    assert (
        _failure_detail("ssh: connect to host h port 22: Connection refused\n" + advice)
        == "ssh: connect to host h port 22: Connection refused"
    )
    assert (
        _failure_detail("fatal: unable to connect to h:\nh[0: 10.0.0.1]: errno=Connection refused\n")
        == "unable to connect to h: h[0: 10.0.0.1]: errno=Connection refused"
    )
    stderr = "remote: \x1b[31mRepository not found.\x1b[0m\nfatal: repository 'https://h/x/' not found\n"
    assert (
        _failure_detail(stderr)
        == "remote: \ufffd[31mRepository not found.\ufffd[0m; repository 'https://h/x/' not found"
    )
    assert _failure_detail(advice) == "Could not read from remote repository."
    assert _failure_detail("") == "no error message"


def test_scrub_removes_credentials_wherever_they_appear() -> None:
    url = "https://bob:hunter2%21@h/x.git?t=q"
    text = "could not reach https://bob:hunter2%21@h/x.git?t=q (password hunter2! rejected for bob)"
    assert _scrub("token ghp_0123456789 refused", "https://ghp_0123456789@h/x") == "token <redacted> refused"
    assert _scrub(text, url) == "could not reach https://h/x.git?<redacted> (password <redacted> rejected for bob)"


async def test_git_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GitRemoteError, match="git is not installed"):
        await read("/srv/r.git")


class SilentServer:
    """Accepts connections and never answers; records when each client goes away (its process died)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.closed_at: list[float] = []
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            while conn.recv(4096):
                pass
        self.closed_at.append(time.monotonic())


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.sock.close()


@pytest.mark.parametrize("scheme", ["git", "http"])
async def test_timeout_kills_a_hanging_remote(silent: SilentServer, scheme: str) -> None:
    started = time.monotonic()
    with pytest.raises(GitRemoteError, match=r"^no answer within 1.5s \(deadline\)$"):
        await read(f"{scheme}://127.0.0.1:{silent.port}/x", timeout=1.5)
    failed = time.monotonic()
    assert 1.4 < failed - started < 5
    # the connection closes because git (and git-remote-http, its child) were killed
    for _ in range(100):
        if silent.closed_at:
            break
        await asyncio.sleep(0.05)
    assert silent.closed_at and silent.closed_at[0] - failed < 2


async def test_cancelling_the_read_kills_git(silent: SilentServer) -> None:
    task = asyncio.create_task(read(f"http://127.0.0.1:{silent.port}/x", timeout=30))
    for _ in range(100):  # until git is connected
        await asyncio.sleep(0.05)
        if silent.accepted:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(60):
        if silent.closed_at:
            break
        await asyncio.sleep(0.05)
    assert silent.closed_at


async def test_a_helper_that_escapes_the_process_group_does_not_hang_us(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's ssh command leaves a process behind, in its own session, holding git's stderr open."""
    pidfile = tmp_path / "escaped.pid"
    script = tmp_path / "ssh"
    script.write_text(f"#!/bin/sh\nsetsid sleep 60 &\necho $! > {pidfile}\nsleep 60\n")
    script.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(script))
    started = time.monotonic()
    try:
        with pytest.raises(GitRemoteError, match="no answer within 1s"):
            await read("ssh://127.0.0.1/x.git", timeout=1)
        assert time.monotonic() - started < 5  # the deadline, then at most 2s for the pipes
    finally:
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)


async def test_listing_larger_than_the_cap_is_refused(tmp_path: Path) -> None:
    remote = Remote(tmp_path)
    lines = "".join(f"create refs/tags/many-{i:04d} {remote.c1}\n" for i in range(400))
    git_stdin(remote.bare, "update-ref", "--stdin", data=lines)
    with pytest.raises(GitRemoteError, match=r"^ref listing larger than 4096 bytes; refused$"):
        await read(str(remote.bare), max_bytes=4096)
    listing = await read(str(remote.bare), max_bytes=1 << 20)
    assert len(listing) > 4096 and len(parse_refs(listing, event="release", branches=[]).entries) == 405


def git_stdin(cwd: Path, *args: str, data: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=ENV, input=data, text=True, check=True)
