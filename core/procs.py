"""Whether a process is alive, by its pid (the owner of a run, of a lease, of a claim in a state file)."""

from __future__ import annotations

import os


def pid_alive(pid: object) -> bool:
    """True for a live process (another user's included); False for a dead one or a value that is no pid."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True
