"""One exception hierarchy for every layer, and one table from its codes to HTTP statuses and exit codes.

Every error patchmoi raises on purpose is a `PatchmoiError` whose `code` is stable: the HTTP API answers
`{"error": code, "message": ...}` with the status the table gives, the CLI prints `error: message` and exits
with the table's code, and the dashboard's remote client turns a code it reads back into the same class.
Anything else is an internal error: logged with its traceback, answered 500 `internal_error`.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class PatchmoiError(Exception):
    """Any other error patchmoi reports on purpose. `code` is stable (HTTP `error` fields, `--json` output)."""

    code = "error"


class UsageError(PatchmoiError):
    """A caller passed a bad argument (unknown status filter, missing flag)."""

    code = "invalid_request"


class ConfigError(PatchmoiError):
    """A configuration file or environment value is invalid. The message names the file and field."""

    code = "invalid_config"


class NotFoundError(PatchmoiError):
    """No record has this id, or the data directory does not exist."""

    code = "not_found"


class StoreWriteError(PatchmoiError):
    """A record or state could not be written (full disk, read-only, file size limit); earlier records are
    intact and the write that failed left nothing behind."""

    code = "store_write_failed"


class BackendError(PatchmoiError):
    """A workspace backend call failed; `status` is the HTTP status when there was a response."""

    code = "backend_error"

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class UpstreamError(PatchmoiError):
    """An upstream source could not be read (fetch, parse, git ls-remote). The message is an operator's."""

    code = "upstream_error"


class GitFailure(PatchmoiError):
    """A git command in a workspace failed."""

    code = "git_failed"


class DatabaseUnavailable(PatchmoiError):
    """PostgreSQL cannot be reached, or answered a read with a server error; try again later."""

    code = "database_unavailable"


# code -> (HTTP status, exit code). A subclass without a row of its own uses its nearest ancestor's.
TABLE: dict[str, tuple[int, int]] = {
    PatchmoiError.code: (500, EXIT_FAIL),
    UsageError.code: (400, EXIT_USAGE),
    ConfigError.code: (500, EXIT_USAGE),  # a server misconfigured by its operator; for the CLI, fix and rerun
    NotFoundError.code: (404, EXIT_FAIL),
    StoreWriteError.code: (507, EXIT_FAIL),
    BackendError.code: (502, EXIT_FAIL),
    UpstreamError.code: (502, EXIT_FAIL),
    GitFailure.code: (500, EXIT_FAIL),
    "adopt_refused": (409, EXIT_FAIL),  # core.workspace.adopt.AdoptRefused
    "sync_unavailable": (409, EXIT_FAIL),  # core.dispatch.dispatcher.SyncUnavailable
    "patch_series_invalid": (500, EXIT_FAIL),  # core.workspace.patches.SeriesError
    DatabaseUnavailable.code: (503, EXIT_FAIL),
}


def _row(exc: PatchmoiError) -> tuple[int, int]:
    for cls in type(exc).__mro__:
        code = getattr(cls, "code", None)
        if isinstance(code, str) and code in TABLE:
            return TABLE[code]
    return TABLE[PatchmoiError.code]


def http_status(exc: PatchmoiError) -> int:
    return _row(exc)[0]


def exit_code(exc: PatchmoiError) -> int:
    return _row(exc)[1]


def classes_by_code() -> dict[str, type[PatchmoiError]]:
    """Every loaded error class by its code; where subclasses share a code, the most general one."""
    found: dict[str, type[PatchmoiError]] = {}
    todo: list[type[PatchmoiError]] = [PatchmoiError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return found


def from_code(code: object, message: str) -> PatchmoiError:
    """The error a peer reported (an HTTP `error` field) as the class that has that code."""
    cls = classes_by_code().get(code) if isinstance(code, str) else None
    if cls is not None:
        return cls(message)
    if isinstance(code, str) and code.endswith("_not_found"):
        found = NotFoundError(message)
        found.code = code  # which record was missing (`flow_event_not_found`, ...)
        return found
    return PatchmoiError(message)
