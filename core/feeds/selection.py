"""Which new upstream entries become work: a source's `versions` policy, applied to one entry at a time.

An entry the policy turns down is still recorded as a feed signal, with the reason (`filtered`), but starts
no flow event, job or notification. Patterns match the version: the registry's version (npm, PyPI), or the
upstream tag with `tagTemplate` taken off (`rust-v0.170.0` with `rust-v{version}` -> `0.170.0`), or the tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from patchmoi.core.feeds.versions import Key, Range, Scheme, parse_version

TEMPLATE_FIELD = "{version}"


@dataclass(frozen=True)
class VersionPolicy:
    scheme: Scheme = "loose"
    include: re.Pattern[str] | None = None
    exclude: re.Pattern[str] | None = None
    prereleases: bool = True
    range: Range | None = None
    tag_template: str | None = None
    newer_only: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def uses_versions(self) -> bool:
        """Whether any rule needs the name read as a version."""
        return not self.prereleases or self.range is not None or self.newer_only

    def tag_for(self, version: str) -> str:
        return self.tag_template.replace(TEMPLATE_FIELD, version) if self.tag_template else version

    def version_of(self, tag: str) -> str | None:
        """The version in `tag` by the template (None when the tag does not have the template's shape)."""
        if not self.tag_template:
            return tag
        prefix, _, suffix = self.tag_template.partition(TEMPLATE_FIELD)
        if len(tag) > len(prefix) + len(suffix) and tag.startswith(prefix) and tag.endswith(suffix):
            return tag[len(prefix) : len(tag) - len(suffix)]
        return None


@dataclass(frozen=True)
class Decision:
    tag: str | None
    version: str | None
    reason: str | None = None
    """None when the entry is selected; otherwise why it is not (an operator reads this)."""
    key: Key | None = None

    @property
    def selected(self) -> bool:
        return self.reason is None


def decide(
    policy: VersionPolicy,
    *,
    tag: str | None,
    version: str | None,
    yanked: str | None = None,
    newest: tuple[str, Key] | None = None,
) -> Decision:
    """Apply `policy` to one entry. Give `version` for registries (the tag then comes from the template),
    `tag` for feeds and git remotes (the version then comes from the template). `newest` is the newest
    version already seen (its name and key), for `newerOnly`."""
    if version is not None:
        tag = policy.tag_for(version)
    elif tag is not None:
        version = policy.version_of(tag)
        if version is None:
            return Decision(tag, None, f"tag {tag[:80]!r} does not match tagTemplate {policy.tag_template!r}")
    name = version or ""
    if yanked is not None:
        return Decision(tag, version, f"yanked{': ' + yanked[:160] if yanked else ''}")
    if policy.include is not None and not policy.include.search(name):
        return Decision(tag, version, f"{name[:80]!r} does not match versions.include /{policy.include.pattern}/")
    if policy.exclude is not None and policy.exclude.search(name):
        return Decision(tag, version, f"{name[:80]!r} matches versions.exclude /{policy.exclude.pattern}/")
    parsed = parse_version(name, policy.scheme) if name else None
    if parsed is None:
        if policy.uses_versions:
            return Decision(tag, version, f"{name[:80]!r} is not a version in the {policy.scheme} scheme")
        return Decision(tag, version)
    if parsed.prerelease and not policy.prereleases:
        return Decision(tag, version, f"{name[:80]!r} is a pre-release (versions.prereleases is false)", parsed.key)
    if policy.range is not None and not policy.range.contains(parsed):
        return Decision(tag, version, f"{name[:80]!r} is outside versions.range {policy.range.text!r}", parsed.key)
    if policy.newer_only and newest is not None and parsed.key <= newest[1]:
        return Decision(
            tag,
            version,
            f"{name[:80]!r} is not newer than {newest[0][:80]!r}, the newest version already seen (versions.newerOnly)",
            parsed.key,
        )
    return Decision(tag, version, None, parsed.key)


def advance(newest: tuple[str, Key] | None, decision: Decision) -> tuple[str, Key] | None:
    """The newest version taken so far, after `decision`: its version if it was taken and is newer."""
    if (
        decision.selected
        and decision.key is not None
        and decision.version is not None
        and (newest is None or decision.key > newest[1])
    ):
        return decision.version, decision.key
    return newest
