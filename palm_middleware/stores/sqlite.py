"""``SQLiteStore``: the default, embedded ``Store`` in one SQLite file (WAL mode).

Concurrency model:

* one connection per thread (``threading.local``), so the store is safe from threads and from
  ``asyncio.to_thread``; connections of threads that ended are closed when the next one opens,
  all of them on ``close()``;
* every write runs in ``BEGIN IMMEDIATE``: threads of one process queue on a lock, processes
  on SQLite's write lock, retried with jittered backoff up to ``timeout`` and then
  ``StoreUnavailable``; readers never wait for writers (WAL);
* every ``sqlite3`` exception is translated once (``_sqlite_pool.translate``) into
  ``StoreError`` or ``StoreUnavailable``, with ``raise ... from exc``.

Events and audit records are append-only in the database itself: triggers abort any UPDATE,
and any DELETE not inside ``delete_user`` (which grants it through ``deletion_grants`` for
the duration of its own transaction).

The schema is versioned: ``MIGRATIONS`` run in order, in one transaction, when a store is
opened; a file written by a newer palm-middleware is refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from palm_middleware.exceptions import (
    IdentityError,
    InvalidParameterError,
    StoreError,
    StoreUnavailable,
)
from palm_middleware.stores._sqlite_pool import ConnectionPool, is_busy, translate
from palm_middleware.stores._sqlite_schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    migrate,
    newer_schema_error,
    schema_version,
)
from palm_middleware.stores.base import (
    GENESIS_HASH,
    AsyncStoreMixin,
    AuditRecord,
    ChainLink,
    ClosingStoreMixin,
    ErasureRecord,
    EventRecord,
    PopulationRow,
    ProfileRecord,
    ProfileUpdate,
    audit_hash,
    check_limit,
    check_window,
    decode_json,
    encode_json,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration", "SQLiteStore"]


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
# REPLACE deletes the old row and inserts one with a new seq: (count, max seq) then changes.
_UPSERT_POPULATION = (
    "INSERT OR REPLACE INTO population (user_key, stats, updated_at) VALUES (?, ?, ?)"
)
_INSERT_AUDIT = "INSERT INTO audit (record_id, user_key, kind, payload, ts) VALUES (?, ?, ?, ?, ?)"
_MIN_SQLITE = (3, 24, 0)  # UPSERT


class SQLiteStore(ClosingStoreMixin, AsyncStoreMixin):
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
        self._pool = ConnectionPool(
            self._path, where=self._where, synchronous=synchronous, timeout=self._timeout
        )
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

    def close(self) -> None:
        """Close every connection (of every thread); later calls raise ``StoreError``.

        Call it once the other threads are done with the store. Idempotent.
        """
        self._pool.close()

    def _open_schema(self) -> str:
        conn = self._pool.get()
        version = self._pool.retry_busy("open", lambda: schema_version(conn, where=self._where))
        if version > SCHEMA_VERSION:
            raise newer_schema_error(self._where, version)
        if version < SCHEMA_VERSION:
            with self._transaction("migrate") as conn:
                try:
                    migrate(conn, where=self._where)
                except sqlite3.Error as exc:
                    raise translate(exc, where=self._where, op="migrate") from exc
        row = self._one(conn, "open", "SELECT value FROM meta WHERE key = 'user_salt'")
        if row is None:
            raise StoreError(f"{self._where} has no user_salt in its meta table.")
        return str(row[0])

    # ------------------------------------------------------------------ statements

    def _one(self, conn: sqlite3.Connection, op: str, sql: str, params: Any = ()) -> Any:
        try:
            return conn.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            if is_busy(exc) and not conn.in_transaction:
                return self._pool.retry_busy(op, lambda: conn.execute(sql, params).fetchone())
            raise translate(exc, where=self._where, op=op) from exc

    def _all(self, conn: sqlite3.Connection, op: str, sql: str, params: Any = ()) -> list[Any]:
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            if is_busy(exc) and not conn.in_transaction:
                return self._pool.retry_busy(op, lambda: conn.execute(sql, params).fetchall())
            raise translate(exc, where=self._where, op=op) from exc

    def _run(self, conn: sqlite3.Connection, op: str, sql: str, params: Any = ()) -> int:
        """Execute a write inside a transaction; return the number of rows changed."""
        try:
            return conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise translate(exc, where=self._where, op=op) from exc

    @contextmanager
    def _transaction(self, op: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; roll back on any exception and re-raise it."""
        conn = self._pool.get()
        if conn.in_transaction:
            raise StoreError(
                f"{self._where}: {op} was called inside another write of this thread (an "
                "apply_event update callback must not write to the store)."
            )
        if not self._pool.write_lock.acquire(timeout=self._timeout):
            raise StoreUnavailable(
                f"{self._where}: {op} waited {self._timeout:g}s for another thread's write; "
                "retry later or raise 'timeout'."
            )
        try:
            self._pool.retry_busy(op, lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                yield conn
                self._run(conn, op, "COMMIT")
            except BaseException:
                self._rollback(conn)
                raise
        finally:
            self._pool.write_lock.release()

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:  # SQLite already rolled back (some errors do)
            return
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            # The caller must see the error that caused the rollback; a connection left in an
            # unknown transaction state is replaced instead of reused.
            self._pool.discard(conn)

    # ------------------------------------------------------------------ profiles

    def get_profile(self, user_key: str) -> ProfileRecord | None:
        """Return the profile of ``user_key``, or None (one primary-key lookup)."""
        row = self._one(self._pool.get(), "get_profile", _GET_PROFILE, (user_key,))
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

    def bulk_put_profiles(self, items: Iterable[tuple[str, dict[str, Any]]], now: float) -> int:
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
                raise translate(exc, where=self._where, op=op) from exc
        return count

    def count_profiles(self) -> int:
        """Return the number of stored profiles."""
        row = self._one(self._pool.get(), "count_profiles", "SELECT COUNT(*) FROM profiles")
        return int(row[0])

    # ------------------------------------------------------------------ population

    def population_rows(self) -> dict[str, dict[str, Any]]:
        """Return every user's population row (user key -> aggregates), in key order."""
        rows = self._all(
            self._pool.get(),
            "population_rows",
            "SELECT user_key, stats FROM population ORDER BY user_key",
        )
        return {str(k): decode_json(v, what=f"population row of {k!r}") for k, v in rows}

    def population_stamp(self) -> tuple[int, ...]:
        """(rows, largest seq): changes on every population write or delete, by any process."""
        row = self._one(
            self._pool.get(),
            "population_stamp",
            "SELECT count(*), coalesce(max(seq), 0) FROM population",
        )
        return int(row[0]), int(row[1])

    # ------------------------------------------------------------------ events

    def apply_event(
        self,
        event: EventRecord,
        update: ProfileUpdate,
        *,
        window: int = 256,
        now: float,
        population: PopulationRow | None = None,
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
            if population is not None:
                agg = population(state)
                if agg is None:
                    self._run(conn, op, "DELETE FROM population WHERE user_key = ?", (user_key,))
                else:
                    agg_json = encode_json(agg, what=f"population row of {user_key!r}")
                    self._run(conn, op, _UPSERT_POPULATION, (user_key, agg_json, now))
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
        conn = self._pool.get()
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
        with self._transaction(op) as conn:
            self._append_audit_in(conn, op, record, payload)

    def _append_audit_in(
        self, conn: sqlite3.Connection, op: str, record: AuditRecord, payload: str
    ) -> None:
        """Insert the record and its chain link inside the caller's write transaction."""
        params = (record.record_id, record.user_key, record.kind, payload, record.ts)
        try:
            conn.execute(_INSERT_AUDIT, params)
            # The link is computed inside the write transaction, so concurrent writers
            # (threads or processes) extend one chain instead of forking it.
            last = conn.execute("SELECT hash FROM audit_chain ORDER BY seq DESC LIMIT 1").fetchone()
            prev = str(last[0]) if last is not None else GENESIS_HASH
            digest = audit_hash(
                prev,
                record.record_id,
                record.user_key,
                record.kind,
                decode_json(payload, what="audit payload"),
                record.ts,
            )
            conn.execute(
                "INSERT INTO audit_chain (record_id, prev_hash, hash) VALUES (?, ?, ?)",
                (record.record_id, prev, digest),
            )
        except sqlite3.IntegrityError as exc:
            raise StoreError(
                f"{self._where}: audit record id {record.record_id!r} already exists; "
                "audit ids are unique."
            ) from exc
        except sqlite3.Error as exc:
            raise translate(exc, where=self._where, op=op) from exc

    def audit_chain(self) -> list[ChainLink]:
        """Return the audit hash chain in append order."""
        rows = self._all(
            self._pool.get(),
            "audit_chain",
            "SELECT seq, record_id, prev_hash, hash FROM audit_chain ORDER BY seq",
        )
        return [ChainLink(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]

    def get_audit(self, record_id: str) -> AuditRecord | None:
        """Return the audit record ``record_id``, or None."""
        row = self._one(
            self._pool.get(),
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
            rows = self._all(self._pool.get(), "audit", f"{sql} ORDER BY seq", params)
        else:
            rows = self._all(
                self._pool.get(), "audit", f"{sql} ORDER BY seq DESC LIMIT ?", (*params, limit)
            )
            rows.reverse()
        return [_audit(r) for r in rows]

    # ------------------------------------------------------------------ deletion

    def purge_events(self, *, before: float, user_key: str | None = None) -> int:
        """Delete events with ``ts < before`` (of one user, or all) in one transaction.

        The append-only triggers allow it through per-user deletion grants that exist only
        inside this transaction, as for ``delete_user``.

        Returns:
            The number of events deleted.
        """
        op = "purge_events"
        with self._transaction(op) as conn:
            if user_key is None:
                keys = [
                    r[0]
                    for r in self._all(
                        conn, op, "SELECT DISTINCT user_key FROM events WHERE ts < ?", (before,)
                    )
                ]
            else:
                keys = [user_key]
            n = 0
            for key in keys:
                self._run(conn, op, "INSERT INTO deletion_grants (user_key) VALUES (?)", (key,))
                n += self._run(
                    conn, op, "DELETE FROM events WHERE user_key = ? AND ts < ?", (key, before)
                )
                self._run(conn, op, "DELETE FROM deletion_grants WHERE user_key = ?", (key,))
        return n

    def users_with_events_before(self, before: float) -> list[str]:
        """Return the user keys with at least one event older than ``before``."""
        rows = self._all(
            self._pool.get(),
            "users_with_events_before",
            "SELECT DISTINCT user_key FROM events WHERE ts < ?",
            (before,),
        )
        return [str(r[0]) for r in rows]

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
            n += self._run(conn, op, "DELETE FROM population WHERE user_key = ?", (user_key,))
            n += self._run(conn, op, "DELETE FROM events WHERE user_key = ?", (user_key,))
            if not keep_audit:
                n += self._run(conn, op, "DELETE FROM audit WHERE user_key = ?", (user_key,))
            self._run(conn, op, "DELETE FROM deletion_grants WHERE user_key = ?", (user_key,))
        return n

    def erase_user(
        self, user_key: str, record: ErasureRecord, *, keep_kinds: Collection[str] = ()
    ) -> list[str]:
        """Erase the user and append ``record(erased_ids)`` in one transaction; see ``Store``.

        The ids are listed and deleted under the write lock, so a record appended by another
        process can never be deleted without being named in the erasure record.
        """
        keep = sorted(set(keep_kinds))
        marks = ", ".join("?" for _ in keep)
        where = f"user_key = ? AND kind NOT IN ({marks})" if keep else "user_key = ?"
        op = "erase_user"
        with self._transaction(op) as conn:
            rows = self._all(
                conn,
                op,
                f"SELECT record_id FROM audit WHERE {where} ORDER BY seq",
                (user_key, *keep),
            )
            erased = [str(r[0]) for r in rows]
            # An exception here propagates untranslated; _transaction rolls everything back.
            erasure = record(list(erased))
            payload = encode_json(
                erasure.payload, what=f"payload of audit record {erasure.record_id!r}"
            )
            self._run(conn, op, "INSERT INTO deletion_grants (user_key) VALUES (?)", (user_key,))
            self._run(conn, op, "DELETE FROM profiles WHERE user_key = ?", (user_key,))
            self._run(conn, op, "DELETE FROM population WHERE user_key = ?", (user_key,))
            self._run(conn, op, "DELETE FROM events WHERE user_key = ?", (user_key,))
            self._run(conn, op, f"DELETE FROM audit WHERE {where}", (user_key, *keep))
            self._run(conn, op, "DELETE FROM deletion_grants WHERE user_key = ?", (user_key,))
            self._append_audit_in(conn, op, erasure, payload)
        return erased


def _event(user_key: str, row: Any) -> EventRecord:
    payload = decode_json(row[2], what=f"payload of event {row[0]!r}")
    return EventRecord(row[0], user_key, row[1], payload, row[3])


def _audit(row: Any) -> AuditRecord:
    payload = decode_json(row[3], what=f"payload of audit record {row[0]!r}")
    return AuditRecord(row[0], row[1], row[2], payload, row[4])
