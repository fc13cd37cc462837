"""`python -m patchmoi`: the same as the `patchmoi` command."""

from patchmoi.tui.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
