"""``SQLiteStore``: the default, embedded ``Store`` in one SQLite file (WAL mode).

Concurrency model:

* one connection per thread (``threading.local``), so the store is safe from threads and from
  ``asyncio.to_thread``; connections of threads that ended are closed when the next one opens,
  all of them on ``close()``;
* every write runs in ``BEGIN IMMEDIATE``: threads of one process queue on a lock, processes
  on SQLite's write lock, retried with jittered backoff up to ``timeout`` and then
  ``StoreUnavailable``; readers never wait for writers (WAL);
* every ``sqlite3`` exception is translated once, here, into ``StoreError`` or
  ``StoreUnavailable`` (``raise ... from exc``).

Events and audit records are append-only in the database itself: triggers abort any UPDATE,
and any DELETE not inside ``delete_user`` (which grants it through ``deletion_grants`` for
the duration of its own transaction).

The schema is versioned: ``MIGRATIONS`` run in order, in one transaction, when a store is
opened; a file written by a newer palm-middleware is refused.
"""

from __future__ import annotations

import os
import random
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple

from palm_middleware.exceptions import (
    IdentityError,
    InvalidParameterError,
    StoreError,
    StoreUnavailable,
)
from palm_middleware.stores.base import (
    AsyncStoreMixin,
    AuditRecord,
    EventRecord,
    ProfileRecord,
    ProfileUpdate,
    check_limit,
    check_window,
    decode_json,
    encode_json,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration", "SQLiteStore"]


# --------------------------------------------------------------------------- schema


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


def _migration_1(conn: sqlite3.Connection) -> None:
    for sql in _V1:
        conn.execute(sql)
    # The salt lets callers hash user ids per database, so keys from two deployments never match.
    conn.execute("INSERT INTO meta (key, value) VALUES ('user_salt', ?)", (secrets.token_hex(16),))


def _migration_2(conn: sqlite3.Connection) -> None:
    for sql in _V2:
        conn.execute(sql)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1, "tables meta, profiles, events, audit; append-only triggers; user salt", _migration_1
    ),
    Migration(2, "indexes events(user_key, seq) and audit(user_key, seq)", _migration_2),
)
"""Schema steps in order; append a new ``Migration`` to change the schema, never edit one."""

SCHEMA_VERSION: int = MIGRATIONS[-1].version
"""The schema version this code writes."""


def _schema_version(conn: sqlite3.Connection, *, where: str) -> int:
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


def _newer_schema(where: str, found: int) -> StoreError:
    return StoreError(
        f"{where} has schema version {found}, newer than the {SCHEMA_VERSION} this "
        "palm-middleware knows; upgrade palm-middleware or open another file."
    )


def _migrate(conn: sqlite3.Connection, *, target: int = SCHEMA_VERSION, where: str) -> int:
    """Apply the migrations above the database's version up to ``target``.

    Runs inside the caller's transaction (``BEGIN IMMEDIATE``), so concurrent openers migrate
    once and a failed step leaves the file as it was. Returns the version reached.

    Raises:
        StoreError: The database has a newer schema than this code knows.
        sqlite3.Error: Left for the caller to translate.
    """
    current = _schema_version(conn, where=where)
    if current > SCHEMA_VERSION:
        raise _newer_schema(where, current)
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


# --------------------------------------------------------------------------- errors

_HINTS: dict[str, str] = {
    "SQLITE_NOTADB": " The file is not an SQLite database; check 'path'.",
    "SQLITE_CORRUPT": " The database is corrupt; restore it from a backup.",
    "SQLITE_READONLY": " The store needs write access to the file, its directory and -wal/-shm.",
    "SQLITE_CANTOPEN": " Check that the directory exists and is writable.",
    "SQLITE_FULL": " The disk is full.",
}


def _is_busy(exc: sqlite3.Error) -> bool:
    name: str | None = getattr(exc, "sqlite_errorname", None)  # Python >= 3.11
    if name is not None:
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def _translate(exc: sqlite3.Error, *, where: str, op: str) -> StoreError:
    """Map any ``sqlite3.Error`` to ``StoreUnavailable`` (busy/locked) or ``StoreError``."""
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    if _is_busy(exc):
        return StoreUnavailable(
            f"{where}: {op} failed, the database is locked by another connection "
            f"({name}: {exc}); retry later or raise 'timeout'."
        )
    # Extended codes (SQLITE_READONLY_DBMOVED, SQLITE_CANTOPEN_ISDIR) share their base's hint.
    hint = next((h for k, h in _HINTS.items() if name == k or name.startswith(k + "_")), "")
    return StoreError(f"{where}: {op} failed ({name}: {exc}).{hint}")


# --------------------------------------------------------------------------- fork safety

# SQLite connections must not cross fork(): a child drops the ones it inherited and opens its
# own. They are parked here, never closed, because closing them in the child would run SQLite's
# close logic on file locks that belong to the parent.
_FORK_INHERITED: list[sqlite3.Connection] = []
_LIVE_STORES: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_LIVE_STORES):
        store._forget_connections_after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------------------- the store

_BACKOFF_FIRST = 0.0005  # seconds; doubles per attempt
_BACKOFF_MAX = 0.025  # short: a write transaction lasts well under a millisecond
_JITTER = random.Random()  # own instance: never touch the global RNG

_GET_PROFILE = "SELECT state, version, updated_at FROM profiles WHERE user_key = ?"
_UPSERT_PROFILE = (
    "INSERT INTO profiles (user_key, state, version, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (user_key) DO UPDATE SET "
    "state = excluded.state, version = excluded.version, updated_at = excluded.updated_at"
)
_BUMP_PROFILE = (
    "INSERT INTO profiles (user_key, state, version, updated_at) VALUES (?, ?, 1, ?) "
    "ON CONFLICT (user_key) DO UPDATE SET "
    "state = excluded.state, version = profiles.version + 1, updated_at = excluded.updated_at"
)
_INSERT_EVENT = (
    "INSERT INTO events (event_id, user_key, kind, payload, ts) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (event_id) DO NOTHING"
)
_INSERT_AUDIT = "INSERT INTO audit (record_id, user_key, kind, payload, ts) VALUES (?, ?, ?, ?, ?)"
_MIN_SQLITE = (3, 24, 0)  # UPSERT


class SQLiteStore(AsyncStoreMixin):
    """A ``Store`` in one SQLite file, shared safely by threads and processes.

    Args:
        path: The database file; created (with its schema) if missing.
        synchronous: ``"NORMAL"`` (default) survives a process crash without losing a commit;
            ``"FULL"`` also survives power loss, at one fsync per write.
        timeout: Seconds a write waits for the write lock before ``StoreUnavailable``.

    Raises:
        InvalidParameterError: A parameter is out of range (``":memory:"`` included: use
            ``MemoryStore``).
        StoreError: The file cannot be opened, is not a palm store, or has a newer schema.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "palm.db"
        >>> with SQLiteStore(path) as store:
        ...     store.put_profile("u1", {"mean": [0.5, 0.5]}, now=0.0).version
        1
    """

    def __init__(
        self,
        path: str | Path = "palm.db",
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        timeout: float = 30.0,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise InvalidParameterError(
                "The 'synchronous' parameter of SQLiteStore must be 'NORMAL' or 'FULL'. "
                f"Got {synchronous!r} instead."
            )
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise InvalidParameterError(
                f"The 'timeout' parameter of SQLiteStore must be a number > 0. Got {timeout!r}."
            )
        if str(path) in ("", ":memory:"):
            raise InvalidParameterError(
                f"SQLiteStore needs a file path, got {str(path)!r}; each thread would get its "
                "own private in-memory database. Use MemoryStore instead."
            )
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise StoreError(
                f"SQLiteStore needs SQLite >= {'.'.join(map(str, _MIN_SQLITE))}; this Python "
                f"links SQLite {sqlite3.sqlite_version}."
            )
        self._path = Path(path)
        self._where = f"SQLite store '{self._path}'"
        self._synchronous = synchronous
        self._timeout = float(timeout)
        self._closed = False
        self._local = threading.local()
        self._conns: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        self._conns_lock = threading.Lock()
        self._write_lock = threading.Lock()
        _LIVE_STORES.add(self)
        try:
            self._salt = self._open_schema()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ lifecycle

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def salt(self) -> str:
        """The random hex salt of this database (made once, at creation), for hashing user ids."""
        return self._salt

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self._path)!r}, synchronous={self._synchronous!r})"

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection (of every thread); later calls raise ``StoreError``.

        Call it once the other threads are done with the store. Idempotent.
        """
        with self._conns_lock:
            self._closed = True
            conns, self._conns = self._conns, []
            self._local = threading.local()
        _LIVE_STORES.discard(self)
        first: sqlite3.Error | None = None
        for _, conn in conns:
            try:
                conn.close()
            except sqlite3.Error as exc:  # close the others first, then report
                first = first or exc
        if first is not None:
            raise _translate(first, where=self._where, op="close") from first

    def _open_schema(self) -> str:
        conn = self._conn()
        version = self._retry_busy("open", lambda: _schema_version(conn, where=self._where))
        if version > SCHEMA_VERSION:
            raise _newer_schema(self._where, version)
        if version < SCHEMA_VERSION:
            with self._transaction("migrate") as conn:
                try:
                    _migrate(conn, where=self._where)
                except sqlite3.Error as exc:
                    raise _translate(exc, where=self._where, op="migrate") from exc
        row = self._one(conn, "open", "SELECT value FROM meta WHERE key = 'user_salt'")
        if row is None:
            raise StoreError(f"{self._where} has no user_salt in its meta table.")
        return str(row[0])

    def _forget_connections_after_fork(self) -> None:
        _FORK_INHERITED.extend(conn for _, conn in self._conns)
        self._conns = []
        self._local = threading.local()
        # A lock held by another thread at fork time would stay held forever in the child.
        self._conns_lock = threading.Lock()
        self._write_lock = threading.Lock()

    # ------------------------------------------------------------------ connections

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        return conn if conn is not None else self._connect()

    def _connect(self) -> sqlite3.Connection:
        with self._conns_lock:
            self._check_open()
            # Threads come and go (executors, servers): close what the dead ones left behind.
            alive = []
            for ref, old in self._conns:
                thread = ref()
                if thread is not None and thread.is_alive():
                    alive.append((ref, old))
                else:
                    try:
                        old.close()
                    except sqlite3.Error as exc:
                        raise _translate(exc, where=self._where, op="open") from exc
            self._conns = alive
        try:
            # timeout=0: no busy handler inside SQLite; _retry_busy waits, with a deadline.
            conn = sqlite3.connect(
                self._path, timeout=0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise _translate(exc, where=self._where, op="open") from exc
        try:
            mode = self._retry_busy(
                "open", lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone()
            )
            if mode is None or str(mode[0]).lower() != "wal":
                raise StoreError(
                    f"{self._where}: could not enable WAL mode (got {mode!r}); the file must "
                    "be on a local filesystem."
                )
            self._retry_busy("open", lambda: self._set_pragmas(conn))
            with self._conns_lock:
                self._check_open()
                self._conns.append((weakref.ref(threading.current_thread()), conn))
        except BaseException:
            conn.close()
            raise
        self._local.conn = conn
        return conn

    def _set_pragmas(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        # Deleted rows (forget) are overwritten with zeros instead of lingering in free pages.
        conn.execute("PRAGMA secure_delete = ON")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self._where} is closed; open a new SQLiteStore.")

    def _discard(self, conn: sqlite3.Connection) -> None:
        """Drop a connection whose state is unknown; the next call opens a fresh one."""
        with self._conns_lock:
            self._conns = [(r, c) for r, c in self._conns if c is not conn]
        if getattr(self._local, "conn", None) is conn:
            del self._local.conn
        try:
            conn.close()
        except sqlite3.Error:
            pass  # already failing: the caller is handling the error that brought us here

    # ------------------------------------------------------------------ statements

    def _retry_busy(self, op: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn``, retrying while SQLite is busy, until ``timeout``; translate errors."""
        deadline = 0.0
        attempt = 0
        while True:
            try:
                return fn()
            except sqlite3.Error as exc:
                if not _is_busy(exc):
                    raise _translate(exc, where=self._where, op=op) from exc
                now = time.monotonic()
                if attempt == 0:
                    deadline = now + self._timeout
                elif now >= deadline:
                    raise StoreUnavailable(
                        f"{self._where}: {op} waited {self._timeout:g}s for a lock held by "
                        "another connection; retry later or raise 'timeout'."
                    ) from exc
                # Jitter keeps processes that collided from colliding again in lockstep.
                delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2**attempt) * _JITTER.uniform(0.5, 1)
                time.sleep(min(delay, max(0.0, deadline - now)))
                attempt += 1

    def _one(self, conn: sqlite3.Connection, op: str, sql: str, params: Any = ()) -> Any:
        try:
            return conn.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            if _is_busy(exc) and not conn.in_transaction:
                return self._retry_busy(op, lambda: conn.execute(sql, params).fetchone())
            raise _translate(exc, where=self._where, op=op) from exc

    def _all(self, conn: sqlite3.Connection, op: str, sql: str, params: Any = ()) -> list[Any]:
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            if _is_busy(exc) and not conn.in_transaction:
                rows: list[Any] = self._retry_busy(op, lambda: conn.execute(sql, params).fetchall())
                return rows
            raise _translate(exc, where=self._where, op=op) from exc

    def _run(self, conn: sqlite3.Connection, op: str, sql: str, params: Any = ()) -> int:
        """Execute a write inside a transaction; return the number of rows changed."""
        try:
            return conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise _translate(exc, where=self._where, op=op) from exc

    @contextmanager
    def _transaction(self, op: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; roll back on any exception and re-raise it."""
        conn = self._conn()
        if conn.in_transaction:
            raise StoreError(
                f"{self._where}: {op} was called inside another write of this thread (an "
                "apply_event update callback must not write to the store)."
            )
        if not self._write_lock.acquire(timeout=self._timeout):
            raise StoreUnavailable(
                f"{self._where}: {op} waited {self._timeout:g}s for another thread's write; "
                "retry later or raise 'timeout'."
            )
        try:
            self._retry_busy(op, lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                yield conn
                self._run(conn, op, "COMMIT")
            except BaseException:
                self._rollback(conn)
                raise
        finally:
            self._write_lock.release()

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:  # SQLite already rolled back (some errors do)
            return
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            # The caller must see the error that caused the rollback; a connection left in an
            # unknown transaction state is replaced instead of reused.
            self._discard(conn)

    # ------------------------------------------------------------------ profiles

    def get_profile(self, user_key: str) -> ProfileRecord | None:
        """Return the profile of ``user_key``, or None (one primary-key lookup)."""
        row = self._one(self._conn(), "get_profile", _GET_PROFILE, (user_key,))
        if row is None:
            return None
        state = decode_json(row[0], what=f"state of user {user_key!r}")
        return ProfileRecord(user_key, state, row[1], row[2])

    def put_profile(self, user_key: str, state: dict[str, Any], *, now: float) -> ProfileRecord:
        """Write ``state`` as the profile of ``user_key`` (version + 1) and return it."""
        state_json = encode_json(state, what=f"state of user {user_key!r}")
        op = "put_profile"
        with self._transaction(op) as conn:
            row = self._one(
                conn, op, "SELECT version FROM profiles WHERE user_key = ?", (user_key,)
            )
            version = 1 if row is None else int(row[0]) + 1
            self._run(conn, op, _UPSERT_PROFILE, (user_key, state_json, version, now))
        return ProfileRecord(user_key, decode_json(state_json, what="state"), version, now)

    def bulk_put_profiles(self, items: Iterable[tuple[str, dict[str, Any]]], *, now: float) -> int:
        """Write many profiles in one transaction (imports, benchmarks).

        Each item bumps its user's version as ``put_profile`` would. Items are encoded as they
        are consumed; an invalid one rolls the whole batch back.

        Returns:
            The number of items written.
        """
        count = 0

        def rows() -> Iterator[tuple[str, str, float]]:
            nonlocal count
            for user_key, state in items:
                yield user_key, encode_json(state, what=f"state of user {user_key!r}"), now
                count += 1

        op = "bulk_put_profiles"
        with self._transaction(op) as conn:
            try:
                conn.executemany(_BUMP_PROFILE, rows())
            except sqlite3.Error as exc:
                raise _translate(exc, where=self._where, op=op) from exc
        return count

    def count_profiles(self) -> int:
        """Return the number of stored profiles."""
        row = self._one(self._conn(), "count_profiles", "SELECT COUNT(*) FROM profiles")
        return int(row[0])

    # ------------------------------------------------------------------ events

    def apply_event(
        self,
        event: EventRecord,
        update: ProfileUpdate,
        *,
        window: int = 256,
        now: float,
    ) -> tuple[bool, ProfileRecord | None]:
        """Store ``event`` once and rewrite the profile with ``update``; see ``Store``."""
        check_window(window)
        payload = encode_json(event.payload, what=f"payload of event {event.event_id!r}")
        user_key = event.user_key
        op = "apply_event"
        with self._transaction(op) as conn:
            inserted = self._run(
                conn, op, _INSERT_EVENT, (event.event_id, user_key, event.kind, payload, event.ts)
            )
            current = self._profile_in(conn, op, user_key)
            if not inserted:
                owner = self._one(
                    conn, op, "SELECT user_key FROM events WHERE event_id = ?", (event.event_id,)
                )
                if owner is not None and owner[0] != user_key:
                    raise IdentityError(
                        f"Event id {event.event_id!r} is already stored for another user; "
                        "event ids must be globally unique."
                    )
                return False, current
            rows = self._all(
                conn,
                op,
                "SELECT event_id, kind, payload, ts FROM events WHERE user_key = ? "
                "ORDER BY seq DESC LIMIT ?",
                (user_key, window),
            )
            recent = [_event(user_key, r) for r in reversed(rows)]
            # An exception here propagates untranslated; _transaction rolls the event back.
            state = update(current, recent)
            state_json = encode_json(state, what=f"state returned by update for {user_key!r}")
            version = 1 if current is None else current.version + 1
            self._run(conn, op, _UPSERT_PROFILE, (user_key, state_json, version, now))
        return True, ProfileRecord(user_key, decode_json(state_json, what="state"), version, now)

    def _profile_in(self, conn: sqlite3.Connection, op: str, user_key: str) -> ProfileRecord | None:
        row = self._one(conn, op, _GET_PROFILE, (user_key,))
        if row is None:
            return None
        return ProfileRecord(user_key, decode_json(row[0], what="state"), row[1], row[2])

    def events(self, user_key: str, *, limit: int | None = None) -> list[EventRecord]:
        """Return the events of ``user_key`` in append order; ``limit``: most recent N."""
        check_limit(limit)
        select = "SELECT event_id, kind, payload, ts FROM events WHERE user_key = ?"
        conn = self._conn()
        if limit is None:
            rows = self._all(conn, "events", f"{select} ORDER BY seq", (user_key,))
        else:
            rows = self._all(
                conn, "events", f"{select} ORDER BY seq DESC LIMIT ?", (user_key, limit)
            )
            rows.reverse()
        return [_event(user_key, r) for r in rows]

    # ------------------------------------------------------------------ audit

    def append_audit(self, record: AuditRecord) -> None:
        """Append an audit record; a duplicate ``record_id`` raises ``StoreError``."""
        payload = encode_json(record.payload, what=f"payload of audit record {record.record_id!r}")
        op = "append_audit"
        params = (record.record_id, record.user_key, record.kind, payload, record.ts)
        with self._transaction(op) as conn:
            try:
                conn.execute(_INSERT_AUDIT, params)
            except sqlite3.IntegrityError as exc:
                raise StoreError(
                    f"{self._where}: audit record id {record.record_id!r} already exists; "
                    "audit ids are unique."
                ) from exc
            except sqlite3.Error as exc:
                raise _translate(exc, where=self._where, op=op) from exc

    def get_audit(self, record_id: str) -> AuditRecord | None:
        """Return the audit record ``record_id``, or None."""
        row = self._one(
            self._conn(),
            "get_audit",
            "SELECT record_id, user_key, kind, payload, ts FROM audit WHERE record_id = ?",
            (record_id,),
        )
        return None if row is None else _audit(row)

    def audit(self, user_key: str | None = None, *, limit: int | None = None) -> list[AuditRecord]:
        """Return audit records (of one user, or all) in append order; ``limit``: most recent N."""
        check_limit(limit)
        sql = "SELECT record_id, user_key, kind, payload, ts FROM audit"
        params: tuple[Any, ...] = ()
        if user_key is not None:
            sql += " WHERE user_key = ?"
            params = (user_key,)
        if limit is None:
            rows = self._all(self._conn(), "audit", f"{sql} ORDER BY seq", params)
        else:
            rows = self._all(
                self._conn(), "audit", f"{sql} ORDER BY seq DESC LIMIT ?", (*params, limit)
            )
            rows.reverse()
        return [_audit(r) for r in rows]

    # ------------------------------------------------------------------ deletion

    def delete_user(self, user_key: str, *, keep_audit: bool) -> int:
        """Delete profile and events (and audit rows unless ``keep_audit``) in one transaction.

        Returns:
            The number of rows deleted.
        """
        op = "delete_user"
        with self._transaction(op) as conn:
            # The grant row lives only inside this transaction: no other connection sees it.
            self._run(conn, op, "INSERT INTO deletion_grants (user_key) VALUES (?)", (user_key,))
            n = self._run(conn, op, "DELETE FROM profiles WHERE user_key = ?", (user_key,))
            n += self._run(conn, op, "DELETE FROM events WHERE user_key = ?", (user_key,))
            if not keep_audit:
                n += self._run(conn, op, "DELETE FROM audit WHERE user_key = ?", (user_key,))
            self._run(conn, op, "DELETE FROM deletion_grants WHERE user_key = ?", (user_key,))
        return n


def _event(user_key: str, row: Any) -> EventRecord:
    payload = decode_json(row[2], what=f"payload of event {row[0]!r}")
    return EventRecord(row[0], user_key, row[1], payload, row[3])


def _audit(row: Any) -> AuditRecord:
    payload = decode_json(row[3], what=f"payload of audit record {row[0]!r}")
    return AuditRecord(row[0], row[1], row[2], payload, row[4])
