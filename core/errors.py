"""Exceptions shared by every layer; each carries a stable machine code for JSON errors."""

from __future__ import annotations


class PatchmoiError(Exception):
    """Base error. `code` is stable (used in HTTP `error` fields and `--json` output)."""

    code = "error"


class ConfigError(PatchmoiError):
    """A configuration file or environment value is invalid. The message names the file and field."""

    code = "invalid_config"


class NotFoundError(PatchmoiError):
    code = "not_found"


class UsageError(PatchmoiError):
    """A caller passed a bad argument (unknown status filter, missing flag)."""

    code = "invalid_request"


class StoreWriteError(PatchmoiError):
    """A record or state file could not be written (full disk, read-only, file size limit). Earlier records
    are intact; the write that failed left nothing behind."""

    code = "store_write_failed"
