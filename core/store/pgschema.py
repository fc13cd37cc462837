"""The PostgreSQL store's schema (core.store.postgres), as numbered migrations applied by `migrate`.

A migration is never edited once released: a change is a new one at the end of `MIGRATIONS`. `migrate` runs
the missing ones in one transaction that first takes a transaction-scoped advisory lock, so processes that
start together (replicas, the CLI, tests) apply each migration exactly once and the others wait, then find it
applied; `schema_migrations` records which are.

What the tables hold (see core.store.postgres for how they are used):

- `records`: every version of every record, in write order (`seq`, from `record_seq`, shared by all kinds):
  the kind, its id (the kind's `ID_FIELDS` joined by ':'; NULL when a field is missing), the values of its two
  `FILTERS` fields (`k1`, `k2`: strings only; plain kinds only) and the record itself as `json`, which keeps
  the text as written (key order, spacing, numbers) where `jsonb` would reorder keys: `select_json` answers
  with these bytes.
- `heads`: one row per (kind, id), the seq of its latest version and that version's filter values, plus the
  id's short id (`core.shortid`: its CRC-32, an integer, so a short-id prefix is an index range). Its primary
  key is what makes `append_if_absent` exactly-once; latest kinds are listed from it.
- `record_counts`: records per kind (`field` '') and per value of each filter field, kept by statement
  triggers (plain kinds count every version in `records`, latest kinds their heads), so counts never scan.
- `store_kinds`: which kinds keep their latest version only, and the names of their filter fields (what the
  triggers read; `tests/test_store_postgres.py` checks it against core.store.contract).
- `feed_states` (one JSON object per source), `marks` (scan cursors by name), `leases` (one row per lease),
  `store_meta` (`instance`: a random token minted with the schema; scan cursors carry it, so a cursor of
  another database restarts a scan instead of skipping records).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from patchmoi.core.store.contract import Kind

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

LOCK_NAMESPACE = 0x70617463
"""The first key of every advisory lock the store takes (b"patc"); the second says which lock."""
MIGRATION_LOCK = 0
"""Second key of the lock `migrate` holds while it checks and applies migrations."""
LEASE_LOCK_NAMESPACE = LOCK_NAMESPACE + 1
"""Leases' session locks: (this, `leases.lease_no`)."""
CHANNEL = "patchmoi_records"
"""The LISTEN/NOTIFY channel: one notification per write transaction, its payload the kind written."""
MIN_SERVER_VERSION = 130000
"""PostgreSQL 13: statement triggers with transition tables on INSERT ... ON CONFLICT, `EXECUTE FUNCTION`."""

# Each kind's number: the second key of the advisory lock its writers take. Never renumber a kind.
KIND_LOCKS: Mapping[Kind, int] = {
    Kind.SIGNALS: 1,
    Kind.JOBS: 2,
    Kind.EVENTS: 3,
    Kind.DISPATCHES: 4,
    Kind.LEGACY_DISPATCHES: 5,
    Kind.ATTEMPTS: 6,
    Kind.RUNS: 7,
    Kind.NOTIFICATIONS: 8,
}

# How each kind's records are identified (as the JSONL store's indexes do; the spec's ids).
ID_FIELDS: Mapping[Kind, tuple[str, ...]] = {
    Kind.SIGNALS: ("sourceId", "entryId"),
    Kind.JOBS: ("id",),
    Kind.EVENTS: ("id",),
    Kind.DISPATCHES: ("eventId",),
    Kind.LEGACY_DISPATCHES: ("eventId",),
    Kind.ATTEMPTS: ("id",),
    Kind.RUNS: ("id",),
    Kind.NOTIFICATIONS: ("id",),
}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


_V1 = """
CREATE TABLE store_meta (
  key   text PRIMARY KEY,
  value text NOT NULL
);
INSERT INTO store_meta (key, value) VALUES
  ('instance', replace(gen_random_uuid()::text, '-', '')),
  ('createdAt', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'));

CREATE TABLE store_kinds (
  kind   text PRIMARY KEY,
  latest boolean NOT NULL,
  field1 text,
  field2 text
);
INSERT INTO store_kinds (kind, latest, field1, field2) VALUES
  ('signals', false, 'sourceId', 'event'),
  ('jobs', false, 'sourceId', 'kind'),
  ('events', false, 'type', NULL),
  ('dispatches', false, 'eventId', 'status'),
  ('legacy_dispatches', false, 'eventId', 'status'),
  ('attempts', true, 'eventId', 'status'),
  ('runs', true, 'eventId', 'status'),
  ('notifications', true, 'kind', 'status');

CREATE SEQUENCE record_seq AS bigint;
-- The key is (kind, seq), and no index has seq alone: a newest-first list of one kind is then always a walk
-- down its own range, never a walk down every kind's newest rows filtered (which the planner would pick, on
-- average right, for a kind whose recent rows are few).
CREATE TABLE records (
  seq        bigint NOT NULL DEFAULT nextval('record_seq'),
  kind       text NOT NULL,
  id         text,
  k1         text,
  k2         text,
  body       json NOT NULL,
  written_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (kind, seq)
);
ALTER SEQUENCE record_seq OWNED BY records.seq;
-- Latest kinds are listed and counted from their heads: their rows here leave k1 and k2 NULL (unindexed).
CREATE INDEX records_kind_k1_seq ON records (kind, k1, seq) WHERE k1 IS NOT NULL;
CREATE INDEX records_kind_k2_seq ON records (kind, k2, seq) WHERE k2 IS NOT NULL;

CREATE TABLE heads (
  kind  text NOT NULL,
  id    text NOT NULL,
  seq   bigint NOT NULL,
  short bigint NOT NULL,
  k1    text,
  k2    text,
  PRIMARY KEY (kind, id)
);
CREATE INDEX heads_kind_seq ON heads (kind, seq);
CREATE INDEX heads_kind_k1_seq ON heads (kind, k1, seq) WHERE k1 IS NOT NULL;
CREATE INDEX heads_kind_k2_seq ON heads (kind, k2, seq) WHERE k2 IS NOT NULL;
CREATE INDEX heads_kind_short ON heads (kind, short);

CREATE TABLE record_counts (
  kind  text NOT NULL,
  field text NOT NULL,
  value text NOT NULL,
  n     bigint NOT NULL,
  PRIMARY KEY (kind, field, value)
);

CREATE FUNCTION record_counts_on_records() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO record_counts (kind, field, value, n)
  SELECT a.kind, f.field, f.value, count(*)
  FROM added a
  JOIN store_kinds k ON k.kind = a.kind AND NOT k.latest
  CROSS JOIN LATERAL (VALUES ('', ''), (k.field1, a.k1), (k.field2, a.k2)) AS f(field, value)
  WHERE f.field IS NOT NULL AND f.value IS NOT NULL
  GROUP BY 1, 2, 3
  ON CONFLICT (kind, field, value) DO UPDATE SET n = record_counts.n + EXCLUDED.n;
  RETURN NULL;
END
$$;
CREATE TRIGGER records_count AFTER INSERT ON records
  REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION record_counts_on_records();

CREATE FUNCTION record_counts_on_new_heads() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO record_counts (kind, field, value, n)
  SELECT a.kind, f.field, f.value, count(*)
  FROM added a
  JOIN store_kinds k ON k.kind = a.kind AND k.latest
  CROSS JOIN LATERAL (VALUES ('', ''), (k.field1, a.k1), (k.field2, a.k2)) AS f(field, value)
  WHERE f.field IS NOT NULL AND f.value IS NOT NULL
  GROUP BY 1, 2, 3
  ON CONFLICT (kind, field, value) DO UPDATE SET n = record_counts.n + EXCLUDED.n;
  RETURN NULL;
END
$$;
CREATE TRIGGER heads_count_new AFTER INSERT ON heads
  REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION record_counts_on_new_heads();

CREATE FUNCTION record_counts_on_moved_heads() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO record_counts (kind, field, value, n)
  SELECT c.kind, f.field, f.value, sum(c.d)
  FROM (
    SELECT kind, k1, k2, 1 AS d FROM after_rows
    UNION ALL
    SELECT kind, k1, k2, -1 AS d FROM before_rows
  ) AS c
  JOIN store_kinds k ON k.kind = c.kind AND k.latest
  CROSS JOIN LATERAL (VALUES (k.field1, c.k1), (k.field2, c.k2)) AS f(field, value)
  WHERE f.field IS NOT NULL AND f.value IS NOT NULL
  GROUP BY 1, 2, 3
  HAVING sum(c.d) <> 0
  ON CONFLICT (kind, field, value) DO UPDATE SET n = record_counts.n + EXCLUDED.n;
  RETURN NULL;
END
$$;
CREATE TRIGGER heads_count_moved AFTER UPDATE ON heads
  REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows
  FOR EACH STATEMENT EXECUTE FUNCTION record_counts_on_moved_heads();

CREATE TABLE feed_states (
  source_id  text PRIMARY KEY,
  state      json NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE marks (
  name       text PRIMARY KEY,
  cursor     text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE leases (
  name        text PRIMARY KEY,
  lease_no    integer GENERATED ALWAYS AS IDENTITY UNIQUE,
  holder      text,
  locked      boolean NOT NULL DEFAULT false,
  acquired_at timestamptz,
  expires_at  timestamptz
);
"""

MIGRATIONS: tuple[Migration, ...] = (Migration(1, "records, heads, counts, feed states, marks, leases", _V1),)
LATEST_VERSION = MIGRATIONS[-1].version


class SchemaTooNew(Exception):
    """The database was migrated by a newer patchmoi than this one."""


def applied_version(conn: psycopg.Connection[TupleRow]) -> int:
    """The highest migration applied (0: none, or no schema at all). Reads only; takes no lock."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    found = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(found[0]) if found is not None else 0


def migrate(conn: psycopg.Connection[TupleRow]) -> list[int]:
    """Apply the migrations this database lacks, in order, in one transaction under the migration lock; the
    versions applied (none when it was up to date). SchemaTooNew if it has one this code does not know."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_NAMESPACE, MIGRATION_LOCK))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {int(row[0]) for row in conn.execute("SELECT version FROM schema_migrations")}
        unknown = done - {m.version for m in MIGRATIONS}
        if unknown:
            raise SchemaTooNew(
                f"the database has schema version {max(unknown)}, newer than this patchmoi knows"
                f" ({LATEST_VERSION}): upgrade patchmoi"
            )
        applied = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            conn.execute(migration.sql.encode())  # several statements: sent as one simple query
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (migration.version, migration.name)
            )
            applied.append(migration.version)
        return applied
