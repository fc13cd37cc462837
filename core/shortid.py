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

SHORT_LEN = 8
MIN_PREFIX = 4
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
