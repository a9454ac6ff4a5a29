"""The schema of ``SQLiteStore`` and its migrations.

``MIGRATIONS`` is append-only history: to change the schema, add a ``Migration`` with the next
version; never edit one that has shipped, since databases in the field already ran it.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable
from typing import NamedTuple

from palm_middleware.exceptions import StoreError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "migrate",
    "newer_schema_error",
    "schema_version",
]


class Migration(NamedTuple):
    """One schema step: ``apply(conn)`` runs inside the caller's transaction."""

    version: int
    description: str
    apply: Callable[[sqlite3.Connection], None]


def _append_only(table: str) -> tuple[str, ...]:
    # RAISE(ABORT) undoes the statement; the message tells a human with a SQL shell what to do.
    return (
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} BEGIN "
        f"SELECT RAISE(ABORT, 'palm: {table} rows are append-only'); END",
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
        "WHEN NOT EXISTS (SELECT 1 FROM deletion_grants WHERE user_key = OLD.user_key) BEGIN "
        f"SELECT RAISE(ABORT, 'palm: {table} rows are deleted only by SQLiteStore.delete_user');"
        " END",
    )


_V1: tuple[str, ...] = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)",
    "CREATE TABLE profiles ("
    " user_key TEXT PRIMARY KEY NOT NULL,"
    " state TEXT NOT NULL,"  # JSON object
    " version INTEGER NOT NULL,"
    " updated_at REAL NOT NULL)",
    "CREATE TABLE events ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"  # AUTOINCREMENT: seq never reused after deletes
    " event_id TEXT NOT NULL UNIQUE,"
    " user_key TEXT NOT NULL,"
    " kind TEXT NOT NULL,"
    " payload TEXT NOT NULL,"  # JSON object
    " ts REAL NOT NULL)",
    "CREATE TABLE audit ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " record_id TEXT NOT NULL UNIQUE,"
    " user_key TEXT NOT NULL,"
    " kind TEXT NOT NULL,"
    " payload TEXT NOT NULL,"
    " ts REAL NOT NULL)",
    # A row here exists only inside a delete_user transaction; the delete triggers check it.
    "CREATE TABLE deletion_grants (user_key TEXT PRIMARY KEY NOT NULL)",
    *_append_only("events"),
    *_append_only("audit"),
)

_V2: tuple[str, ...] = (
    "CREATE INDEX events_user_seq ON events (user_key, seq)",
    "CREATE INDEX audit_user_seq ON audit (user_key, seq)",
)


_V3: tuple[str, ...] = (
    # One link per audit record, never updated or deleted (not even by delete_user): an erased
    # record leaves its hash, so the chain stays verifiable. It holds no user key or payload.
    "CREATE TABLE audit_chain ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " record_id TEXT NOT NULL UNIQUE,"
    " prev_hash TEXT NOT NULL,"
    " hash TEXT NOT NULL)",
    "CREATE TRIGGER audit_chain_no_update BEFORE UPDATE ON audit_chain BEGIN "
    "SELECT RAISE(ABORT, 'palm: audit_chain rows are append-only'); END",
    "CREATE TRIGGER audit_chain_no_delete BEFORE DELETE ON audit_chain BEGIN "
    "SELECT RAISE(ABORT, 'palm: audit_chain rows are never deleted'); END",
)


_V4: tuple[str, ...] = (
    # One row per user who shapes the population prior: the aggregates of their posterior
    # (JSON, no events, no text). Opted-out users have none; deleted with the user. A write
    # replaces the row under a new seq (AUTOINCREMENT: never reused), so (count, max seq)
    # changes on every write or delete and tells a reader whether to re-read.
    "CREATE TABLE population ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " user_key TEXT NOT NULL UNIQUE,"
    " stats TEXT NOT NULL,"
    " updated_at REAL NOT NULL)",
)


def _migration_1(conn: sqlite3.Connection) -> None:
    for sql in _V1:
        conn.execute(sql)
    # The salt lets callers hash user ids per database, so keys from two deployments never match.
    conn.execute("INSERT INTO meta (key, value) VALUES ('user_salt', ?)", (secrets.token_hex(16),))


def _migration_2(conn: sqlite3.Connection) -> None:
    for sql in _V2:
        conn.execute(sql)


def _migration_3(conn: sqlite3.Connection) -> None:
    for sql in _V3:
        conn.execute(sql)


def _migration_4(conn: sqlite3.Connection) -> None:
    for sql in _V4:
        conn.execute(sql)
    # Backfill from the profiles written before this table existed (their state holds the same
    # aggregates under "population"), so an upgraded deployment keeps its prior.
    rows = conn.execute("SELECT user_key, state, updated_at FROM profiles").fetchall()
    for user_key, state_json, updated_at in rows:
        try:
            state = json.loads(state_json)
        except ValueError:
            continue
        agg = state.get("population") if isinstance(state, dict) else None
        if not isinstance(agg, dict) or state.get("opted_out"):
            continue
        conn.execute(
            "INSERT INTO population (user_key, stats, updated_at) VALUES (?, ?, ?)",
            (user_key, json.dumps(agg, separators=(",", ":")), updated_at),
        )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1, "tables meta, profiles, events, audit; append-only triggers; user salt", _migration_1
    ),
    Migration(2, "indexes events(user_key, seq) and audit(user_key, seq)", _migration_2),
    Migration(3, "audit_chain: sha256 hash chain over audit records", _migration_3),
    Migration(
        4, "population: per-user aggregates of the population prior (backfilled)", _migration_4
    ),
)
"""Schema steps in order; append a new ``Migration`` to change the schema, never edit one."""

SCHEMA_VERSION: int = MIGRATIONS[-1].version
"""The schema version this code writes."""


def schema_version(conn: sqlite3.Connection, *, where: str) -> int:
    """Return the schema version of the open database, 0 for an empty one."""
    tables = {
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if "meta" not in tables:
        if tables:
            raise StoreError(
                f"{where} is an SQLite database but not a palm store (tables: "
                f"{', '.join(sorted(tables))}); point 'path' at a new or palm-created file."
            )
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        return int(row[0]) if row is not None else 0
    except ValueError:
        raise StoreError(f"{where} has an invalid schema_version {row[0]!r}.") from None


def newer_schema_error(where: str, found: int) -> StoreError:
    return StoreError(
        f"{where} has schema version {found}, newer than the {SCHEMA_VERSION} this "
        "palm-middleware knows; upgrade palm-middleware or open another file."
    )


def migrate(conn: sqlite3.Connection, *, target: int = SCHEMA_VERSION, where: str) -> int:
    """Apply the migrations above the database's version up to ``target``.

    Runs inside the caller's transaction (``BEGIN IMMEDIATE``), so concurrent openers migrate
    once and a failed step leaves the file as it was. Returns the version reached.

    Raises:
        StoreError: The database has a newer schema than this code knows.
        sqlite3.Error: Left for the caller to translate.
    """
    current = schema_version(conn, where=where)
    if current > SCHEMA_VERSION:
        raise newer_schema_error(where, current)
    for migration in MIGRATIONS:
        if current < migration.version <= target:
            migration.apply(conn)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(migration.version),),
            )
            current = migration.version
    return current
