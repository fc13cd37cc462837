"""`feed-sources.json`: load and validate every field of spec §1.

Errors name the file, the source id (or index) and the field, and carry line/column for JSON syntax
errors, so an operator can fix the file without guessing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from patchmoi.core.errors import ConfigError
from patchmoi.core.feeds.gitremote import validate_remote_url
from patchmoi.core.feeds.selection import TEMPLATE_FIELD, VersionPolicy
from patchmoi.core.feeds.versions import SCHEMES, RangeError, Scheme, parse_range

PROVIDERS = ("codeberg", "github", "jojo", "npm", "pypi", "forgejo", "gitea", "gitlab", "generic")
EVENTS = ("push", "release")
KINDS = ("feed", "npm", "pypi", "git")
"""How a source is read, one module each (core.feeds.kinds): an Atom/RSS feed, an npm packument, the PyPI
JSON API, or the refs of a git remote (`git ls-remote`)."""
DEFAULT_SCHEMES: dict[str, Scheme] = {"npm": "semver", "pypi": "pep440"}
DEFAULT_KINDS = {"npm": "npm", "pypi": "pypi"}
"""The kind a provider implies when `kind` is not given (npm packuments were always read as npm)."""
WORKFLOW_MODES = ("workspace_flow", "flow_dispatch")
LEGACY_MODES = ("notify_only", "fork_sync")
DEFAULT_INTERVAL_SECONDS = 300.0


@dataclass(frozen=True)
class RepoInfo:
    owner: str
    name: str
    full_name: str
    web_url: str
    default_branch: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "owner": self.owner,
            "name": self.name,
            "fullName": self.full_name,
            "webUrl": self.web_url,
        }
        if self.default_branch:
            out["defaultBranch"] = self.default_branch
        return out


@dataclass(frozen=True)
class Target:
    """Target A (`notify_only`/`fork_sync`) or B (`workspace_flow`, alias `flow_dispatch`)."""

    mode: str
    raw: dict[str, Any]
    event_type: str | None = None
    workspace_url: str | None = None
    dispatch_url: str | None = None
    workspace_url_env: str | None = None
    dispatch_url_env: str | None = None
    workspace_secret_env: str | None = None
    dispatch_secret_env: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    workspace: str | None = None
    transport: Literal["auto", "http", "local"] = "auto"
    provider: str | None = None
    repo_full_name: str | None = None
    branch: str | None = None

    @property
    def is_workflow(self) -> bool:
        return self.mode in WORKFLOW_MODES


@dataclass(frozen=True)
class FeedSource:
    id: str
    provider: str
    url: str
    event: str
    repo: RepoInfo
    target: Target | None = None
    poll_interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    prime_only: bool = True
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    kind: str = "feed"
    versions: VersionPolicy = field(default_factory=VersionPolicy)
    branches: tuple[str, ...] = ()
    """git push sources: the branch heads watched (fnmatch patterns)."""


SOURCE_KEYS = frozenset(
    {
        "id",
        "provider",
        "url",
        "event",
        "repo",
        "target",
        "pollIntervalSeconds",
        "primeOnly",
        "kind",
        "versions",
        "branches",
    }
)
VERSIONS_KEYS = frozenset({"include", "exclude", "prereleases", "range", "tagTemplate", "newerOnly", "scheme"})
REPO_KEYS = frozenset({"owner", "name", "fullName", "webUrl", "defaultBranch"})
TARGET_KEYS = frozenset(
    {
        "mode",
        "eventType",
        "workspaceUrl",
        "dispatchUrl",
        "workspaceUrlEnv",
        "dispatchUrlEnv",
        "workspaceSecretEnv",
        "dispatchSecretEnv",
        "payload",
        "workspace",
        "transport",
        "provider",
        "repoFullName",
        "branch",
    }
)


class _Checker:
    def __init__(self, path: str, where: str) -> None:
        self.path = path
        self.where = where

    def fail(self, field_name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.where}: field '{field_name}' {problem}")

    def known_keys(self, obj: dict[str, Any], allowed: frozenset[str], prefix: str = "") -> None:
        """Reject typos: unknown keys fail unless they start with '_' or '$' (comments)."""
        import difflib

        for key in obj:
            if key in allowed or key.startswith(("_", "$")):
                continue
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise self.fail(prefix + key, f"is not a known field{hint}; prefix comments with '_'")

    def string(self, obj: dict[str, Any], key: str, *, required: bool, prefix: str = "") -> str | None:
        value = obj.get(key)
        name = prefix + key
        if value is None:
            if required:
                raise self.fail(name, "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, f"must be a non-empty string, got {json.dumps(value)[:60]}")
        return value.strip()


def _load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (set FEED_SOURCES_PATH or pass --sources)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None


def load_sources(path: Path | str) -> list[FeedSource]:
    """Parse and validate a feed-sources file. Raises ConfigError on the first problem."""
    p = Path(path)
    doc = _load_json(p)
    return parse_sources(doc, str(p), base_dir=p.resolve().parent)


def parse_sources(doc: Any, origin: str = "feed-sources.json", base_dir: Path | None = None) -> list[FeedSource]:
    """Validate a parsed document. Relative `target.workspace` paths resolve against `base_dir`."""
    if not isinstance(doc, dict):
        raise ConfigError(f'{origin}: top level must be an object like {{"sources": [...]}}')
    raw_sources = doc.get("sources", [])
    if not isinstance(raw_sources, list):
        raise ConfigError(f"{origin}: field 'sources' must be an array")
    out: list[FeedSource] = []
    seen: set[str] = set()
    for index, item in enumerate(raw_sources):
        label = f"sources[{index}]"
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"].strip():
            label = f"source '{item['id'].strip()}'"
        source = _parse_source(item, _Checker(origin, label), base_dir)
        if source.id in seen:
            raise ConfigError(f"{origin}: {label}: field 'id' duplicates an earlier source")
        seen.add(source.id)
        out.append(source)
    return out


def _parse_source(item: Any, c: _Checker, base_dir: Path | None) -> FeedSource:
    if not isinstance(item, dict):
        raise ConfigError(f"{c.path}: {c.where}: must be an object")
    sid = c.string(item, "id", required=True)
    assert sid is not None
    c.known_keys(item, SOURCE_KEYS)
    if any(ch.isspace() for ch in sid):
        raise c.fail("id", "must not contain white space")
    provider = c.string(item, "provider", required=True)
    if provider not in PROVIDERS:
        raise c.fail("provider", f"must be one of {', '.join(PROVIDERS)}; got {provider!r}")
    kind = c.string(item, "kind", required=False) or DEFAULT_KINDS.get(provider or "", "feed")
    if kind not in KINDS:
        raise c.fail("kind", f"must be one of {', '.join(KINDS)}; got {kind!r}")
    url = c.string(item, "url", required=True)
    assert url is not None
    if kind == "git":
        problem = validate_remote_url(url)
        if problem:
            raise c.fail(
                "url",
                f"must be a git remote (https://, ssh://, git://, file://, user@host:path or an "
                f"absolute path): {problem}",
            )
    elif not url.startswith(("http://", "https://")):
        raise c.fail("url", f"must be an http(s) URL, got {url[:80]!r}")
    event = c.string(item, "event", required=True)
    if event not in EVENTS:
        raise c.fail("event", f"must be 'push' or 'release', got {event!r}")
    if kind in ("npm", "pypi") and event != "release":
        raise c.fail("event", f"must be 'release' for a {kind} source (a registry publishes versions)")
    repo_raw = item.get("repo")
    if not isinstance(repo_raw, dict):
        raise c.fail("repo", "is required and must be an object with owner, name, fullName, webUrl")
    c.known_keys(repo_raw, REPO_KEYS, "repo.")
    repo = RepoInfo(
        owner=c.string(repo_raw, "owner", required=True, prefix="repo.") or "",
        name=c.string(repo_raw, "name", required=True, prefix="repo.") or "",
        full_name=c.string(repo_raw, "fullName", required=True, prefix="repo.") or "",
        web_url=c.string(repo_raw, "webUrl", required=True, prefix="repo.") or "",
        default_branch=c.string(repo_raw, "defaultBranch", required=False, prefix="repo."),
    )
    interval = item.get("pollIntervalSeconds", DEFAULT_INTERVAL_SECONDS)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
        raise c.fail("pollIntervalSeconds", f"must be a positive number of seconds, got {json.dumps(interval)}")
    prime = item.get("primeOnly", True)
    if not isinstance(prime, bool):
        raise c.fail("primeOnly", f"must be true or false, got {json.dumps(prime)}")
    target = _parse_target(item.get("target"), c, base_dir) if item.get("target") is not None else None
    versions = _parse_versions(item.get("versions"), c, kind, event or "")
    branches = _parse_branches(item.get("branches"), c, kind, event or "", repo.default_branch)
    return FeedSource(
        id=sid,
        provider=provider or "",
        url=url,
        event=event or "",
        repo=repo,
        target=target,
        poll_interval_seconds=float(interval),
        prime_only=prime,
        raw=item,
        kind=kind,
        versions=versions,
        branches=branches,
    )


def _parse_versions(raw: Any, c: _Checker, kind: str, event: str) -> VersionPolicy:
    """The `versions` object: which releases of this source become work (core.feeds.selection)."""
    default_scheme = DEFAULT_SCHEMES.get(kind, "loose")
    if raw is None:
        return VersionPolicy(scheme=default_scheme)
    if not isinstance(raw, dict):
        raise c.fail("versions", 'must be an object like {"include": "^3\\\\.", "prereleases": false}')
    if event != "release":
        raise c.fail(
            "versions",
            "applies to release sources (event 'release'); a push source follows a branch"
            + (" (choose them with 'branches')" if kind == "git" else ""),
        )
    c.known_keys(raw, VERSIONS_KEYS, "versions.")
    scheme = raw.get("scheme", default_scheme)
    if scheme not in SCHEMES:
        raise c.fail("versions.scheme", f"must be one of {', '.join(SCHEMES)}; got {json.dumps(scheme)[:60]}")
    patterns: dict[str, re.Pattern[str] | None] = {}
    for key in ("include", "exclude"):
        text = c.string(raw, key, required=False, prefix="versions.")
        try:
            patterns[key] = re.compile(text) if text else None
        except re.error as exc:
            raise c.fail(f"versions.{key}", f"is not a valid regular expression: {exc}") from None
    flags = {}
    for key, default in (("prereleases", True), ("newerOnly", False)):
        value = raw.get(key, default)
        if not isinstance(value, bool):
            raise c.fail(f"versions.{key}", f"must be true or false, got {json.dumps(value)[:60]}")
        flags[key] = value
    range_text = c.string(raw, "range", required=False, prefix="versions.")
    try:
        version_range = parse_range(range_text, scheme) if range_text else None
    except RangeError as exc:
        raise c.fail("versions.range", f"{exc} (scheme {scheme})") from None
    template = c.string(raw, "tagTemplate", required=False, prefix="versions.")
    if template is not None:
        rest = template.replace(TEMPLATE_FIELD, "", 1)
        if TEMPLATE_FIELD not in template or "{" in rest or "}" in rest:
            raise c.fail(
                "versions.tagTemplate",
                f"must contain {TEMPLATE_FIELD} once and no other braces, like "
                f"'rust-v{{version}}'; got {template[:80]!r}",
            )
    return VersionPolicy(
        scheme=scheme,
        include=patterns["include"],
        exclude=patterns["exclude"],
        prereleases=flags["prereleases"],
        range=version_range,
        tag_template=template,
        newer_only=flags["newerOnly"],
        raw=raw,
    )


def _parse_branches(raw: Any, c: _Checker, kind: str, event: str, default_branch: str | None) -> tuple[str, ...]:
    if raw is not None and (kind != "git" or event != "push"):
        raise c.fail(
            "branches", "applies to git push sources (kind 'git', event 'push'); a feed follows the branch in its URL"
        )
    if kind != "git" or event != "push":
        return ()
    if raw is None:
        if not default_branch:
            raise c.fail(
                "branches", 'is required for a git push source without repo.defaultBranch, e.g. ["main", "release/*"]'
            )
        return (default_branch,)
    if not isinstance(raw, list) or not raw or not all(isinstance(b, str) and b.strip() for b in raw):
        raise c.fail("branches", f"must be a non-empty array of branch names or patterns, got {json.dumps(raw)[:80]}")
    return tuple(b.strip().removeprefix("refs/heads/") for b in raw)


def _parse_target(raw: Any, c: _Checker, base_dir: Path | None) -> Target:
    if not isinstance(raw, dict):
        raise c.fail("target", "must be an object")
    mode = c.string(raw, "mode", required=True, prefix="target.")
    if mode not in WORKFLOW_MODES + LEGACY_MODES:
        raise c.fail("target.mode", f"must be one of {', '.join(WORKFLOW_MODES + LEGACY_MODES)}; got {mode!r}")
    assert mode is not None
    for key in ("secret", "workspaceSecret", "dispatchSecret"):
        if key in raw:
            raise c.fail(
                f"target.{key}",
                "is not allowed: put the secret in an environment variable and name it with workspaceSecretEnv",
            )
    c.known_keys(raw, TARGET_KEYS, "target.")
    if mode in LEGACY_MODES:
        return Target(
            mode=mode,
            raw=raw,
            provider=c.string(raw, "provider", required=False, prefix="target."),
            repo_full_name=c.string(raw, "repoFullName", required=False, prefix="target."),
            branch=c.string(raw, "branch", required=False, prefix="target."),
        )
    event_type = c.string(raw, "eventType", required=True, prefix="target.")
    payload = raw.get("payload", {})
    if not isinstance(payload, dict):
        raise c.fail("target.payload", "must be an object")
    urls = {}
    for key in ("workspaceUrl", "dispatchUrl"):
        value = c.string(raw, key, required=False, prefix="target.")
        if value and not value.startswith(("http://", "https://", "ws://", "wss://")):
            raise c.fail(f"target.{key}", f"must be an http(s) or ws(s) URL, got {value[:80]!r}")
        urls[key] = value
    envs = {
        key: c.string(raw, key, required=False, prefix="target.")
        for key in ("workspaceUrlEnv", "dispatchUrlEnv", "workspaceSecretEnv", "dispatchSecretEnv")
    }
    transport = raw.get("transport", "auto")
    if transport not in ("auto", "http", "local"):
        raise c.fail("target.transport", f"must be 'auto', 'http' or 'local', got {json.dumps(transport)}")
    workspace = c.string(raw, "workspace", required=False, prefix="target.")
    if workspace and base_dir is not None and not Path(workspace).is_absolute():
        workspace = str((base_dir / workspace).resolve())
    return Target(
        mode=mode,
        raw=raw,
        event_type=event_type,
        workspace_url=urls["workspaceUrl"],
        dispatch_url=urls["dispatchUrl"],
        workspace_url_env=envs["workspaceUrlEnv"],
        dispatch_url_env=envs["dispatchUrlEnv"],
        workspace_secret_env=envs["workspaceSecretEnv"],
        dispatch_secret_env=envs["dispatchSecretEnv"],
        payload=payload,
        workspace=workspace,
        transport=transport,
    )
