"""patchmoi: keep a fork's patch stack alive on top of upstream.

The one import name of the distribution. Its parts live in the repository's top-level folders and are
linked here: `patchmoi.core` (the headless library: config, records, store, intake, dispatch, runner,
notify), `patchmoi.server` (the Starlette app) and `patchmoi.tui` (the `patchmoi` command and the
Textual dashboard). Importing this package loads none of them beyond core's version.
"""

from patchmoi.core import __version__

__all__ = ["__version__"]
