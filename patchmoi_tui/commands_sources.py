"""`patchmoi sources`: the configured upstream sources, and what the next poll of one would do."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from patchmoi.core.config import Settings, redact_url
from patchmoi.core.errors import NotFoundError, UsageError
from patchmoi.core.feeds.fetch import Fetcher, FetchLimits
from patchmoi.core.feeds.preview import PreviewError, preview_source
from patchmoi.core.sources import FeedSource, load_sources
from patchmoi.core.store import store_for
from patchmoi.tui.cliutil import EXIT_FAIL, EXIT_OK, emit_json
from patchmoi.tui.textfmt import relative_time, shorten, table

EPILOG = """examples:
  patchmoi sources list                         every source: kind, event, policy, last poll
  patchmoi sources test github-caddy-releases   read it now: which entries the next poll emits, and why not
  patchmoi sources test npm-codex --limit 100 --json

`test` reads the source live (a full read, never a 304) and applies the poller's own rules to the saved
state in DATA_DIR. NEXT POLL says what the next poll does with each entry: `emit` (a new entry the
`versions` policy takes: a signal and, for a maintained target, a flow event), `filtered` (a new entry the
policy turns down: a signal that says why), `seen` (taken before), `prime` (the source was never polled: its
first poll records the entries as history), `capped` (new, beyond the burst cap). POLICY and WHY NOT show
the policy's verdict on every entry, so a policy can be tried on history. Nothing is written."""


def add_sources_commands(sub: Any, common: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "sources",
        help="list the upstream sources, or test one live (what the next poll would emit)",
        description="The sources in FEED_SOURCES_PATH (or --sources): list them, or test one against its "
        "live upstream.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(p)
    p.add_argument("--sources", metavar="FILE", help="feed-sources.json (env FEED_SOURCES_PATH)")
    p.set_defaults(handler=cmd_sources_list)
    inner = p.add_subparsers(dest="sources_command", metavar="ACTION")

    def options(sp: argparse.ArgumentParser) -> None:
        """The group's options again, defaulting to nothing: `sources --json test X` and `sources test X
        --json` both work (a sub-parser's own defaults would overwrite the group's values)."""
        sp.add_argument(
            "--data-dir",
            metavar="DIR",
            default=argparse.SUPPRESS,
            help="state directory (env DATA_DIR, default ./data)",
        )
        sp.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON on stdout instead of text"
        )
        sp.add_argument(
            "--sources", metavar="FILE", default=argparse.SUPPRESS, help="feed-sources.json (env FEED_SOURCES_PATH)"
        )

    lp = inner.add_parser(
        "list",
        help="every source: kind, event, version policy, last poll",
        description="Every source in the file: its kind, event, target, `versions` policy, "
        "when it was last polled and its last error (from DATA_DIR).",
    )
    options(lp)
    lp.set_defaults(handler=cmd_sources_list)
    tp = inner.add_parser(
        "test",
        help="read one source now and show which entries the next poll would emit",
        description="Read one source live and show, for each entry, what the next poll would "
        "do with it and why. Writes nothing.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options(tp)
    tp.add_argument("source", metavar="SOURCE", help="the source's id in feed-sources.json")
    tp.add_argument(
        "--limit", type=int, default=30, help="show the newest N entries and every new one (default 30; 0 for all)"
    )
    tp.set_defaults(handler=cmd_sources_test)


def _load(settings: Settings) -> list[FeedSource]:
    if settings.feed_sources_path is None:
        raise UsageError("no feed sources: pass --sources FILE or set FEED_SOURCES_PATH")
    return load_sources(settings.feed_sources_path)


def _state(settings: Settings) -> dict[str, Any]:
    data_dir = Path(settings.data_dir)
    if not settings.database_url and not data_dir.is_dir():
        return {}
    return store_for(settings).read_state_safely()


def policy_text(source: FeedSource) -> str:
    """The `versions` policy in a few words (`-` when there is none)."""
    raw = source.versions.raw
    parts = [f"{k}={raw[k]}" for k in ("include", "exclude", "range", "tagTemplate") if raw.get(k)]
    if raw.get("prereleases") is False:
        parts.append("no pre-releases")
    if raw.get("newerOnly"):
        parts.append("newer only")
    return ", ".join(parts) or "-"


def cmd_sources_list(args: argparse.Namespace, settings: Settings) -> int:
    sources = _load(settings)
    state = _state(settings)
    out = []
    for source in sources:
        st = state.get(source.id) if isinstance(state.get(source.id), dict) else {}
        assert isinstance(st, dict)
        out.append(
            {
                "id": source.id,
                "kind": source.kind,
                "provider": source.provider,
                "event": source.event,
                "url": redact_url(source.url),
                "versions": source.versions.raw or None,
                "branches": list(source.branches) or None,
                "target": source.target.mode if source.target else None,
                "lastCheckedAt": st.get("lastCheckedAt"),
                "lastError": st.get("lastError"),
                "newestVersion": st.get("newestVersion"),
            }
        )
    if args.json:
        emit_json({"sources": [{k: v for k, v in s.items() if v is not None} for s in out]})
        return EXIT_OK
    if not sources:
        print(f"no sources in {settings.feed_sources_path}")
        return EXIT_OK
    rows = [
        (
            s["id"],
            s["kind"],
            s["event"],
            s["target"] or "record",
            policy_text(src),
            relative_time(s["lastCheckedAt"]) if s["lastCheckedAt"] else "never",
            shorten(s["lastError"] or "", 40),
        )
        for s, src in zip(out, sources, strict=True)
    ]
    print(table(("SOURCE", "KIND", "EVENT", "TARGET", "VERSIONS", "CHECKED", "ERROR"), rows, (32, 5, 7, 14, 40, 9, 0)))
    return EXIT_OK


def cmd_sources_test(args: argparse.Namespace, settings: Settings) -> int:
    sources = _load(settings)
    source = next((s for s in sources if s.id == args.source), None)
    if source is None:
        import difflib

        close = difflib.get_close_matches(args.source, [s.id for s in sources], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise NotFoundError(f"no source {args.source!r} in {settings.feed_sources_path}{hint}")
    state = _state(settings)
    st = state.get(source.id) if isinstance(state.get(source.id), dict) else None

    async def run() -> Any:
        fetcher = Fetcher(FetchLimits(deadline=settings.fetch_deadline))
        try:
            return await preview_source(source, st, fetcher)
        finally:
            await fetcher.aclose()

    try:
        preview = asyncio.run(run())
    except PreviewError as exc:
        if args.json:
            emit_json({"sourceId": source.id, "error": str(exc)})
        else:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    data = preview.to_dict()
    # the newest N, and every entry the next poll takes (a backport can stand deep in a git remote's tags)
    rows = (
        preview.rows
        if args.limit <= 0
        else [r for i, r in enumerate(preview.rows) if i < args.limit or r.state in ("new", "capped")]
    )
    if args.json:
        data["entries"] = [r.to_dict() for r in rows]
        emit_json(data)
        return EXIT_OK
    print(f"{source.id}: {source.kind} {source.event} source, {redact_url(source.url)}")
    print(f"versions: {policy_text(source)} (scheme {source.versions.scheme})")
    if preview.priming:
        print(
            "never polled: the first poll records these entries as history"
            + ("" if source.prime_only else " and emits the newest (primeOnly is false)")
        )
    print(
        table(
            ("NEXT POLL", "POLICY", "TAG", "VERSION", "PUBLISHED", "WHY NOT"),
            [
                (
                    r.outcome,
                    "take" if r.decision.selected else "turn down",
                    r.decision.tag or "-",
                    r.decision.version or "-",
                    r.published_at[:16],
                    r.decision.reason or "",
                )
                for r in rows
            ],
            (9, 9, 32, 20, 16, 0),
        )
    )
    if len(rows) < len(preview.rows):
        print(f"... {len(preview.rows) - len(rows)} older entries (--limit 0 shows all)")
    for title in preview.signals:
        print(f"signal: {title}")
    for skipped in preview.skipped:
        print(f"skipped: {shorten(skipped['entryId'] or 'an entry', 60)}: {skipped['reason']}")
    for warning in preview.warnings:
        print(f"warning: {warning}")
    print(f"next poll: {data['wouldEmit']} emitted, {data['wouldFilter']} filtered")
    return EXIT_OK
