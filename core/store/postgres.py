"""The PostgreSQL store: the contract (core.store.contract) on one database that every process and replica
shares, with the JSONL store's records, shapes and guarantees.

Layout (core.store.pgschema, applied by `ensure`): every version of every record is a row of `records` with a
global `seq`, its kind, id and filter values, and the record's JSON text in a `json` column, which keeps the
bytes as written (`jsonb` would reorder keys and respell numbers), so `select_json` answers what `append`
wrote. `heads` has one row per (kind, id): its latest version's seq, filter values and short id. Plain kinds
are listed from `records`, latest kinds (`LATEST`) from `heads`; counts are kept by triggers. Every read is an
index range: newest-first lists and pages walk `(kind[, filter], seq)` backwards, `get` is a primary-key lookup.

Write order, and why `follow` never skips a record. A sequence hands out numbers in the order transactions ask,
not the order they commit: writers A and B take seq 7 and 8, B commits first, and a reader that saw 8 and
moved its cursor past it would never see 7. Every write transaction therefore first takes a transaction-scoped
advisory lock on its kind (`pg_advisory_xact_lock`), before it draws any seq; PostgreSQL releases it only after
the commit is visible, so within one kind seqs commit in order, and what any reader sees of a kind is a prefix
of that kind's seqs. Positions and cursors are per kind (`position()` is each kind's highest visible seq), so
`follow` reads `seq > cursor[kind]` and `scan(after=mark)` resumes after its seq, neither ever skipping a late
commit. The cost is that writes of one kind queue behind each other across processes (each holds the lock for
one short transaction: hundreds to thousands per second, where patchmoi writes a few per poll); different
kinds write in parallel. The alternatives were weighed: following only up to the snapshot's xmin stalls every
follower for as long as any transaction in the whole cluster runs, and re-reading a window of recent seqs is
only probably right.

Each write transaction also sends one NOTIFY on `pgschema.CHANNEL` naming its kind; `follow` LISTENs on its own
connection, reads what is new when woken, and reads anyway every `FOLLOW_RECHECK_SECONDS` (a lost wake-up costs
that much latency, never a record). Exactly-once (`append_if_absent`, `append_many_if_absent`,
`append_unique`) is the primary key of `heads`: an insert that conflicts appends nothing, whatever process
races it. Leases are rows (holder, expiry, in the database's clock) plus a session advisory lock that the
holder's lease connection keeps: a holder that dies loses its connection and with it the lock, so the lease is
free at once; one that hangs loses it when its expiry passes.

Secrets: the connection string's password never appears in `location`, `health()`, errors or logs (`redact`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import urllib.parse
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from psycopg.rows import TupleRow
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "the PostgreSQL store needs psycopg 3 and psycopg-pool: pip install 'patchmoi[postgres]'"
    ) from exc

from patchmoi.core import shortid  # a module, not its names: shortid imports the store contract (a cycle)
from patchmoi.core.errors import ConfigError, DatabaseUnavailable, PatchmoiError, StoreWriteError
from patchmoi.core.log import log_event
from patchmoi.core.records import now_iso
from patchmoi.core.store import pgschema
from patchmoi.core.store.contract import FILTERS, LATEST, Change, Cursor, Kind, Record, Warming

Connection = psycopg.Connection[TupleRow]

SCAN_PAGE = 1000
"""Rows a `scan` reads per query (its memory bound)."""
FOLLOW_PAGE = 1000
"""Rows per kind `follow` reads per query; a backlog is read in pages, each yielded as one batch."""
FOLLOW_RECHECK_SECONDS = 2.0
"""How long `follow` waits for a notification before it reads anyway."""
FOLLOW_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
"""Back-off between reconnections when `follow`'s connection is lost (the last one repeats)."""
LEASE_GRACE_SECONDS = 0.1
"""How long `acquire_lease` waits for the session lock of a holder that looks alive: a holder killed a moment
ago keeps its lock until its server process notices the closed connection (usually within milliseconds)."""
IDS_PER_QUERY = 1000
STATE_REBUILD_SEEN = 500  # as the poller's seen-id cap (and the JSONL store's rebuild)
SECRET_KEYS = frozenset({"password", "sslpassword"})
_SECRET_VALUE = re.compile(r"(?<![\w])((?:ssl)?password\s*=\s*)('(?:\\.|[^'\\])*'|[^\s']\S*)")
_INT64 = (-(1 << 63), (1 << 63) - 1)


def redact(conninfo: str) -> str:
    """The connection string with its password replaced by `***` (URL or `key=value` form): what logs, errors
    and `health()` show."""
    if "://" in conninfo:
        try:
            parts = urllib.parse.urlsplit(conninfo)
        except ValueError:
            return "<connection string not shown: it does not parse>"
        netloc = parts.netloc
        userinfo, at, hostport = netloc.rpartition("@")
        if at and ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
        query = [
            (key, "***" if key in SECRET_KEYS else value)
            for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ]
        encoded = urllib.parse.urlencode(query, safe="/:,*")
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, encoded, ""))
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<connection string not shown: it does not parse>"
    shown = _SECRET_VALUE.sub(r"\1***", conninfo)  # in place, so the string reads as the operator wrote it
    secrets = [str(params[key]) for key in SECRET_KEYS & params.keys() if params[key]]
    if any(secret in shown for secret in secrets):  # quoting this pattern does not know: rebuild it instead
        shown = make_conninfo("", **{key: "***" if key in SECRET_KEYS else value for key, value in params.items()})
    return shown


_URL_SECRET = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def _scrubbed(message: str, conninfo: str) -> str:
    """A driver's message about a connection string that does not parse, without the string or its password."""
    message = message.replace(conninfo, "<the connection string>")
    message = _URL_SECRET.sub(r"\1***@", message)
    return _SECRET_VALUE.sub(r"\1***", " ".join(message.split()))


def _password(conninfo: str) -> str | None:
    try:
        value = conninfo_to_dict(conninfo).get("password")
    except psycopg.ProgrammingError:
        return None
    return str(value) if value else None


def record_id(kind: Kind, record: Mapping[str, Any]) -> str | None:
    """The record's id: its kind's id fields joined by ':', if they are all strings (as the JSONL index reads it)."""
    parts = [record.get(name) for name in pgschema.ID_FIELDS[kind]]
    return ":".join(parts) if all(isinstance(p, str) for p in parts) else None  # type: ignore[arg-type]


def _text(value: Any) -> str | None:
    """A filter column's value: strings only, and none with a NUL (PostgreSQL text cannot hold one)."""
    return value if isinstance(value, str) and "\x00" not in value else None


def _checked_id(record_id: str) -> str:
    if "\x00" in record_id:
        raise ValueError(f"a record id cannot contain NUL in PostgreSQL: {record_id!r}")
    return record_id


def _short(record_id: str) -> int:
    return zlib.crc32(record_id.encode("utf-8", "surrogatepass"))  # = core.shortid.short_id as an integer


def _encode(record: Record) -> str:
    """The record's JSON text, as the JSONL store writes a line (without its newline)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def _decode(text: str) -> Record | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _seq_cursor(cursor: Cursor | None) -> int | None:
    """A `select`/`Change` cursor's seq; ValueError for anything else."""
    if cursor is None:
        return None
    try:
        seq = int(cursor)
    except (TypeError, ValueError):
        raise ValueError(f"not a cursor of this store: {cursor!r}") from None
    if not _INT64[0] <= seq <= _INT64[1]:
        raise ValueError(f"not a cursor of this store: {cursor!r}")
    return seq


@dataclass
class _Lease:
    holder: str
    locked: bool  # whether this store's lease connection holds the lease's session lock


@dataclass
class _Rows:
    """A batch of records as the write statements take them (one array per column)."""

    ids: list[str | None]
    shorts: list[int | None]
    k1: list[str | None]
    k2: list[str | None]
    bodies: list[str]

    def params(self, kind: Kind) -> dict[str, Any]:
        return {
            "kind": kind.value,
            "plain": kind not in LATEST,
            "ids": self.ids,
            "shorts": self.shorts,
            "k1": self.k1,
            "k2": self.k2,
            "bodies": self.bodies,
        }


# The batch goes as arrays in the binary format (`%b`): psycopg escapes text-format arrays in Python, a
# hundred times slower than the binary dumpers (60 ms against 0.6 ms for 1,000 flow events).
_INPUT = """
WITH input AS (
  SELECT * FROM unnest(%(ids)b::text[], %(shorts)b::bigint[], %(k1)b::text[], %(k2)b::text[], %(bodies)b::text[])
    WITH ORDINALITY AS t(id, short, k1, k2, body, ord)
)"""
# Each record gets the next seq, in batch order (evaluated after the sort), and a row of `records`; each id's
# newest version in the batch moves its head (a new id gets one). `plain`: filter values go to `records` too.
_APPEND = """
WITH input AS MATERIALIZED (
  SELECT t.*, nextval('record_seq') AS seq
  FROM unnest(%(ids)b::text[], %(shorts)b::bigint[], %(k1)b::text[], %(k2)b::text[], %(bodies)b::text[])
    WITH ORDINALITY AS t(id, short, k1, k2, body, ord)
  ORDER BY t.ord
), added AS (
  INSERT INTO records (seq, kind, id, k1, k2, body)
  SELECT seq, %(kind)s, id, CASE WHEN %(plain)s THEN k1 END, CASE WHEN %(plain)s THEN k2 END, body::json FROM input
)
INSERT INTO heads (kind, id, seq, short, k1, k2)
SELECT DISTINCT ON (id) %(kind)s, id, seq, short, k1, k2 FROM input WHERE id IS NOT NULL ORDER BY id, seq DESC
ON CONFLICT (kind, id) DO UPDATE SET seq = EXCLUDED.seq, k1 = EXCLUDED.k1, k2 = EXCLUDED.k2
WHERE heads.seq < EXCLUDED.seq
"""
# The head is claimed first (the primary key decides, whoever races): only claimed ids get a record.
_APPEND_IF_ABSENT = (
    _INPUT
    + """, claimed AS (
  INSERT INTO heads (kind, id, seq, short, k1, k2)
  SELECT %(kind)s, id, nextval('record_seq'), short, k1, k2 FROM input ORDER BY ord
  ON CONFLICT (kind, id) DO NOTHING
  RETURNING id, seq
)
INSERT INTO records (seq, kind, id, k1, k2, body)
SELECT c.seq, %(kind)s, c.id, CASE WHEN %(plain)s THEN i.k1 END, CASE WHEN %(plain)s THEN i.k2 END, i.body::json
FROM claimed c JOIN input i ON i.id = c.id
RETURNING id
"""
)
_LEASE_HELD = """
EXISTS (
  SELECT 1 FROM pg_locks k
  WHERE k.locktype = 'advisory' AND k.granted AND k.objsubid = 2
    AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND k.classid = %(ns)s::oid AND k.objid = l.lease_no::oid
)"""


class PostgresStore:
    """A `RecordStore` on a PostgreSQL database (`url`: a `postgresql://` URL or a `key=value` string).

    Nothing connects until the first operation; that one opens a pool of up to `pool_size` connections and
    applies the migrations the database lacks (as `ensure` does). Thread-safe; one instance per process."""

    networked = True

    def __init__(self, url: str, *, pool_size: int = 8, connect_timeout: float = 10.0) -> None:
        try:
            conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:  # its message quotes the string, password and all: never shown
            raise ConfigError(
                f"the PostgreSQL connection string does not parse: {_scrubbed(str(exc), url)} (PATCHMOI_DATABASE_URL: "
                "postgresql://user:password@host:5432/db, or host=... dbname=...; percent-encode special characters)"
            ) from None
        self.url = url
        self.location = redact(url)
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.state_problem: str | None = None
        self._secret = _password(url)
        self._pool: ConnectionPool[Connection] | None = None
        self._pool_lock = threading.Lock()
        self._instance: str | None = None
        self._lease_conn: Connection | None = None
        self._lease_lock = threading.RLock()
        self._leases: dict[str, _Lease] = {}
        self._lease_nos: dict[str, int] = {}

    # -- connections -------------------------------------------------------------------------------------
    def _safe(self, exc: BaseException) -> str:
        """An error's message with the password cut out (the driver's messages do not carry it; this makes
        sure)."""
        text = " ".join(str(exc).split()) or type(exc).__name__  # one line: the driver's hint follows a newline
        if self._secret:
            text = text.replace(self._secret, "***")
        return text

    def _connections(self) -> ConnectionPool[Connection]:
        """The pool, opened on first use: one plain connection first checks the server and the schema (and fails
        at once with the driver's reason: refused, unknown database, bad password), then the pool opens."""
        pool = self._pool
        if pool is not None:
            return pool
        with self._pool_lock:
            if self._pool is None:
                try:
                    with self._connect() as conn:
                        self._check_server(conn)
                        if pgschema.applied_version(conn) != pgschema.LATEST_VERSION:
                            self._migrate(conn)
                except psycopg.OperationalError as exc:
                    raise DatabaseUnavailable(
                        f"cannot connect to PostgreSQL at {self.location}: {self._safe(exc)}"
                    ) from exc
                pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.pool_size,
                    kwargs={"autocommit": True, "application_name": "patchmoi"},
                    check=ConnectionPool.check_connection,  # a connection a restart broke is replaced, not used
                    timeout=self.connect_timeout,
                    name="patchmoi-store",
                    open=False,
                )
                try:
                    pool.open(wait=True, timeout=self.connect_timeout)
                except PoolTimeout as exc:
                    pool.close()
                    raise DatabaseUnavailable(
                        f"cannot connect to PostgreSQL at {self.location} within {self.connect_timeout:g} s"
                    ) from exc
                self._pool = pool
            return self._pool

    def _connect(self, application_name: str = "patchmoi") -> Connection:
        """A connection of its own (not the pool's), autocommit."""
        return psycopg.connect(
            self.url,
            autocommit=True,
            application_name=application_name,
            connect_timeout=max(2, round(self.connect_timeout)),  # libpq's unit is the second, 2 at least
        )

    def _check_server(self, conn: Connection) -> None:
        row = conn.execute("SELECT current_setting('server_version_num')::int, current_setting('server_encoding')")
        version, encoding = row.fetchone() or (0, "")
        if int(version) < pgschema.MIN_SERVER_VERSION:
            raise ConfigError(f"PostgreSQL at {self.location} is version {version}: patchmoi needs 13 or later")
        if encoding != "UTF8":
            raise ConfigError(f"the database at {self.location} is encoded {encoding}: patchmoi needs UTF8")

    def _migrate(self, conn: Connection) -> None:
        try:
            applied = pgschema.migrate(conn)
        except pgschema.SchemaTooNew as exc:
            raise ConfigError(f"{self.location}: {exc}") from None
        if applied:
            log_event("store.migrated", location=self.location, versions=applied)

    @contextmanager
    def _connection(self, *, writing: bool = False) -> Iterator[Connection]:
        """A pooled connection (autocommit); database errors become `StoreWriteError` for writes and
        `DatabaseUnavailable` for lost connections on reads, their messages without secrets. A write's
        transaction leaves nothing behind when it fails, with one exception no database avoids: a connection
        lost while COMMIT was on its way leaves unknown whether it happened (an `append_if_absent` tried again
        then answers False)."""
        try:
            with self._connections().connection() as conn:
                yield conn
        except DatabaseUnavailable as exc:
            if writing:
                raise StoreWriteError(f"{exc}: nothing was written") from exc
            raise
        except (psycopg.Error, PoolTimeout) as exc:
            if writing:
                raise StoreWriteError(f"PostgreSQL at {self.location}: write failed: {self._safe(exc)}") from exc
            if isinstance(exc, psycopg.OperationalError | PoolTimeout):
                raise DatabaseUnavailable(f"PostgreSQL at {self.location}: {self._safe(exc)}") from exc
            raise

    def _query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[TupleRow]:
        with self._connection() as conn:
            return conn.execute(sql.encode(), params).fetchall()

    def instance(self) -> str:
        """The random token minted with this database's schema (scan cursors carry it)."""
        if self._instance is None:
            rows = self._query("SELECT value FROM store_meta WHERE key = 'instance'")
            self._instance = str(rows[0][0]) if rows else "?"
        return self._instance

    def ensure(self) -> None:
        """Connect and bring the schema up to date (concurrent callers apply each migration once)."""
        pool = self._connections()
        with pool.connection() as conn:
            self._migrate(conn)

    # -- writes ------------------------------------------------------------------------------------------
    def _rows(self, kind: Kind, items: Sequence[tuple[Record, str | None]]) -> _Rows:
        fields = FILTERS[kind]
        f1, f2 = fields[0], (fields[1] if len(fields) > 1 else None)
        rows = _Rows([], [], [], [], [])
        for record, rid in items:
            rows.ids.append(None if rid is None else _checked_id(rid))
            rows.shorts.append(None if rid is None else _short(rid))
            rows.k1.append(_text(record.get(f1)))
            rows.k2.append(None if f2 is None else _text(record.get(f2)))
            rows.bodies.append(_encode(record))
        return rows

    @contextmanager
    def _writing(self, kind: Kind) -> Iterator[Connection]:
        """One write transaction of `kind`: its lock taken first (see the module's docstring), its
        notification sent at commit."""
        with self._connection(writing=True) as conn, conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, %s), pg_notify(%s, %s)",
                (pgschema.LOCK_NAMESPACE, pgschema.KIND_LOCKS[kind], pgschema.CHANNEL, kind.value),
            )
            yield conn

    def append(self, kind: Kind, record: Record) -> None:
        self.append_many(kind, [record])

    def append_many(self, kind: Kind, records: Sequence[Record]) -> None:
        if not records:
            return
        rows = self._rows(kind, [(record, record_id(kind, record)) for record in records])
        with self._writing(kind) as conn:
            conn.execute(_APPEND.encode(), rows.params(kind))

    def append_if_absent(self, kind: Kind, record: Record, record_id: str) -> bool:
        return self.append_many_if_absent(kind, [(record, record_id)])[0]

    def append_many_if_absent(self, kind: Kind, items: Sequence[tuple[Record, str]]) -> list[bool]:
        """The records are stored under the ids given (their heads' primary key decides which are new)."""
        if not items:
            return []
        first: dict[str, int] = {}
        for i, (_, rid) in enumerate(items):
            first.setdefault(rid, i)
        unique = [items[i] for i in first.values()]
        rows = self._rows(kind, [(record, rid) for record, rid in unique])
        with self._writing(kind) as conn:
            taken = {str(row[0]) for row in conn.execute(_APPEND_IF_ABSENT.encode(), rows.params(kind))}
        return [first[rid] == i and rid in taken for i, (_, rid) in enumerate(items)]

    def append_unique(self, kind: Kind, record: Record, base_id: str) -> str:
        _checked_id(base_id)
        with self._writing(kind) as conn:
            n = 1
            while True:
                candidates = [base_id if k == 1 else f"{base_id}#{k}" for k in range(n, n + 64)]
                found = conn.execute(
                    "SELECT id FROM heads WHERE kind = %s AND id = ANY(%s::text[])", (kind.value, candidates)
                )
                taken = {str(row[0]) for row in found}
                free = [c for c in candidates if c not in taken]
                if free:
                    break
                n += 64
            chosen = free[0]
            record["id"] = chosen
            rows = self._rows(kind, [(record, chosen)])
            if not conn.execute(_APPEND_IF_ABSENT.encode(), rows.params(kind)).fetchall():
                # the kind's lock is held: nobody can have taken it since the look-up above
                raise StoreWriteError(f"PostgreSQL at {self.location}: id {chosen!r} was taken under the lock")
        return chosen

    # -- reads -------------------------------------------------------------------------------------------
    def _where(self, kind: Kind, filters: Mapping[str, str] | None, prefix: str) -> tuple[str, list[Any]] | None:
        """The filter conditions on the `k1`/`k2` columns (None: a value no record can have)."""
        fields = FILTERS[kind]
        clauses: list[str] = []
        args: list[Any] = []
        for field, value in (filters or {}).items():
            if value is None:
                continue
            if field not in fields:
                raise ValueError(f"{kind.value} are not indexed by {sorted(filters or {})}")
            if _text(value) is None:
                return None
            clauses.append(f" AND {prefix}k{fields.index(field) + 1} = %s")
            args.append(value)
        return "".join(clauses), args

    def _select(
        self, kind: Kind, filters: Mapping[str, str] | None, limit: int, before: int | None
    ) -> list[tuple[int, str]]:
        if limit == 0:
            return []
        prefix = "h." if kind in LATEST else "r."
        where = self._where(kind, filters, prefix)
        if where is None:
            return []
        clauses, args = where
        if before is not None:
            clauses += f" AND {prefix}seq < %s"
            args.append(before)
        source = "heads h JOIN records r ON r.kind = h.kind AND r.seq = h.seq" if kind in LATEST else "records r"
        sql = (
            f"SELECT {prefix}seq, r.body::text FROM {source} WHERE {prefix}kind = %s{clauses}"
            f" ORDER BY {prefix}seq DESC LIMIT %s"
        )
        rows = self._query(sql, [kind.value, *args, limit if limit > 0 else None])
        return [(int(seq), str(body)) for seq, body in rows]

    def select(
        self,
        kind: Kind,
        *,
        filters: Mapping[str, str] | None = None,
        limit: int = 50,
        before: Cursor | None = None,
    ) -> list[tuple[Cursor, Record]]:
        out: list[tuple[Cursor, Record]] = []
        for seq, body in self._select(kind, filters, limit, _seq_cursor(before)):
            record = _decode(body)
            if record is not None:
                out.append((str(seq), record))
        return out

    def select_json(self, kind: Kind, *, filters: Mapping[str, str] | None = None, limit: int = 50) -> list[bytes]:
        return [body.encode("utf-8") for _, body in self._select(kind, filters, limit, None)]

    def get(self, kind: Kind, record_id: str) -> Record | None:
        if "\x00" in record_id:
            return None
        rows = self._query(
            "SELECT r.body::text FROM heads h JOIN records r ON r.kind = h.kind AND r.seq = h.seq"
            " WHERE h.kind = %s AND h.id = %s",
            (kind.value, record_id),
        )
        return _decode(str(rows[0][0])) if rows else None

    def existing_ids(self, kind: Kind, ids: Sequence[str]) -> set[str]:
        wanted = list(dict.fromkeys(i for i in ids if "\x00" not in i))
        found: set[str] = set()
        for start in range(0, len(wanted), IDS_PER_QUERY):
            rows = self._query(
                "SELECT id FROM heads WHERE kind = %s AND id = ANY(%s::text[])",
                (kind.value, wanted[start : start + IDS_PER_QUERY]),
            )
            found.update(str(row[0]) for row in rows)
        return found

    def ids_by_short(self, kind: Kind, prefix: str, limit: int = 10) -> list[str]:
        low, high = shortid.hash_range(prefix.lower())
        if limit <= 0:
            return []
        rows = self._query(
            "SELECT id FROM heads WHERE kind = %s AND short BETWEEN %s AND %s ORDER BY seq DESC LIMIT %s",
            (kind.value, low, high, limit),
        )
        return [str(row[0]) for row in rows]

    def count(self, kind: Kind) -> int:
        rows = self._query("SELECT n FROM record_counts WHERE kind = %s AND field = '' AND value = ''", (kind.value,))
        return int(rows[0][0]) if rows else 0

    def count_by(self, kind: Kind, field: str) -> dict[str, int]:
        if field not in FILTERS[kind]:
            raise ValueError(f"{kind.value} are not indexed by {field!r}")
        rows = self._query(
            'SELECT value, n FROM record_counts WHERE kind = %s AND field = %s AND n > 0 ORDER BY value COLLATE "C"',
            (kind.value, field),
        )
        return {str(value): int(n) for value, n in rows}

    def _scan_start(self, kind: Kind, cursor: Cursor | None) -> int:
        """Where a scan resumes: 0 when the cursor is absent, malformed, of another database or names no record
        of this kind."""
        if not cursor:
            return 0
        instance, _, seq = cursor.rpartition(":")
        if instance != self.instance() or not seq.isdigit():
            return 0
        if int(seq) > _INT64[1]:
            return 0
        rows = self._query("SELECT 1 FROM records WHERE seq = %s AND kind = %s", (int(seq), kind.value))
        return int(seq) if rows else 0

    def scan(self, kind: Kind, *, after: Cursor | None = None) -> Iterator[tuple[Cursor, Record]]:
        """Every version in seq order, a page per query (no connection is held between pages)."""
        instance = self.instance()
        last = self._scan_start(kind, after)
        while True:
            rows = self._query(
                "SELECT seq, body::text FROM records WHERE kind = %s AND seq > %s ORDER BY seq LIMIT %s",
                (kind.value, last, SCAN_PAGE),
            )
            for seq, body in rows:
                last = int(seq)
                record = _decode(str(body))
                if record is not None:
                    yield f"{instance}:{last}", record
            if len(rows) < SCAN_PAGE:
                return

    # -- live tail ---------------------------------------------------------------------------------------
    _POSITION = (
        "SELECT c.kind, coalesce((SELECT max(seq) FROM records r WHERE r.kind = c.kind), 0)"
        " FROM unnest(%s::text[]) AS c(kind)"
    )
    _CHANGES = (
        "SELECT r.seq, r.kind, r.body::text FROM unnest(%s::text[], %s::bigint[]) AS c(kind, after)"
        " CROSS JOIN LATERAL (SELECT seq, kind, body FROM records"
        " WHERE records.kind = c.kind AND records.seq > c.after ORDER BY seq LIMIT %s) AS r"
        " ORDER BY r.seq"
    )

    def position(self) -> Cursor:
        """Each kind's highest visible seq, as JSON (opaque to callers)."""
        rows = self._query(self._POSITION, ([kind.value for kind in Kind],))
        ends = {str(kind): int(seq) for kind, seq in rows}
        return json.dumps({kind.value: ends.get(kind.value, 0) for kind in Kind}, separators=(",", ":"))

    @staticmethod
    def _parse_position(since: Cursor, kinds: Sequence[Kind]) -> dict[Kind, int]:
        try:
            ends = json.loads(since)
            if not isinstance(ends, dict):
                raise TypeError
            out: dict[Kind, int] = {}
            for kind in kinds:
                if kind.value in ends:
                    value = ends[kind.value]
                    if isinstance(value, bool) or not isinstance(value, int):
                        raise TypeError
                    out[kind] = value
            return out
        except (ValueError, TypeError):
            raise ValueError(f"not a position of this store: {since!r}") from None

    async def follow(
        self,
        kinds: Sequence[Kind] | None = None,
        *,
        since: Cursor | None = None,
        from_start: bool = False,
        stop: asyncio.Event | None = None,
    ) -> AsyncIterator[list[Change]]:
        """Batches of what any process appends, in seq order; see the module's docstring for why nothing is
        skipped. LISTENs on a connection of its own (not the pool's), opened before the starting position is
        read, so nothing written in between is missed; a lost connection is opened again and the tail goes on
        from its cursors."""
        chosen = list(dict.fromkeys(kinds or list(Kind)))
        cursors: dict[Kind, int] | None = None
        if from_start:
            cursors = dict.fromkeys(chosen, 0)
        elif since is not None:
            cursors = self._parse_position(since, chosen)
        await asyncio.to_thread(self._connections)  # the schema, checked once (blocking: not on the loop)
        stop = stop or asyncio.Event()
        stopping = asyncio.ensure_future(stop.wait())
        started, failures = False, 0
        try:
            while not stop.is_set():
                try:
                    conn = await psycopg.AsyncConnection.connect(
                        self.url, autocommit=True, application_name="patchmoi-follow"
                    )
                except psycopg.OperationalError as exc:
                    if not started:
                        raise DatabaseUnavailable(f"PostgreSQL at {self.location}: {self._safe(exc)}") from exc
                    failures += 1
                    if await self._pause(failures, stopping, exc):
                        return
                    continue
                try:
                    await conn.execute(f"LISTEN {pgschema.CHANNEL}".encode())
                    missing = [kind for kind in chosen if cursors is None or kind not in cursors]
                    cursors = {**await self._ends(conn, missing), **(cursors or {})}
                    started, failures = True, 0
                    async for batch in self._tail(conn, chosen, cursors, stop, stopping):
                        yield batch
                    return
                except psycopg.OperationalError as exc:
                    if not started:
                        raise DatabaseUnavailable(f"PostgreSQL at {self.location}: {self._safe(exc)}") from exc
                    failures += 1
                    if await self._pause(failures, stopping, exc):
                        return
                finally:
                    await conn.close()
        finally:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping

    async def _pause(self, failures: int, stopping: asyncio.Future[Any], exc: BaseException) -> bool:
        """Wait before reconnecting; True if `stop` was set meanwhile."""
        delay = FOLLOW_RETRY_SECONDS[min(failures, len(FOLLOW_RETRY_SECONDS)) - 1]
        log_event("store.follow_reconnecting", location=self.location, error=self._safe(exc), seconds=delay)
        done, _ = await asyncio.wait({stopping}, timeout=delay)
        return bool(done)

    async def _ends(self, conn: psycopg.AsyncConnection[TupleRow], kinds: Sequence[Kind]) -> dict[Kind, int]:
        if not kinds:
            return {}
        found = await (await conn.execute(self._POSITION.encode(), ([k.value for k in kinds],))).fetchall()
        return {Kind(str(kind)): int(seq) for kind, seq in found}

    async def _tail(
        self,
        conn: psycopg.AsyncConnection[TupleRow],
        chosen: Sequence[Kind],
        cursors: dict[Kind, int],
        stop: asyncio.Event,
        stopping: asyncio.Future[Any],
    ) -> AsyncIterator[list[Change]]:
        """Read, yield, wait for a notification (or `FOLLOW_RECHECK_SECONDS`), until `stop`. `cursors` moves with
        each batch (a caller that reconnects goes on from it)."""
        names = [kind.value for kind in chosen]
        while not stop.is_set():
            while True:
                query = await conn.execute(self._CHANGES.encode(), (names, [cursors[k] for k in chosen], FOLLOW_PAGE))
                rows = await query.fetchall()
                batch: list[Change] = []
                per_kind: dict[Kind, int] = {}
                for seq, kind_name, body in rows:
                    kind = Kind(str(kind_name))
                    cursors[kind] = max(cursors[kind], int(seq))
                    per_kind[kind] = per_kind.get(kind, 0) + 1
                    record = _decode(str(body))
                    if record is not None:
                        batch.append(Change(kind, str(seq), record))
                if batch:
                    yield batch
                if stop.is_set():
                    return
                if all(n < FOLLOW_PAGE for n in per_kind.values()):
                    break
            woken = asyncio.ensure_future(self._notified(conn, names))
            try:
                await asyncio.wait({woken, stopping}, timeout=FOLLOW_RECHECK_SECONDS, return_when="FIRST_COMPLETED")
            finally:
                if not woken.done():
                    woken.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await woken  # re-raises a lost connection (OperationalError): the caller reconnects

    @staticmethod
    async def _notified(conn: psycopg.AsyncConnection[TupleRow], names: Sequence[str]) -> None:
        """Return at the first notification about one of these kinds (one received while a query ran too)."""
        async for notify in conn.notifies():
            if notify.payload in names:
                return

    # -- feed state --------------------------------------------------------------------------------------
    def feed_states(self, *, repair: bool = True) -> dict[str, dict[str, Any]]:
        """Every source's state. The column is JSON, so a state is always readable; one that is not an object
        (written by hand) is a problem: ConfigError without `repair`, with it the source's cursor is rebuilt
        from its newest signals and `health()` says so."""
        rows = self._query("SELECT source_id, state::text FROM feed_states ORDER BY source_id")
        states: dict[str, dict[str, Any]] = {}
        bad: list[str] = []
        for source_id, text in rows:
            state = _decode(str(text))
            if state is None:
                bad.append(str(source_id))
            else:
                states[str(source_id)] = state
        if not bad:
            return states
        problem = f"{self.location}: feed state of {', '.join(bad)} is not a JSON object"
        if not repair:
            raise ConfigError(problem)
        rebuilt = {source_id: self._rebuilt_state(source_id) for source_id in bad}
        self.save_feed_states(rebuilt)
        states.update(rebuilt)
        self.state_problem = f"{problem}; rebuilt from the stored signals"
        log_event("feed.state_rebuilt", problem=self.state_problem)
        return states

    def _rebuilt_state(self, source_id: str) -> dict[str, Any]:
        recent = self.select(Kind.SIGNALS, filters={"sourceId": source_id}, limit=STATE_REBUILD_SEEN)
        seen = [str(r["entryId"]) for _, r in recent if isinstance(r.get("entryId"), str)]
        if not seen:
            return {}
        return {"lastSeenId": seen[0], "seen": seen, "primed": True, "rebuiltAt": now_iso(), "rebuiltFrom": "signals"}

    def save_feed_states(self, states: Mapping[str, dict[str, Any]]) -> None:
        if not states:
            return
        with self._connection(writing=True) as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO feed_states (source_id, state) VALUES (%s, %s::json)"
                " ON CONFLICT (source_id) DO UPDATE SET state = EXCLUDED.state, updated_at = now()",
                [(source_id, _encode(state)) for source_id, state in states.items()],
            )

    # -- marks -------------------------------------------------------------------------------------------
    def mark(self, name: str) -> Cursor | None:
        rows = self._query("SELECT cursor FROM marks WHERE name = %s", (name,))
        return str(rows[0][0]) if rows else None

    def set_mark(self, name: str, cursor: Cursor) -> None:
        with self._connection(writing=True) as conn:
            conn.execute(
                "INSERT INTO marks (name, cursor) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now()",
                (name, cursor),
            )

    # -- leases ------------------------------------------------------------------------------------------
    def _lease_connection(self) -> Connection:
        """This store's connection for leases: it holds their session locks, so it is never pooled."""
        conn = self._lease_conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            # The connection was lost, and every session lock with it: those leases may be someone else's now.
            for name in [n for n, lease in self._leases.items() if lease.locked]:
                del self._leases[name]
            with contextlib.suppress(psycopg.Error):
                conn.close()
        self._connections()  # the schema
        try:
            conn = self._connect("patchmoi-leases")
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"PostgreSQL at {self.location}: {self._safe(exc)}") from exc
        self._lease_conn = conn
        return conn

    def _lease_no(self, conn: Connection, name: str) -> int:
        if name not in self._lease_nos:
            conn.execute("INSERT INTO leases (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (name,))
            row = conn.execute("SELECT lease_no FROM leases WHERE name = %s", (name,)).fetchone()
            assert row is not None
            self._lease_nos[name] = int(row[0])
        return self._lease_nos[name]

    def _take_lock(self, conn: Connection, lease_no: int, *, wait: bool) -> bool:
        key = (pgschema.LEASE_LOCK_NAMESPACE, lease_no)
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()
        if (row is not None and row[0]) or not wait:
            return bool(row and row[0])
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{int(LEASE_GRACE_SECONDS * 1000)}ms'".encode())
                conn.execute("SELECT pg_advisory_lock(%s, %s)", key)  # a session lock: it outlives the transaction
        except pg_errors.LockNotAvailable:
            return False
        return True

    def _drop_lock(self, conn: Connection, name: str) -> None:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", (pgschema.LEASE_LOCK_NAMESPACE, self._lease_nos[name]))

    def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Taken when nobody holds it, when `holder` does, when its holder's expiry has passed, or when its
        holder's session lock is free (the holder's connection closed: it died); `ttl` in the database's clock."""
        with self._lease_lock:
            mine = self._leases.get(name)
            if mine is not None:
                if mine.holder == holder:
                    return self.renew_lease(name, holder, ttl)
                return self._take_over_in_process(name, mine, holder, ttl)
            try:
                conn = self._lease_connection()
                lease_no = self._lease_no(conn, name)
                row = conn.execute(
                    "SELECT holder IS NOT NULL AND holder <> %s AND locked AND expires_at > now()"
                    " FROM leases WHERE name = %s",
                    (holder, name),
                ).fetchone()
                live_other = bool(row and row[0])
                locked = self._take_lock(conn, lease_no, wait=live_other)
                taken = conn.execute(
                    "UPDATE leases SET holder = %(holder)s, locked = %(locked)s, acquired_at = now(),"
                    " expires_at = now() + make_interval(secs => %(ttl)s)"
                    " WHERE name = %(name)s AND (holder IS NULL OR holder = %(holder)s OR expires_at <= now()"
                    " OR (locked AND %(locked)s)) RETURNING 1",
                    {"holder": holder, "locked": locked, "ttl": float(ttl), "name": name},
                ).fetchone()
                if taken is None:
                    if locked:
                        self._drop_lock(conn, name)
                    return False
            except psycopg.OperationalError as exc:
                raise DatabaseUnavailable(f"PostgreSQL at {self.location}: {self._safe(exc)}") from exc
            self._leases[name] = _Lease(holder, locked)
            return True

    def _take_over_in_process(self, name: str, mine: _Lease, holder: str, ttl: float) -> bool:
        """Another holder of this process asks: it gets the lease only once the current one's expiry passed."""
        conn = self._lease_connection()
        taken = conn.execute(
            "UPDATE leases SET holder = %s, acquired_at = now(), expires_at = now() + make_interval(secs => %s)"
            " WHERE name = %s AND holder = %s AND expires_at <= now() RETURNING 1",
            (holder, float(ttl), name, mine.holder),
        ).fetchone()
        if taken is None:
            return False
        mine.holder = holder
        return True

    def renew_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Extended while the row still names `holder` (and, if it held the session lock, while its lease
        connection lives); a lease held without the lock (taken over by expiry) takes it when it is free."""
        with self._lease_lock:
            mine = self._leases.get(name)
            if mine is None or mine.holder != holder:
                return False
            conn = self._lease_conn
            if conn is None or conn.closed or conn.broken:
                del self._leases[name]
                return False
            try:
                row = conn.execute(
                    "UPDATE leases SET expires_at = now() + make_interval(secs => %s)"
                    " WHERE name = %s AND holder = %s RETURNING 1",
                    (float(ttl), name, holder),
                ).fetchone()
                if row is None:  # taken over: stop leading, and let go of the lock
                    del self._leases[name]
                    if mine.locked:
                        self._drop_lock(conn, name)
                    return False
                if not mine.locked and self._take_lock(conn, self._lease_nos[name], wait=False):
                    conn.execute("UPDATE leases SET locked = true WHERE name = %s AND holder = %s", (name, holder))
                    mine.locked = True
            except psycopg.OperationalError:
                self._leases.pop(name, None)
                return False
            return True

    def release_lease(self, name: str, holder: str) -> None:
        with self._lease_lock:
            mine = self._leases.get(name)
            if mine is None or mine.holder != holder:
                return  # not this holder's: nothing to release
            del self._leases[name]
            conn = self._lease_conn
            if conn is None or conn.closed or conn.broken:
                return
            with contextlib.suppress(psycopg.OperationalError):
                if mine.locked:
                    self._drop_lock(conn, name)
                conn.execute(
                    "UPDATE leases SET holder = NULL, locked = false, expires_at = NULL"
                    " WHERE name = %s AND holder = %s",
                    (name, holder),
                )

    def lease_holder(self, name: str) -> str | None:
        """The row's holder while its expiry is ahead and, if it held the session lock, the lock is still held
        (read from pg_locks: asking takes no lock, so it never makes an acquire fail)."""
        rows = self._query(
            "SELECT l.holder FROM leases l WHERE l.name = %(name)s AND l.holder IS NOT NULL"
            f" AND l.expires_at > now() AND (NOT l.locked OR {_LEASE_HELD})",
            {"name": name, "ns": pgschema.LEASE_LOCK_NAMESPACE},
        )
        return str(rows[0][0]) if rows else None

    # -- warming: nothing to build (the database's indexes are always up to date) ----------------------------
    def warm(self, kinds: Sequence[Kind] | None = None, progress: Callable[[Warming], None] | None = None) -> None:
        return None

    def report_progress(self, progress: Callable[[Warming], None] | None) -> None:
        return None

    def warming(self) -> list[Warming]:
        return []

    def warm_for(self, kind: Kind) -> bool:
        return False

    # -- health ------------------------------------------------------------------------------------------
    def versions(self, kind: Kind) -> int:
        """Every stored version of the kind (`count` counts ids for latest kinds): what a transfer copies."""
        rows = self._query("SELECT count(*) FROM records WHERE kind = %s", (kind.value,))
        return int(rows[0][0]) if rows else 0

    def migrate(self) -> tuple[int, list[int]]:
        """Apply the migrations the database lacks now (`patchmoi db migrate`; opening the store does it too):
        the version it had before and the versions applied."""
        try:
            with self._connect("patchmoi-migrate") as conn:
                self._check_server(conn)
                before = pgschema.applied_version(conn)
                try:
                    applied = pgschema.migrate(conn)
                except pgschema.SchemaTooNew as exc:
                    raise ConfigError(f"{self.location}: {exc}") from None
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {self.location}: {self._safe(exc)}") from exc
        if applied:
            log_event("store.migrated", location=self.location, versions=applied)
        return before, applied

    def health(self) -> dict[str, Any]:
        """`location` (without the password), the server's version, the schema's, and record counts; a
        database that cannot be reached is `degraded`, not an exception."""
        out: dict[str, Any] = {
            "backend": "postgresql",
            "location": self.location,
            "degraded": [],
            "stateProblem": self.state_problem,
            # The JSONL store's damage counters, which status views read: a database has no torn or bad lines.
            "skippedLines": 0,
            "quarantinedBytes": 0,
            "files": {},
        }
        try:
            with self._connection() as conn:
                row = conn.execute("SELECT current_setting('server_version')").fetchone()
                out["serverVersion"] = str(row[0]) if row else None
                out["schemaVersion"] = pgschema.applied_version(conn)
                counts = conn.execute("SELECT kind, n FROM record_counts WHERE field = '' ORDER BY kind").fetchall()
                out["records"] = {str(kind): int(n) for kind, n in counts}
        except (PatchmoiError, psycopg.Error) as exc:
            out["degraded"] = [f"database unreachable: {self._safe(exc)}"]
        return out

    def close(self) -> None:
        """Release this process's leases, close its lease connection and its pool (a later call reopens)."""
        with self._lease_lock:
            for name, lease in list(self._leases.items()):
                self.release_lease(name, lease.holder)
            if self._lease_conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._lease_conn.close()
                self._lease_conn = None
            self._lease_nos.clear()
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
