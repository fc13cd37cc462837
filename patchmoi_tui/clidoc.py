"""Render docs/reference/cli.md from the argument parser, so the reference cannot drift from `--help`.

python -m patchmoi.tui.clidoc > docs/reference/cli.md
"""

from __future__ import annotations

import argparse
import os

from patchmoi.tui.cli import build_parser

HEADER = """# CLI reference

`patchmoi COMMAND [options]`. Every command takes `--data-dir DIR` (env `DATA_DIR`) and `--json`.
Progress goes to stderr, results to stdout. Exit codes: `0` ok, `1` failure, not found, or an outcome that
needs a person (`failed`, `blocked`, `needs_intervention`), `2` usage or configuration error (the table at the
end gives each error's code, its exit code and the HTTP status the API answers with).

This page is generated from the parser (`python -m patchmoi.tui.clidoc`); a test keeps it in sync.
"""


def render_error_table() -> str:
    """core.errors.TABLE as a table, each code with the first line of its class's docstring."""
    import patchmoi.core.workspace.adopt  # noqa: F401  (AdoptRefused and SeriesError: their codes are in the table)
    from patchmoi.core.errors import TABLE, classes_by_code

    classes = classes_by_code()
    lines = ["## Errors", "", "| code | exit code | HTTP status | meaning |", "|---|---|---|---|"]
    for code, (status, exit_code) in TABLE.items():
        doc = " ".join((classes[code].__doc__ or "").split()).split("; ")[0] if code in classes else ""
        lines.append(f"| `{code}` | {exit_code} | {status} | {doc} |")
    return "\n".join(lines) + "\n"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def render_cli_reference() -> str:
    os.environ["COLUMNS"] = "100"  # stable wrapping of usage lines
    out = [HEADER]

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for name, sub in _subparsers(parser).items():
            full = f"{prefix} {name}".strip()
            out.append(f"## patchmoi {full}\n")
            out.append((sub.description or "").replace("\n", " ") + "\n")
            out.append("```\n" + sub.format_usage().replace("usage: ", "").strip() + "\n```\n")
            rows = [
                f"| `{', '.join(a.option_strings) or a.dest}` | {(a.help or '').replace('|', '/')} |"
                for a in sub._actions
                if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction) and a.help != argparse.SUPPRESS
            ]
            if rows:
                out.append("\n".join(["| Option | Meaning |", "|---|---|", *rows]) + "\n")
            walk(sub, full)

    walk(build_parser(), "")
    out.append(render_error_table())
    return "\n".join(out)


if __name__ == "__main__":
    print(render_cli_reference(), end="")
