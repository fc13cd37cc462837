"""Git patch-stack commands: `patch doctor|list|capture|rebuild` and `setup fork`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from patchmoi.core.attempt_states import NEEDS_PERSON
from patchmoi.core.config import Settings
from patchmoi.core.errors import UsageError
from patchmoi.core.workspace.forkconfig import load_fork_config
from patchmoi.core.workspace.patches import capture, doctor, list_patches, setup_fork
from patchmoi.core.workspace.rebuild import Rebuild
from patchmoi.tui.cliutil import EXIT_FAIL, EXIT_OK, emit_json
from patchmoi.tui.commands_read import glyph
from patchmoi.tui.textfmt import table


def add_patch_commands(sub: Any, common: Any) -> None:
    patch = sub.add_parser(
        "patch",
        help="inspect and rebuild the fork's patch branches",
        description="Patch branches (patch/* by default) applied in name order on upstream.",
    )
    patch.set_defaults(handler=_need_kind)
    psub = patch.add_subparsers(dest="patch_kind", metavar="ACTION")

    def add(name: str, help_text: str, handler: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = psub.add_parser(name, help=help_text, description=help_text)
        common(p)
        p.add_argument("--repo", help="the fork checkout (env PATCH_MOI_PATCH_REPO, default .)")
        p.set_defaults(handler=handler)
        return p

    add("doctor", "check remotes, upstream ref, patch branches and cleanliness (exit 1 if not ready)", cmd_doctor)
    add("list", "list patch branches in the order they apply", cmd_list)
    p = add("capture", "make a patch branch: one commit on BASE holding FROM's tree", cmd_capture)
    p.add_argument("name", help="patch branch, e.g. patch/040-my-change")
    p.add_argument("--from", dest="source", required=True, help="branch or commit whose tree to capture")
    p.add_argument("--base", help="base of the patch (default: the target branch)")
    p.add_argument("--message")
    p.add_argument("--force", action="store_true", help="replace an existing patch branch")
    p = add("rebuild", "rebuild the stack on an upstream ref in a worktree and publish a candidate ref", cmd_rebuild)
    p.add_argument("--base", help="upstream tag, branch or sha (default: the canonical upstream ref)")

    setup = sub.add_parser("setup", help="prepare a fork checkout", description="Prepare a fork checkout.")
    setup.set_defaults(handler=_need_kind)
    ssub = setup.add_subparsers(dest="setup_kind", metavar="WHAT")
    p = ssub.add_parser(
        "fork",
        help="check the fork's remotes; --apply adds a missing upstream remote",
        description="Check the fork's remotes; --apply adds a missing upstream remote.",
    )
    common(p)
    p.add_argument("--repo", help="the fork checkout (env PATCH_MOI_PATCH_REPO, default .)")
    p.add_argument("--upstream-url", help="upstream clone URL (env PATCH_MOI_UPSTREAM_URL)")
    p.add_argument("--apply", action="store_true", help="add the upstream remote if it is missing")
    p.set_defaults(handler=cmd_setup_fork)


def _need_kind(args: argparse.Namespace, settings: Settings) -> int:
    raise UsageError(f"'{args.command}' needs an action; see 'patchmoi {args.command} --help'")


def _repo(args: argparse.Namespace) -> Path:
    repo = Path(args.repo or os.environ.get("PATCH_MOI_PATCH_REPO") or ".").resolve()
    if not repo.is_dir():
        raise UsageError(f"repository {repo} does not exist")
    return repo


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    report = doctor(_repo(args))
    if args.json:
        emit_json(report)
    else:
        print(f"repo      {report['path']}")
        if "upstreamRef" in report:
            print(f"upstream  {report['upstreamRef']} {str(report.get('upstreamSha') or 'missing')[:12]}")
            print(f"target    {report['targetBranch']} {str(report.get('targetSha') or 'missing')[:12]}")
            print(
                f"patches   {len(report['patches'])} ({report.get('series')}): "
                + ", ".join(
                    p["name"] + (f" ({p['commits']} commits)" if (p.get("commits") or 1) > 1 else "")
                    for p in report["patches"]
                )
            )
        print("ready" if report["ready"] else "not ready:")
        for issue in report["issues"]:
            print(f"  - {issue}")
    return EXIT_OK if report["ready"] else EXIT_FAIL


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from patchmoi.core.workspace.gitrun import GitRunner

    repo = _repo(args)
    patches = list_patches(GitRunner(repo), load_fork_config(repo))
    if args.json:
        emit_json({"patches": patches})
    elif not patches:
        print("no patch branches")
    else:
        print(table(("BRANCH", "SHA", "SUBJECT"), [(p["name"], p["sha"][:12], p["subject"]) for p in patches]))
    return EXIT_OK


def cmd_capture(args: argparse.Namespace, settings: Settings) -> int:
    result = capture(_repo(args), args.name, args.source, base=args.base, message=args.message, force=args.force)
    if args.json:
        emit_json(result)
    else:
        print(
            f"{glyph(result['status'])} {result.get('branch', args.name)} "
            f"{result.get('error') or result.get('message') or str(result.get('sha', ''))[:12]}"
        )
    return EXIT_FAIL if result["status"] in NEEDS_PERSON else EXIT_OK


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    repo = _repo(args)
    config = load_fork_config(repo)
    base = args.base or config.upstream_ref
    kind = "ref" if base.startswith("refs/") else "tag"
    label = base.rsplit("/", 1)[-1] if base.startswith("refs/") else base
    result = Rebuild(repo, Path(settings.data_dir).resolve() / "worktrees", config).run(
        base, label=label, key=f"manual:{repo}:{base}", kind=kind
    )
    if args.json:
        emit_json({k: v for k, v in result.items() if k != "log"})
    else:
        art = result.get("artifacts", {})
        print(f"{glyph(result['status'])}  {result['message']}")
        for name in art.get("applied", []):
            print(f"  applied  {name}")
        for name in art.get("dropped", []):
            print(f"  dropped  {name} (merged upstream)")
        if art.get("worktree"):
            print(f"  resume in {art['worktree']}")
    return EXIT_FAIL if result["status"] in NEEDS_PERSON else EXIT_OK


def cmd_setup_fork(args: argparse.Namespace, settings: Settings) -> int:
    repo = _repo(args)
    report = setup_fork(repo, args.upstream_url or os.environ.get("PATCH_MOI_UPSTREAM_URL"), apply=args.apply)
    if args.json:
        emit_json(report)
    else:
        print(f"repo      {report['path']} (branch {report['branch']})")
        print(
            f"upstream  {report['upstreamRemote']} {report['upstream'] or 'missing'}"
            + (" (added)" if report["addedUpstream"] else "")
        )
        print("ready" if report["ready"] else "not ready:")
        for issue in report["issues"]:
            print(f"  - {issue}")
    return EXIT_OK
