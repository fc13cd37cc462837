"""Host shapes: the tag, commit and branch GitHub, GitLab and Forgejo/Gitea/Codeberg put in feed URLs and entries."""

from __future__ import annotations

import pytest

from patchmoi.core.feeds.shapes import commit_sha, feed_branch, feed_kind, release_tag

SHA = "0123456789abcdef0123456789abcdef01234567"
SHA256 = "0123456789abcdef" * 4

# (entry link, entry id, provider, tag)
TAGS = [
    # GitHub releases.atom and tags.atom entries
    (
        "https://github.com/openai/codex/releases/tag/rust-v0.1.0",
        "tag:github.com,2008:Repository/965415649/rust-v0.1.0",
        "github",
        "rust-v0.1.0",
    ),
    (
        "https://github.com/changesets/changesets/releases/tag/%40changesets%2Fcli%402.27.1",
        "tag:github.com,2008:Repository/1/%40changesets%2Fcli%402.27.1",
        "github",
        "@changesets/cli@2.27.1",
    ),
    ("https://github.com/o/r/releases/tag/release/1.x", "x", "github", "release/1.x"),
    ("https://github.com/o/r/releases/tag/v1.0.0+build.5", "x", "github", "v1.0.0+build.5"),
    ("https://github.com/o/r/releases/tag/v1.0.0%2Bbuild.5", "x", "github", "v1.0.0+build.5"),
    ("https://github.com/o/r/releases/tag/v2.0?utm=x#notes", "x", "github", "v2.0"),
    ("https://github.com/releases/tag/releases/tag/v1", "x", "github", "v1"),  # owner "releases", repo "tag"
    ("https://ghe.example.com/team/app/releases/tag/v3.1", "x", "github", "v3.1"),  # GitHub Enterprise
    # GitHub id fallback (no link, or a link of another shape)
    (None, "tag:github.com,2008:Repository/123/%40s%2Fp%401.2.3", "github", "@s/p@1.2.3"),
    (None, "tag:github.com,2008:Repository/123/v1.2.3", "github", "v1.2.3"),
    ("https://github.com/o/r", "tag:github.com,2008:Repository/123/release/2.0", "github", "release/2.0"),
    (None, "tag:github.com,2008:Repository/123/v1.2.3", "forgejo", None),  # not GitHub's id for others
    # GitLab, subgroups included
    ("https://gitlab.com/gitlab-org/gitlab/-/tags/v17.0.0-ee", "x", "gitlab", "v17.0.0-ee"),
    ("https://gitlab.com/gitlab-org/gitlab/-/releases/v17.0.0-ee", "x", "gitlab", "v17.0.0-ee"),
    ("https://gitlab.com/group/sub/deeper/proj/-/releases/release%2F1.0", "x", "gitlab", "release/1.0"),
    ("https://gitlab.example.org/a/b/-/tags/pkg@1.0.0+meta", "x", "gitlab", "pkg@1.0.0+meta"),
    ("https://gitlab.com/g/p/-/tags/releases/tag/x", "x", "gitlab", "releases/tag/x"),
    # Forgejo / Gitea / Codeberg
    ("https://codeberg.org/forgejo/forgejo/releases/tag/v7.0.0", "1: x", "forgejo", "v7.0.0"),
    ("https://codeberg.org/forgejo/forgejo/src/tag/v7.0.0", "x", "forgejo", "v7.0.0"),
    ("https://git.example.org/gitea/o/r/releases/tag/%40scope%2Fpkg%401.0.0", "x", "gitea", "@scope/pkg@1.0.0"),
    # not a tag: the caller uses the title
    ("https://github.com/o/r/releases", "x", "github", None),
    ("https://github.com/o/r/releases/tag/", "x", "github", None),
    ("https://example.org/blog/releases/tag", "x", "feed", None),
    ("https://github.com/o/r/releases/tag/-n", "x", "github", None),  # would read as an option
    ("https://github.com/o/r/releases/tag/a..b", "x", "github", None),
    ("https://github.com/o/r/releases/tag/v1%20rc", "x", "github", None),
    ("https://github.com/o/r/releases/tag/%ff%fe", "x", "github", None),
    ("http://[::1/releases/tag/x", "x", "github", None),  # not a URL
]


@pytest.mark.parametrize(("url", "entry_id", "provider", "tag"), TAGS)
def test_release_tag(url: str | None, entry_id: str, provider: str, tag: str | None) -> None:
    assert release_tag(url, entry_id, provider) == tag


# (entry link, entry id, sha)
COMMITS = [
    (f"https://github.com/openai/codex/commit/{SHA}", f"tag:github.com,2008:Grit::Commit/{SHA}", SHA),
    (None, f"tag:github.com,2008:Grit::Commit/{SHA}", SHA),
    (f"https://gitlab.com/group/sub/proj/-/commit/{SHA}", f"https://gitlab.com/group/sub/proj/-/commit/{SHA}", SHA),
    (f"https://codeberg.org/forgejo/forgejo/commit/{SHA}", SHA, SHA),
    (f"https://codeberg.org/o/r/commit/{SHA256}", "x", SHA256),
    (f"https://github.com/o/r/commit/{SHA.upper()}", "x", SHA),
    # the spec's rule: the first 40 hex digits of the link if there is one, else of the id
    (f"https://example.org/changes?id={SHA}", "deadbeef" * 5, SHA),
    (None, f"urn:commit:{SHA}", SHA),
    ("https://example.org/changes/1", SHA, None),  # a link without a sha: the id is not looked at
    (None, "no sha here", None),
]


@pytest.mark.parametrize(("url", "entry_id", "sha"), COMMITS)
def test_commit_sha(url: str | None, entry_id: str, sha: str | None) -> None:
    assert commit_sha(url, entry_id) == sha


# (feed URL, kind, branch)
FEEDS = [
    ("https://github.com/openai/codex/releases.atom", "releases", None),
    ("https://github.com/openai/codex/tags.atom", "tags", None),
    ("https://github.com/openai/codex/commits/main.atom", "commits", "main"),
    ("https://github.com/o/r/commits/release/1.x.atom", "commits", "release/1.x"),
    ("https://github.com/o/r/commits/feature%2Fa%2Bb.atom", "commits", "feature/a+b"),
    ("https://github.com/o/r/commits.atom", "commits", None),
    ("https://gitlab.com/gitlab-org/gitlab/-/tags?format=atom", "tags", None),
    ("https://gitlab.com/gitlab-org/gitlab/-/tags.atom", "tags", None),
    ("https://gitlab.com/gitlab-org/gitlab/-/releases.atom", "releases", None),
    ("https://gitlab.com/group/sub/proj/-/commits/main?format=atom", "commits", "main"),
    ("https://gitlab.com/group/sub/proj/-/commits/release/17.0?format=atom", "commits", "release/17.0"),
    ("https://gitlab.com/group/proj/-/commits/stable.atom", "commits", "stable"),
    ("https://gitlab.com/group/proj/-/commits/release%2F2.x?format=atom&ref_type=heads", "commits", "release/2.x"),
    ("https://codeberg.org/forgejo/forgejo/releases.rss", "releases", None),
    ("https://codeberg.org/forgejo/forgejo/releases.atom", "releases", None),
    ("https://codeberg.org/forgejo/forgejo/tags.rss", "tags", None),
    ("https://codeberg.org/forgejo/forgejo/rss/branch/forgejo", "commits", "forgejo"),
    ("https://git.example.org/o/r/atom/branch/release/v7.0", "commits", "release/v7.0"),
    ("https://git.example.org/sub/path/o/r/rss/branch/main", "commits", "main"),
    # unknown shapes
    ("https://github.com/o/r", None, None),
    ("https://github.com/o/r/commits/main", None, None),
    ("https://gitlab.com/group/proj/-/commits/main", None, None),
    ("https://gitlab.com/group/proj/-/tags", None, None),
    ("https://example.org/feed.xml", None, None),
    ("https://registry.npmjs.org/@scope%2fpkg", None, None),
    ("https://github.com/releases.atom", None, None),
]


@pytest.mark.parametrize(("url", "kind", "branch"), FEEDS)
def test_feed_kind_and_branch(url: str, kind: str | None, branch: str | None) -> None:
    assert (feed_kind(url), feed_branch(url)) == (kind, branch)
