"""Short ids: eight hex digits that stand for a long record id, as git's short hashes do.

Record ids are long and share long prefixes (`patch:SOURCE:ENTRY:upstream.release:dispatch:2026-…`), so a
prefix of the id itself is not short. The short id is the CRC-32 of the id in hex, which is also what the
store's index keeps for plain logs (`core.store.index.id_hash`): a hex prefix of it is a contiguous range of
that integer column, so a prefix finds its records without a scan. Two ids can share a short id (about one
pair per 90,000 records): whoever resolves one lists the candidates instead of guessing.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from patchmoi.core.errors import NotFoundError, UsageError
from patchmoi.core.store.contract import Kind

if TYPE_CHECKING:
    from patchmoi.core.store import Store

SHORT_LEN = 8
MIN_PREFIX = 4
SHOWN = 10
"""How many candidates an ambiguous short id lists."""
_HEX = re.compile(f"[0-9a-f]{{{MIN_PREFIX},{SHORT_LEN}}}")


def short_id(record_id: str) -> str:
    """The eight-hex-digit short id of a record id."""
    return f"{zlib.crc32(record_id.encode('utf-8', 'surrogatepass')):08x}"


def is_short(text: str) -> bool:
    """Whether `text` can be a short id or a prefix of one (4 to 8 lower-case hex digits). Full ids contain
    `:` or `#`, so they never look like one."""
    return _HEX.fullmatch(text) is not None


def hash_range(prefix: str) -> tuple[int, int]:
    """The CRC-32 values (inclusive) whose short ids start with `prefix`."""
    if not is_short(prefix):
        raise ValueError(f"not a short id: {prefix!r} (4 to 8 hex digits)")
    pad = SHORT_LEN - len(prefix)
    low = int(prefix, 16) << (4 * pad)
    return low, low + (1 << (4 * pad)) - 1


KIND_NAMES: dict[Kind, str] = {
    Kind.EVENTS: "flow event",
    Kind.ATTEMPTS: "maintenance attempt",
    Kind.RUNS: "workspace run",
    Kind.SIGNALS: "feed signal",
    Kind.DISPATCHES: "dispatch",
    Kind.LEGACY_DISPATCHES: "dispatch",
    Kind.JOBS: "feed job",
    Kind.NOTIFICATIONS: "notification",
}

REMOTE_HINT = "short ids are resolved against a local DATA_DIR only: against a server (--url), use the full id"
"""What a remote client says when it is given a short id: the HTTP API looks records up by full id only."""


class AmbiguousShortId(UsageError):
    """A short id (or prefix) that more than one record has: the candidates are listed, none is picked."""

    def __init__(self, text: str, candidates: Sequence[tuple[Kind, str]], more: bool) -> None:
        self.text = text
        self.candidates = list(candidates)
        count = f"more than {len(self.candidates)}" if more else str(len(self.candidates))
        width = max(len(KIND_NAMES[kind]) for kind, _ in self.candidates)
        listed = "".join(
            f"\n  {short_id(record_id)}  {KIND_NAMES[kind]:<{width}}  {record_id}" for kind, record_id in candidates
        )
        hint = "" if len(text) >= SHORT_LEN else "; give more digits or the full id"
        super().__init__(f"ambiguous short id {text}: {count} records{hint}:{listed}")


def matches(store: Store, prefix: str, kinds: Sequence[Kind], limit: int = SHOWN) -> list[tuple[Kind, str]]:
    """(kind, full id) of the records of these kinds whose short id starts with `prefix`, newest first within a
    kind, at most `limit` in all (an id stored under two kinds counts once, under the first)."""
    found: dict[str, Kind] = {}
    for kind in kinds:
        for record_id in store.ids_by_short(kind, prefix, limit):
            found.setdefault(record_id, kind)
            if len(found) >= limit:
                break
        if len(found) >= limit:
            break
    return [(kind, record_id) for record_id, kind in found.items()]


def resolve(store: Store, text: str, kinds: Sequence[Kind], *, what: str | None = None) -> str:
    """The full id that `text` names among records of these kinds, as git resolves a short hash:

    - a text that is not 4 to 8 hex digits (any case) is returned as it is, unlooked-at: the caller's own
      lookup finds the record or says it was not found;
    - a text that is the full id of such a record is that id (it wins over any short id it might look like);
    - otherwise it is a short id or a prefix of one: the one record whose short id starts with it; several
      raise `AmbiguousShortId` (a usage error listing up to `SHOWN` of them with their kind), none raises
      NotFoundError (`what` names what was looked for, e.g. "flow event").

    Neither lookup waits for an index being built (another thread's `warm`): the store then reads the file.
    """
    prefix = text.strip().lower()
    if not is_short(prefix):
        return text
    if any(_exists(store, kind, text) for kind in kinds):
        return text
    found = matches(store, prefix, kinds, SHOWN + 1)
    if len(found) == 1:
        return found[0][1]
    if found:
        raise AmbiguousShortId(prefix, found[:SHOWN], more=len(found) > SHOWN)
    what = what or _names(kinds)
    raise NotFoundError(f"no {what} with id {text!r}, nor one whose short id starts with {prefix}")


def _exists(store: Store, kind: Kind, record_id: str) -> bool:
    """Whether a record of this kind has this id: from the index, or while it is being built, among the ids
    that share its short id (the file is read, not waited for)."""
    if store.warm_for([kind]):
        return record_id in store.ids_by_short(kind, short_id(record_id), 1000)
    return bool(store.existing_ids(kind, [record_id]))


def _names(kinds: Sequence[Kind]) -> str:
    names = list(dict.fromkeys(KIND_NAMES[kind] for kind in kinds))
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
