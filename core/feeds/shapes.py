"""Where code hosts put the tag, the commit and the branch in feed URLs, entry links and entry ids.

Pure functions, no I/O. GitHub, GitLab and Forgejo/Gitea/Codeberg are told apart by the shape of the path,
not by host name, so self-hosted instances work, also under a sub-path (`https://example.org/git/o/r/...`):
GitLab puts `/-/` between the project and its pages (and no group or project may be called `-`), GitHub and
Forgejo put the page right after `/<owner>/<repo>`. A path is split on `/` before it is percent-decoded, so an
encoded `/` stays inside its tag or branch, and each value is decoded once. A value git would not take as a
ref name (see `git check-ref-format`), or one that starts with `-`, is not returned.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["commit_sha", "feed_branch", "feed_kind", "release_tag"]

_SHA = re.compile(r"[0-9a-f]{40}", re.IGNORECASE)
"""The spec's fallback rule: the first 40 hex digits in the link, or in the id if there is no link."""
_FULL_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?", re.IGNORECASE)  # SHA-1, or SHA-256 repositories
_GITHUB_TAG_ID = re.compile(r"tag:github\.com,\d{4}:Repository/[^/]+/(.+)")
_GITHUB_COMMIT_ID = re.compile(r"tag:github\.com,\d{4}:Grit::Commit/([0-9a-f]{40}(?:[0-9a-f]{24})?)", re.IGNORECASE)
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(?:/|$)")

# A GitLab project's path is /<group>[/<subgroup>...]/<project>/-/..., the others' /<owner>/<repo>/...
_MIN_BEFORE = 2


def _path(url: str | None) -> tuple[list[str], dict[str, list[str]]] | None:
    """The path's segments, still percent-encoded, and the query; None if `url` is not a URL."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
    except ValueError:
        return None
    segments = parts.path.split("/")[1:]
    if segments and segments[-1] == "":
        segments.pop()
    return segments, query


def _after(segments: list[str], *markers: tuple[str, ...]) -> list[str] | None:
    """The segments after the first of `markers` that has an owner and a repository (or more) before it."""
    for i in range(_MIN_BEFORE, len(segments)):
        for marker in markers:
            if tuple(segments[i : i + len(marker)]) == marker:
                return segments[i + len(marker) :]
    return None


def _ref(segments: list[str] | None) -> str | None:
    """The ref name the segments spell, percent-decoded, or None if git would not take it as one."""
    return _name("/".join(segments)) if segments else None


def _name(raw: str) -> str | None:
    try:
        name = unquote(raw, errors="strict")
    except UnicodeDecodeError:  # percent-encoded bytes that are not UTF-8: not a name anybody typed
        return None
    ok = (
        name
        and not name.startswith(("-", "/", "."))
        and not name.endswith(("/", "."))
        and name != "@"
        and _BAD_REF.search(name) is None
    )
    return name if ok else None


def _feed_path(rest: list[str] | None, query: dict[str, list[str]]) -> list[str] | None:
    """`rest` without the `.atom` suffix of its last segment, or as it is with `?format=atom`; else None."""
    if not rest:
        return None
    if "atom" in query.get("format", []):
        return rest
    if rest[-1].endswith(".atom") and rest[-1] != ".atom":
        return [*rest[:-1], rest[-1][: -len(".atom")]]
    return None


def release_tag(url: str | None, entry_id: str, provider: str) -> str | None:
    """The git tag a release or tag entry is about, or None (the caller then uses the title).

    From the entry's link: GitLab `/<group>[/<subgroup>...]/<repo>/-/tags/<tag>` and `/-/releases/<tag>`;
    GitHub (releases.atom and tags.atom entries both link here) and Forgejo/Gitea/Codeberg
    `/<owner>/<repo>/releases/tag/<tag>`, Forgejo also `/<owner>/<repo>/src/tag/<tag>`. Tags may hold `/`,
    `@` and `+` (`@scope/pkg@1.2.3`, `v1.0+build.5`). Else, for provider github, from the entry id
    `tag:github.com,2008:Repository/<repo id>/<tag>`, which GitHub percent-encodes.
    """
    path = _path(url)
    if path is not None:
        tag = _ref(_after(path[0], ("-", "tags"), ("-", "releases"), ("releases", "tag"), ("src", "tag")))
        if tag:
            return tag
    if provider == "github":
        match = _GITHUB_TAG_ID.fullmatch(entry_id.strip())
        if match:
            return _name(match.group(1))
    return None


def commit_sha(url: str | None, entry_id: str) -> str | None:
    """The commit (40 hex digits, or 64 in a SHA-256 repository, lower case) a commit entry is about.

    From the link: GitHub and Forgejo/Gitea/Codeberg `/<owner>/<repo>/commit/<sha>`, GitLab
    `/<group>[/<subgroup>...]/<repo>/-/commit/<sha>`; else the GitHub id `tag:github.com,2008:Grit::Commit/<sha>`;
    else the spec's rule: the first 40 hex digits in the link if there is one, else in the id.
    """
    path = _path(url)
    if path is not None:
        rest = _after(path[0], ("-", "commit"), ("commit",))
        if rest and _FULL_SHA.fullmatch(rest[0]):
            return rest[0].lower()
    match = _GITHUB_COMMIT_ID.fullmatch(entry_id.strip())
    if match:
        return match.group(1).lower()
    found = _SHA.search(url) if url else _SHA.search(entry_id)
    return found.group(0).lower() if found else None


def feed_branch(feed_url: str) -> str | None:
    """The branch a commits feed follows, or None (not a commits feed, or one of the default branch).

    GitHub `/<owner>/<repo>/commits/<branch>.atom`; GitLab `/<group>[/<subgroup>...]/<repo>/-/commits/<branch>`
    with `?format=atom` or `.atom`; Forgejo/Gitea/Codeberg `/<owner>/<repo>/rss/branch/<branch>` and
    `/atom/branch/<branch>`. Branches may hold `/` (`release/1.x`), as such or as `%2F`.
    """
    path = _path(feed_url)
    if path is None:
        return None
    segments, query = path
    gitlab = _after(segments, ("-",))
    if gitlab is not None:
        return _ref(_feed_path(gitlab[1:], query)) if gitlab[:1] == ["commits"] else None
    forgejo = _after(segments, ("rss", "branch"), ("atom", "branch"))
    if forgejo is not None:
        return _ref(forgejo)
    return _ref(_feed_path(_after(segments, ("commits",)), query))


def feed_kind(feed_url: str) -> str | None:
    """ "releases", "tags" or "commits" for a feed URL of a known shape, else None.

    GitHub `/<o>/<r>/releases.atom`, `/tags.atom`, `/commits.atom`, `/commits/<branch>.atom`; GitLab
    `/<group...>/<r>/-/releases.atom`, `/-/tags?format=atom`, `/-/commits/<branch>?format=atom` (`.atom` or
    `?format=atom` either way); Forgejo/Gitea/Codeberg `/<o>/<r>/releases.rss|.atom`, `/tags.rss|.atom`,
    `/rss/branch/<branch>`, `/atom/branch/<branch>`.
    """
    path = _path(feed_url)
    if path is None:
        return None
    segments, query = path
    gitlab = _after(segments, ("-",))
    if gitlab is not None:
        feed = _feed_path(gitlab, query)
        if feed and feed[0] in ("releases", "tags") and len(feed) == 1:
            return feed[0]
        return "commits" if feed and feed[0] == "commits" else None
    if len(segments) > _MIN_BEFORE:
        last = segments[-1]
        for kind in ("releases", "tags"):
            if last in (f"{kind}.atom", f"{kind}.rss"):
                return kind
        if last == "commits.atom" or _feed_path(_after(segments, ("commits",)), query):
            return "commits"
        if _after(segments, ("rss", "branch"), ("atom", "branch")):
            return "commits"
    return None
