"""Versioned schema of ``PostgresStore``: migrations, run once under an advisory lock.

Every table lives in the store's own schema (``search_path`` is set per connection), so several
deployments, or test sessions, share one database without seeing each other. Events, audit
records and chain links are append-only in the database itself: a trigger refuses UPDATE, and
DELETE unless the transaction set ``palm.allow_delete`` (only ``delete_user`` and
``purge_events`` do, with ``set_config(..., is_local => true)``); chain links are never deleted.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, NamedTuple

from palm_middleware.exceptions import StoreError

if TYPE_CHECKING:
    import psycopg

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration", "migrate", "schema_version"]

#: ``pg_advisory_xact_lock`` key taken by migrations (any schema): openers migrate one at a time.
MIGRATION_LOCK = 0x70616C6D  # "palm"


class Migration(NamedTuple):
    """One schema step: its statements run inside the migrating transaction."""

    version: int
    description: str
    statements: tuple[str, ...]


_APPEND_ONLY_FN = """
CREATE FUNCTION palm_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND TG_TABLE_NAME <> 'audit_chain'
     AND current_setting('palm.allow_delete', true) = 'on' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'palm: % rows are append-only (% refused; use PostgresStore.delete_user)',
    TG_TABLE_NAME, TG_OP;
END $$
"""


def _append_only(table: str) -> str:
    return (
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION palm_append_only()"
    )


_V1: tuple[str, ...] = (
    "CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE profiles ("
    " user_key text PRIMARY KEY,"
    " state text NOT NULL,"  # JSON text, exactly as written (hashes and round trips stay exact)
    " version bigint NOT NULL,"
    " updated_at double precision NOT NULL)",
    "CREATE TABLE events ("
    " seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " event_id text NOT NULL UNIQUE,"
    " user_key text NOT NULL,"
    " kind text NOT NULL,"
    " payload text NOT NULL,"
    " ts double precision NOT NULL)",
    "CREATE INDEX events_user_seq ON events (user_key, seq)",
    "CREATE INDEX events_ts ON events (ts)",  # retention purge
    "CREATE TABLE audit ("
    " seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " record_id text NOT NULL UNIQUE,"
    " user_key text NOT NULL,"
    " kind text NOT NULL,"
    " payload text NOT NULL,"
    " ts double precision NOT NULL)",
    "CREATE INDEX audit_user_seq ON audit (user_key, seq)",
    # One row per audit chain (shard): its length and last hash. Writers of a shard queue on
    # this row's lock; writers of different shards never wait for each other.
    "CREATE TABLE audit_heads ("
    " shard integer PRIMARY KEY,"
    " n bigint NOT NULL,"
    " prev text NOT NULL,"
    " hash text NOT NULL)",
    # Links outlive erased records (a tombstone hash, no user key, no payload).
    # gseq: append order across chains (assigned under the chain's head lock, so it also
    # follows n within a chain).
    "CREATE TABLE audit_chain ("
    " gseq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,"
    " shard integer NOT NULL,"
    " n bigint NOT NULL,"
    " record_id text NOT NULL UNIQUE,"
    " prev_hash text NOT NULL,"
    " hash text NOT NULL,"
    " PRIMARY KEY (shard, n))",
    _APPEND_ONLY_FN,
    _append_only("events"),
    _append_only("audit"),
    _append_only("audit_chain"),
)


_V2: tuple[str, ...] = (
    # One row per user who shapes the population prior: the aggregates of their posterior
    # (JSON, no events, no text). Opted-out users have none; deleted with the user. Every write
    # takes a new rev from the sequence (never reused), so (count, max rev, sum rev) changes on
    # every write or delete and tells a reader whether to re-read.
    "CREATE SEQUENCE population_rev",
    "CREATE TABLE population ("
    " user_key text PRIMARY KEY,"
    " stats text NOT NULL,"
    " rev bigint NOT NULL DEFAULT nextval('population_rev'),"
    " updated_at double precision NOT NULL)",
    # Backfill from profiles written before the table existed (their state holds the same
    # aggregates under "population"), so an upgraded deployment keeps its prior.
    "INSERT INTO population (user_key, stats, updated_at)"
    " SELECT user_key, (state::jsonb -> 'population')::text, updated_at FROM profiles"
    " WHERE jsonb_typeof(state::jsonb -> 'population') = 'object'"
    " AND coalesce(state::jsonb ->> 'opted_out', 'false') <> 'true'",
)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "meta, profiles, events, audit, sharded audit chain; append-only triggers", _V1),
    Migration(2, "population: per-user aggregates of the population prior (backfilled)", _V2),
)
"""Schema steps in order; append a new ``Migration`` to change the schema, never edit one."""

SCHEMA_VERSION: int = MIGRATIONS[-1].version
"""The schema version this code writes."""


def schema_version(conn: psycopg.Connection[tuple[object, ...]], schema: str, where: str) -> int:
    """The schema version of ``schema``, 0 when it has no tables yet."""
    tables = {
        str(r[0])
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        )
    }
    if "meta" not in tables:
        if tables:
            raise StoreError(
                f"{where}: schema {schema!r} holds tables that are not a palm store "
                f"({', '.join(sorted(tables))}); choose another 'schema'."
            )
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        return 0
    try:
        return int(str(row[0]))
    except ValueError:
        raise StoreError(f"{where} has an invalid schema_version {row[0]!r}.") from None


def migrate(
    conn: psycopg.Connection[tuple[object, ...]],
    schema: str,
    *,
    audit_shards: int,
    where: str,
    target: int = SCHEMA_VERSION,
) -> int:
    """Create ``schema`` if needed and apply the missing migrations up to ``target``.

    Runs in one transaction under ``MIGRATION_LOCK``: replicas starting together migrate once,
    and a failed step leaves the database as it was. Returns the version reached.

    Raises:
        StoreError: The schema is newer than this code, or not a palm store.
        psycopg.Error: Left for the caller to translate.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        current = schema_version(conn, schema, where)
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{where} has schema version {current}, newer than the {SCHEMA_VERSION} this "
                "palm-middleware knows; upgrade palm-middleware or use another schema."
            )
        for migration in MIGRATIONS:
            if current < migration.version <= target:
                for sql in migration.statements:
                    conn.execute(sql.encode())
                if migration.version == 1:
                    _seed(conn, audit_shards)
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(migration.version),),
                )
                current = migration.version
    return current


def _seed(conn: psycopg.Connection[tuple[object, ...]], audit_shards: int) -> None:
    # The salt lets callers hash user ids per database, so keys of two deployments never match.
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('user_salt', %s), ('audit_shards', %s)",
        (secrets.token_hex(16), str(audit_shards)),
    )
    genesis = "0" * 64
    for shard in range(audit_shards):
        conn.execute(
            "INSERT INTO audit_heads (shard, n, prev, hash) VALUES (%s, 0, %s, %s)",
            (shard, genesis, genesis),
        )
