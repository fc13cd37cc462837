"""Feed documents for tests, shaped like GitHub, Forgejo and npm serve them."""

from __future__ import annotations

import json
from typing import Any

SHA1 = "0123456789abcdef0123456789abcdef01234567"
SHA2 = "89abcdef0123456789abcdef0123456789abcdef"


def atom_releases(
    tags: list[str], repo: str = "openai/codex", repo_id: str = "965415649", titles: dict[str, str] | None = None
) -> bytes:
    """Newest first, as GitHub's releases.atom."""
    entries = []
    for i, tag in enumerate(tags):
        title = (titles or {}).get(tag, tag)
        entries.append(f"""
  <entry>
    <id>tag:github.com,2008:Repository/{repo_id}/{tag}</id>
    <updated>2026-05-{20 - i:02d}T10:00:00Z</updated>
    <link rel="alternate" type="text/html" href="https://github.com/{repo}/releases/tag/{tag}"/>
    <title>{title}</title>
    <content type="html">Release {title}</content>
    <author><name>release-bot</name></author>
  </entry>""")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en-US">
  <id>tag:github.com,2008:https://github.com/{repo}/releases</id>
  <title>Release notes from {repo}</title>
  <updated>2026-05-20T10:00:00Z</updated>{"".join(entries)}
</feed>
""".encode()


def atom_commits(shas: list[str], repo: str = "openai/codex", branch: str = "main") -> bytes:
    entries = "".join(
        f"""
  <entry>
    <id>tag:github.com,2008:Grit::Commit/{sha}</id>
    <link type="text/html" rel="alternate" href="https://github.com/{repo}/commit/{sha}"/>
    <title>commit {sha[:7]}</title>
    <updated>2026-05-{20 - i:02d}T10:00:00Z</updated>
    <author><name>dev</name></author>
  </entry>"""
        for i, sha in enumerate(shas)
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><id>tag:github.com,2008:/{repo}/commits/{branch}</id>
<title>Recent Commits to {repo}:{branch}</title><updated>2026-05-20T10:00:00Z</updated>{entries}
</feed>""".encode()


def rss_items(items: list[tuple[str, str]]) -> bytes:
    body = "".join(
        f"""
    <item><guid>{guid}</guid><title>{title}</title><link>https://codeberg.org/f/f/releases/tag/{title}</link>
      <author>alice</author><pubDate>Tue, 13 May 2026 10:00:00 +0000</pubDate></item>"""
        for guid, title in items
    )
    return f"""<?xml version="1.0"?><rss version="2.0"><channel><title>Releases</title>
    <link>https://codeberg.org/f/f</link><description>d</description>{body}</channel></rss>""".encode()


def npm_packument(name: str, versions: dict[str, str], latest: str | None = None) -> bytes:
    doc: dict[str, Any] = {
        "name": name,
        "time": {"created": "2026-01-01T00:00:00.000Z", "modified": "2026-05-20T00:00:00.000Z", **versions},
    }
    if latest:
        doc["dist-tags"] = {"latest": latest}
    return json.dumps(doc).encode()


def source(
    sid: str,
    url: str,
    *,
    event: str = "release",
    provider: str = "github",
    target: Any = None,
    prime_only: bool | None = None,
    repo: str = "openai/codex",
    branch: str | None = "main",
) -> dict[str, Any]:
    owner, name = repo.split("/") if "/" in repo else (repo, repo)
    src: dict[str, Any] = {
        "id": sid,
        "provider": provider,
        "url": url,
        "event": event,
        "repo": {"owner": owner, "name": name, "fullName": repo, "webUrl": f"https://github.com/{repo}"},
    }
    if branch:
        src["repo"]["defaultBranch"] = branch
    if target is not None:
        src["target"] = target
    if prime_only is not None:
        src["primeOnly"] = prime_only
    return src


def atom_entry(
    entry_id: str,
    title: str | None = None,
    *,
    updated: str = "2026-05-01T10:00:00Z",
    link: str | None = None,
    author: str = "release-bot",
) -> str:
    """One Atom entry; the arguments go in as they are (already escaped), so a test can put anything there."""
    href = link if link is not None else f"https://github.com/openai/codex/releases/tag/{entry_id}"
    return (
        f"<entry><id>{entry_id}</id><title>{title if title is not None else entry_id}</title>"
        f'<updated>{updated}</updated><link rel="alternate" href="{href}"/>'
        f"<author><name>{author}</name></author></entry>"
    )


def atom_feed(entries: list[str], *, encoding: str = "UTF-8") -> str:
    """An Atom document (text; encode it as the test needs) from `atom_entry` strings, newest first."""
    return (
        f'<?xml version="1.0" encoding="{encoding}"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        f"<id>tag:example,2026:feed</id><title>Releases</title><updated>2026-05-20T10:00:00Z</updated>"
        f"{''.join(entries)}</feed>\n"
    )


def npm_raw(name: str, time_members: list[str], dist_tags: str = "", extra: str = "") -> bytes:
    """An npm packument written by hand, so it can hold what json.dumps never writes (lone surrogates, huge ints).

    `time_members` are raw JSON members such as '"1.0.0": "2026-05-01T00:00:00.000Z"'."""
    members = ['"created": "2026-01-01T00:00:00.000Z"', *time_members]
    tags = f', "dist-tags": {{{dist_tags}}}' if dist_tags else ""
    more = f", {extra}" if extra else ""
    return f'{{"name": "{name}", "time": {{{", ".join(members)}}}{tags}{more}}}'.encode()
