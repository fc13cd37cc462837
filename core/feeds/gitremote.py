"""Git remotes as a source: the tags and branch heads `git ls-remote` lists, as entries newest first.

`git` runs without a shell, with no terminal to prompt on, and with `GIT_ALLOW_PROTOCOL` limited to
http(s), ssh, git and file: the `ext::` transport (reachable through `url.<base>.insteadOf` even when the
configured URL looks harmless) runs arbitrary commands. The whole process group is killed at the deadline
or when the listing grows past the size cap, so a hanging `git-remote-https` or `ssh` child dies with it.
Error text never carries the credentials a remote URL may hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import os
import re
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from patchmoi.core.config import redact_url
from patchmoi.core.errors import UpstreamError
from patchmoi.core.feeds.entries import (
    MAX_ID_CHARS,
    FeedEntry,
    ParsedFeed,
    SkippedEntry,
    bad_char,
    printable,
    safe_text,
)
from patchmoi.core.records import now_iso

ALLOWED_PROTOCOLS = "http:https:ssh:git:file"
_SCHEMES = {"http", "https", "ssh", "git", "file", "git+ssh", "ssh+git"}
_HOST_SCHEMES = _SCHEMES - {"file"}
# git's own test for the `<transport>::<address>` remote-helper form (transport.c, is_urlschemechar)
_HELPER = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*::")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SCP = re.compile(r"(?:[^@/\s:]+@)?(?:[A-Za-z0-9_][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.%]+\]):(?!//).+", re.S)
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# characters and sequences `git check-ref-format` refuses (controls are caught by bad_char / _CONTROL first)
_REF_FORBIDDEN = re.compile(r"[ ~^:?*\[\\\x7f]|\.\.|@\{|//")
_STDERR_KEEP = 64 * 1024
_NO_READ = "Could not read from remote repository."
_ADVICE = {"Please make sure you have the correct access rights", "and the repository exists."}


class GitRemoteError(UpstreamError):
    """`git ls-remote` gave no usable listing. The message says why in operator terms, without credentials."""


# -- the URL ---------------------------------------------------------------------------------------------
def validate_remote_url(url: str) -> str | None:
    """Why `url` is refused as a git remote, or None.

    Accepted: http(s)://, ssh:// (and git+ssh://), git://, file://, scp-like `[user@]host:path`, and absolute
    local paths. Refused: `<transport>::` forms (`ext::` runs commands), anything git could read as an
    option, control characters, relative paths.
    """
    if not url.strip():
        return "the git remote URL is empty"
    if url != url.strip():
        return "the git remote URL has leading or trailing whitespace"
    bad = bad_char(url)
    if bad or _CONTROL.search(url):
        return f"the git remote URL contains {bad or 'a control character'}"
    if url.startswith("-"):
        return "the git remote URL starts with '-', which git would read as an option"
    scheme = _SCHEME.match(url)
    if scheme:
        name = scheme.group(1).lower()
        if name not in _SCHEMES:
            return f"the git remote URL uses the unsupported scheme {name}:// (use https, http, ssh, git or file)"
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError as exc:
            return f"the git remote URL cannot be read ({exc})"
        if name in _HOST_SCHEMES and not host:
            return f"the git remote URL has no host ({name}://host/path)"
        if host and host.startswith("-"):
            return "the git remote URL's host starts with '-', which ssh would read as an option"
        if name == "file" and not parts.path.startswith("/"):
            return "a file:// git remote URL needs an absolute path (file:///path/to/repo.git)"
        return None
    helper = _HELPER.match(url)
    if helper:
        return (
            f"the git remote URL uses the {helper.group(0)} remote-helper form, which is refused "
            "(ext:: runs arbitrary commands); use https://, ssh://, git://, file://, user@host:path or a path"
        )
    if url.startswith("/"):
        return None
    if _SCP.fullmatch(url) and ":" in url.split("/", 1)[0]:
        return None
    return (
        "the git remote URL is not one git reads as a remote: use https://, http://, ssh://, git://, file://, "
        "user@host:path or an absolute path"
    )


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"
    allowed = ALLOWED_PROTOCOLS.split(":")
    if env.get("GIT_ALLOW_PROTOCOL") is not None:  # the operator's own list may narrow ours, never widen it
        allowed = [p for p in allowed if p in env["GIT_ALLOW_PROTOCOL"].split(":")]
    env["GIT_ALLOW_PROTOCOL"] = ":".join(allowed) or "none"
    env["LC_ALL"] = "C"
    if not env.get("GIT_SSH_COMMAND") and not env.get("GIT_SSH"):
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    return env


def _scrub(text: str, url: str) -> str:
    """`text` with every URL-looking word redacted and the remote URL's credentials removed wherever they are."""
    words = []
    for word in text.split(" "):
        stripped = word.strip("'\"<>(),;:")
        words.append(word.replace(stripped, redact_url(stripped)) if "://" in stripped else word)
    text = " ".join(words)
    secrets: set[str] = set()
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        if parts.password:
            secrets.add(parts.password)
        # a token often stands where the user name goes (https://<token>@host/...); a short name is left be
        if parts.username and not parts.password and len(parts.username) >= 8:
            secrets.add(parts.username)
    for secret in secrets | {unquote(s) for s in secrets}:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def _failure_detail(stderr: str) -> str:
    """What went wrong, from git's stderr: its last few meaningful lines, without the generic advice."""
    lines: list[str] = []
    for raw in stderr.splitlines():
        line = printable(raw).strip()
        for prefix in ("fatal:", "error:"):
            line = line.removeprefix(prefix).strip()
        if not line or line in _ADVICE or line.startswith(("hint:", "Warning: Permanently added")):
            continue
        if lines and lines[-1].endswith(":"):  # git://: "unable to connect to host:" + the reason below it
            lines[-1] += " " + line
        elif line not in lines:
            lines.append(line)
    if len(lines) > 1 and _NO_READ in lines:
        lines.remove(_NO_READ)
    return "; ".join(lines[-3:]) or "no error message"


def _size(limit: int) -> str:
    return f"{limit / (1024 * 1024):g} MiB" if limit >= 1024 * 1024 else f"{limit} bytes"


# -- running git -----------------------------------------------------------------------------------------
async def list_remote(url: str, *, timeout: float, max_bytes: int) -> str:
    """The output of `git ls-remote --heads --tags` for `url` (decoded with surrogateescape: ref names are bytes).

    Raises GitRemoteError when the URL is refused, git is missing, the remote fails, no complete answer comes
    within `timeout` seconds, or the listing is larger than `max_bytes`.
    """
    problem = validate_remote_url(url)
    if problem:
        raise GitRemoteError(problem)
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            "-c",
            "protocol.version=2",
            "ls-remote",
            "--heads",
            "--tags",
            "--",
            url,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_git_env(),
            start_new_session=True,
        )
    except FileNotFoundError:
        raise GitRemoteError("git is not installed (no 'git' on PATH); a git remote source needs it") from None
    except OSError as exc:
        raise GitRemoteError(f"could not run git: {exc.strerror or exc}") from None
    stderr_task = asyncio.ensure_future(_read_tail(proc.stderr))
    finished = False
    try:
        async with asyncio.timeout(timeout):
            out = await _read_capped(proc.stdout, max_bytes)
            err = await stderr_task
            code = await proc.wait()
        finished = True
    except TimeoutError:
        raise GitRemoteError(f"no answer within {timeout:g}s (deadline)") from None
    finally:
        if not finished:  # deadline, size cap or cancellation: git may have exited, its helpers not
            await _stop(proc)
        stderr_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await stderr_task
    if code != 0:
        detail = _failure_detail(err.decode("utf-8", "replace"))
        raise GitRemoteError(f"git ls-remote failed (exit {code}): {safe_text(_scrub(detail, url), 400)}")
    return out.decode("utf-8", "surrogateescape")


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL git and every helper it started (its own session: start_new_session=True), then reap it.

    Process.wait() also waits for the pipes to close, which a helper that left the process group (setsid)
    could hold open for ever: after 2s the pipes are closed instead.
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except OSError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    try:
        async with asyncio.timeout(2):
            await proc.wait()
    except TimeoutError:
        transport = getattr(proc, "_transport", None)  # no public way to close a Process's pipes
        if isinstance(transport, asyncio.BaseTransport):
            transport.close()


async def _read_capped(stream: asyncio.StreamReader | None, max_bytes: int) -> bytes:
    assert stream is not None
    chunks: list[bytes] = []
    total = 0
    while chunk := await stream.read(65536):
        total += len(chunk)
        if total > max_bytes:
            raise GitRemoteError(f"ref listing larger than {_size(max_bytes)}; refused")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_tail(stream: asyncio.StreamReader | None) -> bytes:
    """All of stderr is read (a full pipe would stall git) but only its last 64 KiB kept."""
    assert stream is not None
    tail = b""
    while chunk := await stream.read(65536):
        tail = (tail + chunk)[-_STDERR_KEEP:]
    return tail


def refs_digest(output: str) -> str:
    """A short, stable digest of a listing: an unchanged remote is "not modified" without parsing again."""
    return "git-" + hashlib.sha256(output.encode("utf-8", "surrogateescape")).hexdigest()[:24]


# -- reading the listing ---------------------------------------------------------------------------------
@dataclass
class _Ref:
    name: str  # short name: after refs/tags/ or refs/heads/
    ref: str
    sha: str


def _ref_problem(name: str) -> str | None:
    """Why git would not have a ref of this short name (git check-ref-format), or None."""
    if any("\udc80" <= ch <= "\udcff" for ch in name):
        return "its name is not valid UTF-8"
    bad = bad_char(name)
    if bad:
        return f"its name contains {bad}"
    if not name:
        return "its name is empty"
    shown = safe_text(name, 80)
    match = _REF_FORBIDDEN.search(name)
    if match:
        return f"its name {shown!r} contains {match.group(0)!r}, which git does not allow in a ref name"
    if name.startswith("/") or name.endswith(("/", ".")) or name == "@":
        return f"its name {shown!r} is not a ref name git allows"
    if any(part.startswith(".") or part.endswith(".lock") for part in name.split("/")):
        return f"its name {shown!r} has a component git does not allow (leading '.' or '.lock' ending)"
    return None


def _natural_key(name: str) -> tuple[Any, ...]:
    """Digit runs compare as numbers (v1.10.0 after v1.2.0), without int() limits on long runs."""
    parts = re.split(r"(\d+)", name)
    return tuple((len(p.lstrip("0")), p.lstrip("0"), len(p)) if i % 2 else p for i, p in enumerate(parts))


def _order_tags(names: list[str], tag_order: Callable[[str], Any] | None) -> list[str]:
    """Newest first: by `tag_order` descending when given (tags it cannot place come after, by name),
    else by natural sort of the name, descending."""
    by_name = sorted(names, key=_natural_key, reverse=True)
    if tag_order is None:
        return by_name
    keyed: list[tuple[Any, str]] = []
    rest: list[str] = []
    for name in by_name:
        try:
            key = tag_order(name)
        except Exception:
            key = None
        if key is None:
            rest.append(name)
        else:
            keyed.append((key, name))
    try:
        keyed.sort(key=lambda pair: pair[0], reverse=True)
    except Exception:
        # keys of different kinds: keep the most common kind, the others go with the unplaceable tags
        kinds: dict[type, int] = {}
        for key, _ in keyed:
            kinds[type(key)] = kinds.get(type(key), 0) + 1
        main = max(kinds, key=kinds.__getitem__)
        rest = sorted(rest + [n for k, n in keyed if type(k) is not main], key=_natural_key, reverse=True)
        keyed = [(k, n) for k, n in keyed if type(k) is main]
        try:
            keyed.sort(key=lambda pair: pair[0], reverse=True)
        except Exception:
            return by_name
    return [name for _, name in keyed] + rest


def parse_refs(
    output: str,
    *,
    event: str,
    branches: list[str],
    tag_order: Callable[[str], Any] | None = None,
    seen_at: str | None = None,
) -> ParsedFeed:
    """One entry per tag (`event="release"`, newest first) or per matching branch head (`event="push"`, as
    listed; the id carries the commit, so a new commit is a new entry). ls-remote has no dates: entries are
    dated `seen_at` (default now)."""
    if event not in ("release", "push"):
        raise ValueError(f"unknown git remote event {event!r} (expected 'release' or 'push')")
    published = seen_at or now_iso()
    warnings: list[str] = []
    skipped: list[SkippedEntry] = []
    unreadable: list[SkippedEntry] = []
    tags: dict[str, _Ref] = {}
    peeled: dict[str, str] = {}
    heads: dict[str, _Ref] = {}
    for number, line in enumerate(output.split("\n"), 1):  # not splitlines: U+2028 may be in a ref
        if not line.strip():
            continue
        sha, tab, ref = line.partition("\t")
        sha = sha.strip().lower()
        if not tab or not _SHA.fullmatch(sha) or not ref:
            unreadable.append(
                SkippedEntry(
                    None, f"line {number} of the ref listing is not '<sha><TAB><ref>': {safe_text(line, 80)!r}"
                )
            )
            continue
        if ref.startswith("refs/tags/") and event == "release":
            name = ref[len("refs/tags/") :]
            if name.endswith("^{}"):
                peeled.setdefault(name[:-3], sha)
            elif name in tags:
                warnings.append(f"tag {safe_text(name, 80)!r} is listed twice; kept the first")
            else:
                tags[name] = _Ref(name, ref, sha)
        elif ref.startswith("refs/heads/") and event == "push":
            name = ref[len("refs/heads/") :]
            if name in heads:
                warnings.append(f"branch {safe_text(name, 80)!r} is listed twice; kept the first")
            else:
                heads[name] = _Ref(name, ref, sha)
    entries: list[FeedEntry] = []
    if event == "release":
        for name in peeled.keys() - tags.keys():  # a peeled line without its tag line: the commit is still known
            tags[name] = _Ref(name, f"refs/tags/{name}", peeled[name])
        for name in _order_tags(list(tags), tag_order):
            tag = tags[name]
            problem = _ref_problem(name) or _id_problem(tag.ref)
            if problem:
                skipped.append(SkippedEntry(tag.ref, problem, len(entries)))
                continue
            entries.append(
                FeedEntry(
                    id=tag.ref,
                    title=name,
                    url=None,
                    author=None,
                    published_raw=None,
                    published_at=published,
                    tag=name,
                    ref=tag.ref,
                    sha=peeled.get(name, tag.sha),
                )
            )
    else:
        matched = dict.fromkeys(branches, False)
        for name, head in heads.items():
            hits = [p for p in branches if fnmatch.fnmatchcase(name, p)]
            if not hits:
                continue
            for pattern in hits:
                matched[pattern] = True
            entry_id = f"{head.ref}@{head.sha}"
            problem = _ref_problem(name) or _id_problem(entry_id)
            if problem:
                skipped.append(SkippedEntry(entry_id, problem, len(entries)))
                continue
            entries.append(
                FeedEntry(
                    id=entry_id,
                    title=f"{name} at {head.sha[:12]}",
                    url=None,
                    author=None,
                    published_raw=None,
                    published_at=published,
                    ref=head.ref,
                    sha=head.sha,
                )
            )
        if not branches:
            warnings.append("no branch patterns given; a push source watches nothing")
        warnings += [
            f"branch pattern {safe_text(p, 80)!r} matched no branch of the remote"
            for p, hit in matched.items()
            if not hit
        ]
    # an unreadable line could be anything: placed after every entry
    skipped += [SkippedEntry(s.id, s.reason, len(entries)) for s in unreadable]
    return ParsedFeed(entries=entries, warnings=warnings, kind="git", skipped=skipped)


def _id_problem(entry_id: str) -> str | None:
    return f"its id is longer than {MAX_ID_CHARS} characters" if len(entry_id) > MAX_ID_CHARS else None
