"""``PostgresStore``: the ``Store`` shared by many proxy replicas, on psycopg 3 and psycopg_pool.

SQLite stays the embedded default; this store is for deployments that run several replicas
(processes or machines) against one PostgreSQL. Design, and why:

* **Per-user serialization.** ``apply_event`` and ``put_profile`` take
  ``pg_advisory_xact_lock(<64-bit hash of the user key>)`` first, so two replicas writing
  feedback for one user queue on the server (across machines) while other users proceed; the
  lock ends with the transaction, also when a replica dies (the server drops its session).
  Event ids are ``UNIQUE``: a retried delivery inserts nothing (``ON CONFLICT DO NOTHING``).
* **Audit chain: per-shard chains, one statement per record.** A single chain would make every
  decision of every replica queue on one lock; instead a record goes to chain
  ``sha256(user_key) % audit_shards`` (16 by default, fixed when the schema is created), so a
  user's records stay in one chain, in order. Each chain's head (length, last hash) is one row
  of ``audit_heads``; appending is ONE statement that updates the head row (its row lock
  serializes the writers of that chain) and inserts the record and its link. The server computes
  the link hash itself: the client sends the canonical JSON of the record split around the
  ``prev`` value, and the server hashes ``prefix || head.hash || suffix``, which is exactly
  ``stores.base.audit_hash``. So a record costs one round trip and no lock is held across
  round trips. ``audit.verify_audit_chain`` checks every chain (``ChainLink.chain``);
  ``audit_shards=1`` gives one global chain (measured in BENCHMARKS.md, "audit chain").
* **Durability.** Feedback, profile and deletion commits wait for the WAL flush (an event
  acknowledged to a client survives a database crash). Audit appends, one per decision, do not
  by default (``audit_synchronous_commit=False``): the fsync was most of a decision's store time
  (BENCHMARKS.md), a replica crash still loses nothing, and a database crash can only cut the
  chains' tail, the durability SQLite's default ``synchronous="NORMAL"`` has.
* **Failures.** Every psycopg / psycopg_pool exception leaves through ``translate``: connection
  loss, timeouts, lock and serialization failures and an exhausted pool become
  ``StoreUnavailable`` (retryable; the proxy answers 503 + ``Retry-After`` where a write was
  asked for, and decisions serve the clamped default without personalization, audited). After a
  connection-level failure a breaker answers ``StoreUnavailable`` at once for
  ``retry_interval`` seconds instead of letting every request wait for the pool; then one
  caller probes with a fresh connection, and on success the pool is rebuilt (no stale
  connections, no reconnect backoff to sit out).
* **The DSN** is read from an environment variable (or given in code) and never logged or
  shown: ``repr`` and every error name the schema only.

Data stays JSON text (exact round trips, like SQLite). Tables live in their own ``schema``
(``search_path`` per connection), migrated in order under an advisory lock by the first opener.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from palm_middleware.exceptions import (
    IdentityError,
    InvalidParameterError,
    StoreError,
    StoreUnavailable,
)
from palm_middleware.stores._postgres_schema import SCHEMA_VERSION, migrate
from palm_middleware.stores.base import (
    AsyncStoreMixin,
    AuditRecord,
    ChainLink,
    ClosingStoreMixin,
    ErasureRecord,
    EventRecord,
    PopulationRow,
    ProfileRecord,
    ProfileUpdate,
    check_limit,
    check_window,
    decode_json,
    encode_json,
)

try:
    import psycopg
    import psycopg_pool
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "PostgresStore needs psycopg 3 and psycopg_pool; install them with "
        "`pip install 'palm-middleware[postgres]'`."
    ) from exc

if TYPE_CHECKING:
    Conn = psycopg.Connection[tuple[Any, ...]]

__all__ = ["DEFAULT_DSN_ENV", "SCHEMA_VERSION", "PostgresStore", "translate"]

T = TypeVar("T")

#: Environment variable the DSN is read from by default.
DEFAULT_DSN_ENV = "PALM_POSTGRES_DSN"

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_GET_PROFILE = "SELECT state, version, updated_at FROM profiles WHERE user_key = %s"
_UPSERT_PROFILE = (
    "INSERT INTO profiles (user_key, state, version, updated_at) VALUES (%s, %s, 1, %s) "
    "ON CONFLICT (user_key) DO UPDATE SET state = excluded.state, "
    "version = profiles.version + 1, updated_at = excluded.updated_at RETURNING version"
)
_INSERT_EVENT = (
    "INSERT INTO events (event_id, user_key, kind, payload, ts) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (event_id) DO NOTHING"
)
_UPSERT_POPULATION = (
    "INSERT INTO population (user_key, stats, updated_at) VALUES (%s, %s, %s) "
    "ON CONFLICT (user_key) DO UPDATE SET stats = excluded.stats, "
    "rev = nextval('population_rev'), updated_at = excluded.updated_at"
)
_WINDOW = (
    "SELECT event_id, kind, payload, ts FROM events WHERE user_key = %s ORDER BY seq DESC LIMIT %s"
)
# One statement: lock and advance the chain head, insert the record and its link. The hash is
# sha256(prefix || previous hash || suffix): the canonical JSON of stores.base.audit_hash.
_APPEND_AUDIT = """
WITH head AS (
  UPDATE audit_heads SET n = n + 1, prev = hash,
    hash = encode(sha256(convert_to(%(pre)s || hash || %(post)s, 'UTF8')), 'hex')
  WHERE shard = %(shard)s
  RETURNING shard, n, prev, hash
), rec AS (
  INSERT INTO audit (record_id, user_key, kind, payload, ts)
  VALUES (%(rid)s, %(user)s, %(kind)s, %(payload)s, %(ts)s)
)
INSERT INTO audit_chain (shard, n, record_id, prev_hash, hash)
SELECT shard, n, %(rid)s, prev, hash FROM head
"""
_ALLOW_DELETE = "SELECT set_config('palm.allow_delete', 'on', true)"
_CONNECTION_STATES = ("08", "57P")  # connection exceptions, admin/crash shutdown


def translate(exc: BaseException, *, where: str, op: str) -> StoreError:
    """Map a psycopg or psycopg_pool exception to ``StoreUnavailable`` or ``StoreError``.

    Retryable (``StoreUnavailable``): connection loss, timeouts, lock, deadlock and
    serialization failures, an exhausted or closed pool (``psycopg.OperationalError`` and its
    subclasses) and a connection closed under us (``InterfaceError``). Everything else (bad SQL,
    constraint violations, a damaged schema) is a ``StoreError``.
    """
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return StoreUnavailable(
            f"{where}: {op} got no database connection in time: the pool is exhausted (all "
            "connections busy) or the database is unreachable; retry later, or raise "
            "'max_size'/'timeout'."
        )
    if isinstance(exc, psycopg_pool.TooManyRequests):
        return StoreUnavailable(
            f"{where}: {op} refused: too many requests already wait for a connection; retry later."
        )
    name = type(exc).__name__
    state = getattr(exc, "sqlstate", None)
    detail = f"{name}{f' {state}' if state else ''}: {_first_line(exc)}"
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return StoreUnavailable(f"{where}: {op} failed ({detail}); retry later.")
    return StoreError(f"{where}: {op} failed ({detail}).")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


def _is_connection_failure(exc: BaseException, conn: Conn | None) -> bool:
    """Whether ``exc`` means the server is gone (trip the breaker), not a busy pool or a lock."""
    if isinstance(exc, (psycopg_pool.PoolTimeout, psycopg_pool.TooManyRequests)):
        return False
    if conn is not None and conn.broken:
        return True
    if isinstance(exc, psycopg.InterfaceError):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = getattr(exc, "sqlstate", None)
        return state is None or state.startswith(_CONNECTION_STATES)
    return False


def _lock_key(user_key: str) -> int:
    """A signed 64-bit advisory-lock key for one user."""
    return int.from_bytes(hashlib.sha256(user_key.encode()).digest()[:8], "big", signed=True)


def _shard(user_key: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(user_key.encode()).digest()[8:12], "big") % n


def _split_canonical(
    record_id: str, user_key: str, kind: str, payload: dict[str, Any], ts: float
) -> tuple[str, str]:
    """The canonical JSON of ``audit_hash`` around its ``prev`` value: ``(prefix, suffix)``."""
    while True:
        marker = uuid.uuid4().hex
        canonical = json.dumps(
            {
                "prev": marker,
                "record_id": record_id,
                "user_key": user_key,
                "kind": kind,
                "payload": payload,
                "ts": ts,
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
        quoted = f'"{marker}"'
        if canonical.count(quoted) == 1:  # a payload holding this random marker: draw again
            pre, _, post = canonical.partition(quoted)
            return pre + '"', '"' + post


class PostgresStore(ClosingStoreMixin, AsyncStoreMixin):
    """A ``Store`` in PostgreSQL, shared safely by threads, processes and machines.

    Args:
        dsn: A libpq connection string or URI. None (default) reads it from ``dsn_env``.
        dsn_env: The environment variable holding the DSN when ``dsn`` is None.
        schema: The schema holding the tables (created and migrated on first use); one per
            deployment. Lower-case letters, digits and ``_``.
        min_size, max_size: Connections the pool keeps open and may open at most.
        timeout: Seconds a call waits for a free connection before ``StoreUnavailable``; also
            the connect timeout.
        lock_timeout: Seconds a write waits for its user's lock (another replica writing
            feedback for the same user) before ``StoreUnavailable``.
        audit_shards: Number of audit hash chains, fixed when the schema is created (None: 16,
            or what the schema has). 1 gives one global chain.
        synchronous_commit: Whether feedback, profile and deletion commits wait for their WAL
            to reach disk (default True: an acknowledged event survives a database crash).
        audit_synchronous_commit: The same for audit records (default False, the decision hot
            path): a commit returns before its WAL is flushed, which saves an fsync per
            decision. A replica crash loses nothing; a database crash may lose the last
            ~0.6 s of audit records, as a tail (the chains still verify). The durability of
            SQLite's default ``synchronous="NORMAL"``.
        retry_interval: Seconds the breaker fails fast after a connection-level failure.

    Raises:
        InvalidParameterError: A parameter is out of range, or no DSN is set.
        StoreUnavailable: The database cannot be reached.
        StoreError: The schema is not a palm store, or is newer than this code.

    Example:
        >>> store = PostgresStore(schema="palm_doc")  # doctest: +SKIP
        >>> store.put_profile("u1", {"mean": [0.5, 0.5]}, now=0.0).version  # doctest: +SKIP
        1
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        dsn_env: str = DEFAULT_DSN_ENV,
        schema: str = "palm",
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 5.0,
        lock_timeout: float = 10.0,
        audit_shards: int | None = None,
        synchronous_commit: bool = True,
        audit_synchronous_commit: bool = False,
        retry_interval: float = 1.0,
    ) -> None:
        if dsn is None:
            dsn = os.environ.get(dsn_env)
            if not dsn:
                raise InvalidParameterError(
                    f"PostgresStore reads its DSN from the environment variable {dsn_env!r}, "
                    "which is not set; set it (e.g. 'postgresql://user@host:5432/db')."
                )
        if not isinstance(schema, str) or not _SCHEMA_RE.match(schema):
            raise InvalidParameterError(
                "The 'schema' parameter of PostgresStore must match [a-z_][a-z0-9_]{0,62}. "
                f"Got {schema!r} instead."
            )
        for name, value, low in (("min_size", min_size, 0), ("max_size", max_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidParameterError(
                    f"The {name!r} parameter of PostgresStore must be an int >= {low}. "
                    f"Got {value!r} instead."
                )
        if min_size > max_size:
            raise InvalidParameterError(
                f"PostgresStore: 'min_size' ({min_size}) must not exceed 'max_size' ({max_size})."
            )
        if audit_shards is not None and (
            isinstance(audit_shards, bool) or not isinstance(audit_shards, int) or audit_shards < 1
        ):
            raise InvalidParameterError(
                "The 'audit_shards' parameter of PostgresStore must be None or an int >= 1. "
                f"Got {audit_shards!r} instead."
            )
        for name, number in (
            ("timeout", timeout),
            ("lock_timeout", lock_timeout),
            ("retry_interval", retry_interval),
        ):
            if isinstance(number, bool) or not isinstance(number, (int, float)) or number <= 0:
                raise InvalidParameterError(
                    f"The {name!r} parameter of PostgresStore must be a number > 0. "
                    f"Got {number!r} instead."
                )
        self._dsn = dsn
        self._schema = schema
        self._where = f"PostgreSQL store (schema {schema!r})"
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = float(timeout)
        self._retry_interval = float(retry_interval)
        options = f"-c search_path={schema} -c lock_timeout={round(lock_timeout * 1000)}"
        # Sessions default to the audit's setting (one-statement appends); durable writes that
        # differ switch with SET LOCAL inside their own transaction.
        session_sync = synchronous_commit and audit_synchronous_commit
        if not session_sync:
            options += " -c synchronous_commit=off"
        self._sync_local = (
            "SET LOCAL synchronous_commit = on" if synchronous_commit and not session_sync else None
        )
        self._conn_kwargs: dict[str, Any] = {
            "autocommit": True,
            "options": options,
            "connect_timeout": max(1, round(self._timeout)),
            "application_name": "palm-middleware",
        }
        self._local = threading.local()
        self._closed = False
        self._breaker = threading.Lock()
        self._down_until = 0.0  # monotonic; > now while the breaker is open
        self._probing = False
        self._pool = self._new_pool()
        try:
            self._salt, self._audit_shards = self._open_schema(audit_shards)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ lifecycle

    def _new_pool(self) -> psycopg_pool.ConnectionPool[Any]:
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            self._dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            kwargs=self._conn_kwargs,
            timeout=self._timeout,
            # Give up a failed reconnection soon; the breaker's probe rebuilds the pool anyway.
            reconnect_timeout=max(self._timeout, 2.0),
            name=f"palm-{self._schema}",
            open=False,
        )
        pool.open(wait=False)
        return pool

    @property
    def schema(self) -> str:
        """The schema holding this store's tables."""
        return self._schema

    @property
    def salt(self) -> str:
        """The random hex salt of this store (made once, at creation), for hashing user ids."""
        return self._salt

    @property
    def audit_shards(self) -> int:
        """How many audit hash chains this store writes (fixed at creation)."""
        return self._audit_shards

    def __repr__(self) -> str:  # never the DSN
        return f"PostgresStore(schema={self._schema!r}, max_size={self._max_size})"

    def close(self) -> None:
        """Close the pool; later calls raise ``StoreError``. Idempotent."""
        self._closed = True
        self._pool.close()

    def _open_schema(self, audit_shards: int | None) -> tuple[str, int]:
        def work(conn: Conn) -> tuple[str, int]:
            migrate(conn, self._schema, audit_shards=audit_shards or 16, where=self._where)
            rows: dict[str, str] = {
                str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")
            }
            if "user_salt" not in rows or "audit_shards" not in rows:
                raise StoreError(f"{self._where} lacks user_salt or audit_shards in its meta.")
            return str(rows["user_salt"]), int(rows["audit_shards"])

        salt, shards = self._call("open", work)
        if audit_shards is not None and audit_shards != shards:
            raise StoreError(
                f"{self._where} was created with audit_shards={shards}; got {audit_shards}. "
                "The number of chains is fixed at creation: pass None or the same number."
            )
        return salt, shards

    # ------------------------------------------------------------------ calls

    def _call(self, op: str, fn: Callable[[Conn], T], *, write: bool = False) -> T:
        """Run ``fn`` on a pooled connection; translate every database error once.

        Exceptions that are not psycopg's (an ``update`` callback's, ``IdentityError``)
        propagate unchanged.
        """
        if self._closed:
            raise StoreError(f"{self._where} is closed; open a new PostgresStore.")
        if getattr(self._local, "writing", False):
            raise StoreError(
                f"{self._where}: {op} was called inside another write of this thread (an "
                "apply_event update callback must not use the store)."
            )
        self._admit(op)
        conn: Conn | None = None
        try:
            with self._pool.connection() as conn:
                if not write:
                    return fn(conn)
                self._local.writing = True
                try:
                    return fn(conn)
                finally:
                    self._local.writing = False
        except psycopg.Error as exc:
            if self._closed:
                raise StoreError(f"{self._where} is closed; open a new PostgresStore.") from exc
            if _is_connection_failure(exc, conn):
                self._trip()
            raise translate(exc, where=self._where, op=op) from exc

    def _admit(self, op: str) -> None:
        """The breaker: fail fast while the database is known down; let one caller probe."""
        if self._down_until == 0.0:
            return
        with self._breaker:
            now = time.monotonic()
            if self._down_until == 0.0:
                return
            if now < self._down_until or self._probing:
                raise StoreUnavailable(
                    f"{self._where}: {op} refused: the database was unreachable "
                    f"{self._retry_interval:g}s ago or less; retry later."
                )
            self._probing = True
        try:
            probe = psycopg.connect(self._dsn, **self._conn_kwargs)
            probe.close()
        except psycopg.Error as exc:
            with self._breaker:
                self._probing = False
                self._down_until = time.monotonic() + self._retry_interval
            raise translate(exc, where=self._where, op=op) from exc
        # Reachable again: a fresh pool, rather than stale sockets and a reconnect backoff.
        old, self._pool = self._pool, self._new_pool()
        threading.Thread(target=old.close, name="palm-pg-close", daemon=True).start()
        with self._breaker:
            self._probing = False
            self._down_until = 0.0

    def _trip(self) -> None:
        with self._breaker:
            if not self._probing:
                self._down_until = time.monotonic() + self._retry_interval

    @contextmanager
    def _user_transaction(self, conn: Conn, user_key: str) -> Iterator[None]:
        """A transaction holding the user's advisory lock (released at commit or rollback)."""
        with conn.transaction():
            if self._sync_local is not None:
                conn.execute(self._sync_local)
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(user_key),))
            yield

    # ------------------------------------------------------------------ profiles

    def get_profile(self, user_key: str) -> ProfileRecord | None:
        """Return the profile of ``user_key``, or None (one primary-key lookup)."""
        row = self._call("get_profile", lambda c: c.execute(_GET_PROFILE, (user_key,)).fetchone())
        if row is None:
            return None
        state = decode_json(row[0], what=f"state of user {user_key!r}")
        return ProfileRecord(user_key, state, int(row[1]), float(row[2]))

    def put_profile(self, user_key: str, state: dict[str, Any], *, now: float) -> ProfileRecord:
        """Write ``state`` as the profile of ``user_key`` (version + 1) and return it."""
        state_json = encode_json(state, what=f"state of user {user_key!r}")

        def work(conn: Conn) -> int:
            with self._user_transaction(conn, user_key):
                row = conn.execute(_UPSERT_PROFILE, (user_key, state_json, now)).fetchone()
            assert row is not None
            return int(row[0])

        version = self._call("put_profile", work, write=True)
        return ProfileRecord(user_key, decode_json(state_json, what="state"), version, now)

    def bulk_put_profiles(self, items: Iterable[tuple[str, dict[str, Any]]], now: float) -> int:
        """Write many profiles in one transaction (imports, benchmarks); versions bump as in
        ``put_profile``. An invalid item rolls the whole batch back.

        Returns:
            The number of items written.
        """
        rows = [
            (k, encode_json(s, what=f"state of user {k!r}"), now)
            for k, s in items  # encoded first: a bad item writes nothing
        ]

        def work(conn: Conn) -> None:
            with conn.transaction(), conn.cursor() as cur:
                if self._sync_local is not None:
                    cur.execute(self._sync_local)
                cur.executemany(_UPSERT_PROFILE.replace(" RETURNING version", ""), rows)

        self._call("bulk_put_profiles", work, write=True)
        return len(rows)

    def count_profiles(self) -> int:
        """Return the number of stored profiles."""
        row = self._call(
            "count_profiles", lambda c: c.execute("SELECT count(*) FROM profiles").fetchone()
        )
        assert row is not None
        return int(row[0])

    # ------------------------------------------------------------------ population

    def population_rows(self) -> dict[str, dict[str, Any]]:
        """Return every user's population row (user key -> aggregates), in key order."""
        rows = self._call(
            "population_rows",
            lambda c: c.execute(
                "SELECT user_key, stats FROM population ORDER BY user_key"
            ).fetchall(),
        )
        return {str(k): decode_json(v, what=f"population row of {k!r}") for k, v in rows}

    def population_stamp(self) -> tuple[int, ...]:
        """(rows, largest rev, sum of revs): changes on every population write or delete, by
        any replica (revs are never reused; the sum also catches a write committed after a
        later-numbered one)."""
        row = self._call(
            "population_stamp",
            lambda c: c.execute(
                "SELECT count(*), coalesce(max(rev), 0), coalesce(sum(rev), 0)::text "
                "FROM population"
            ).fetchone(),
        )
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

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
        """Store ``event`` once and rewrite the profile with ``update``; see ``Store``.

        Writers of one user queue on its advisory lock, in any process or machine.
        """
        check_window(window)
        payload = encode_json(event.payload, what=f"payload of event {event.event_id!r}")
        user_key = event.user_key

        def work(conn: Conn) -> tuple[bool, ProfileRecord | None]:
            with self._user_transaction(conn, user_key):
                inserted = conn.execute(
                    _INSERT_EVENT, (event.event_id, user_key, event.kind, payload, event.ts)
                ).rowcount
                current = _profile(user_key, conn.execute(_GET_PROFILE, (user_key,)).fetchone())
                if not inserted:
                    owner = conn.execute(
                        "SELECT user_key FROM events WHERE event_id = %s", (event.event_id,)
                    ).fetchone()
                    if owner is not None and owner[0] != user_key:
                        raise IdentityError(
                            f"Event id {event.event_id!r} is already stored for another user; "
                            "event ids must be globally unique."
                        )
                    return False, current
                rows = conn.execute(_WINDOW, (user_key, window)).fetchall()
                recent = [_event(user_key, r) for r in reversed(rows)]
                # An exception here propagates untranslated; the transaction rolls back.
                state = update(current, recent)
                state_json = encode_json(state, what=f"state returned by update for {user_key!r}")
                row = conn.execute(_UPSERT_PROFILE, (user_key, state_json, now)).fetchone()
                if population is not None:
                    agg = population(state)
                    if agg is None:
                        conn.execute("DELETE FROM population WHERE user_key = %s", (user_key,))
                    else:
                        agg_json = encode_json(agg, what=f"population row of {user_key!r}")
                        conn.execute(_UPSERT_POPULATION, (user_key, agg_json, now))
            assert row is not None
            profile = ProfileRecord(
                user_key, decode_json(state_json, what="state"), int(row[0]), now
            )
            return True, profile

        return self._call("apply_event", work, write=True)

    def events(self, user_key: str, *, limit: int | None = None) -> list[EventRecord]:
        """Return the events of ``user_key`` in append order; ``limit``: most recent N."""
        check_limit(limit)
        select = "SELECT event_id, kind, payload, ts FROM events WHERE user_key = %s"

        def work(conn: Conn) -> list[Any]:
            if limit is None:
                return conn.execute(f"{select} ORDER BY seq", (user_key,)).fetchall()
            rows = conn.execute(
                f"{select} ORDER BY seq DESC LIMIT %s", (user_key, limit)
            ).fetchall()
            rows.reverse()
            return rows

        return [_event(user_key, r) for r in self._call("events", work)]

    # ------------------------------------------------------------------ audit

    def append_audit(self, record: AuditRecord) -> None:
        """Append an audit record and its chain link in one statement; a duplicate
        ``record_id`` raises ``StoreError``."""
        params = self._audit_params(record)

        def work(conn: Conn) -> None:
            self._append_audit_in(conn, record.record_id, params)

        self._call("append_audit", work, write=True)

    def _audit_params(self, record: AuditRecord) -> dict[str, Any]:
        payload = encode_json(record.payload, what=f"payload of audit record {record.record_id!r}")
        pre, post = _split_canonical(
            record.record_id,
            record.user_key,
            record.kind,
            decode_json(payload, what="audit payload"),
            record.ts,
        )
        return {
            "pre": pre,
            "post": post,
            "shard": _shard(record.user_key, self._audit_shards),
            "rid": record.record_id,
            "user": record.user_key,
            "kind": record.kind,
            "payload": payload,
            "ts": record.ts,
        }

    def _append_audit_in(self, conn: Conn, record_id: str, params: dict[str, Any]) -> None:
        try:
            conn.execute(_APPEND_AUDIT, params)
        except psycopg.errors.UniqueViolation as exc:
            raise StoreError(
                f"{self._where}: audit record id {record_id!r} already exists; "
                "audit ids are unique."
            ) from exc

    def audit_chain(self) -> list[ChainLink]:
        """Return the links of every chain in append order (``ChainLink.chain`` is the shard,
        ``seq`` the position in it)."""
        rows = self._call(
            "audit_chain",
            lambda c: c.execute(
                "SELECT shard, n, record_id, prev_hash, hash FROM audit_chain ORDER BY gseq"
            ).fetchall(),
        )
        return [
            ChainLink(int(r[1]), str(r[2]), str(r[3]), str(r[4]), chain=int(r[0])) for r in rows
        ]

    def get_audit(self, record_id: str) -> AuditRecord | None:
        """Return the audit record ``record_id``, or None."""
        row = self._call(
            "get_audit",
            lambda c: c.execute(
                "SELECT record_id, user_key, kind, payload, ts FROM audit WHERE record_id = %s",
                (record_id,),
            ).fetchone(),
        )
        return None if row is None else _audit(row)

    def audit(self, user_key: str | None = None, *, limit: int | None = None) -> list[AuditRecord]:
        """Return audit records (of one user, or all) in append order; ``limit``: most recent N."""
        check_limit(limit)
        sql = "SELECT record_id, user_key, kind, payload, ts FROM audit"
        params: tuple[Any, ...] = ()
        if user_key is not None:
            sql += " WHERE user_key = %s"
            params = (user_key,)

        def work(conn: Conn) -> list[Any]:
            if limit is None:
                return conn.execute(f"{sql} ORDER BY seq", params).fetchall()
            rows = conn.execute(f"{sql} ORDER BY seq DESC LIMIT %s", (*params, limit)).fetchall()
            rows.reverse()
            return rows

        return [_audit(r) for r in self._call("audit", work)]

    # ------------------------------------------------------------------ deletion

    def purge_events(self, *, before: float, user_key: str | None = None) -> int:
        """Delete events with ``ts < before`` (of one user, or all) in one transaction.

        Returns:
            The number of events deleted.
        """

        def work(conn: Conn) -> int:
            with conn.transaction():
                if self._sync_local is not None:
                    conn.execute(self._sync_local)
                if user_key is not None:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(user_key),))
                conn.execute(_ALLOW_DELETE)
                if user_key is None:
                    cur = conn.execute("DELETE FROM events WHERE ts < %s", (before,))
                else:
                    cur = conn.execute(
                        "DELETE FROM events WHERE user_key = %s AND ts < %s", (user_key, before)
                    )
                return cur.rowcount

        return self._call("purge_events", work, write=True)

    def users_with_events_before(self, before: float) -> list[str]:
        """Return the user keys with at least one event older than ``before``."""
        rows = self._call(
            "users_with_events_before",
            lambda c: c.execute(
                "SELECT DISTINCT user_key FROM events WHERE ts < %s", (before,)
            ).fetchall(),
        )
        return [str(r[0]) for r in rows]

    def erase_user(
        self, user_key: str, record: ErasureRecord, *, keep_kinds: Collection[str] = ()
    ) -> list[str]:
        """Erase the user and append ``record(erased_ids)`` in one transaction; see ``Store``.

        The user's chain head is locked first, so no record of this user can be appended
        between listing the ids and deleting them: every erased id is named in the record.
        """
        keep = sorted(set(keep_kinds))

        def work(conn: Conn) -> list[str]:
            with self._user_transaction(conn, user_key):
                conn.execute(
                    "SELECT n FROM audit_heads WHERE shard = %s FOR UPDATE",
                    (_shard(user_key, self._audit_shards),),
                )
                rows = conn.execute(
                    "SELECT record_id FROM audit WHERE user_key = %s AND NOT (kind = ANY(%s)) "
                    "ORDER BY seq",
                    (user_key, keep),
                ).fetchall()
                erased = [str(r[0]) for r in rows]
                # An exception here propagates untranslated; the transaction rolls back.
                erasure = record(list(erased))
                params = self._audit_params(erasure)
                conn.execute(_ALLOW_DELETE)
                conn.execute("DELETE FROM profiles WHERE user_key = %s", (user_key,))
                conn.execute("DELETE FROM population WHERE user_key = %s", (user_key,))
                conn.execute("DELETE FROM events WHERE user_key = %s", (user_key,))
                conn.execute("DELETE FROM audit WHERE record_id = ANY(%s)", (erased,))
                self._append_audit_in(conn, erasure.record_id, params)
            return erased

        return self._call("erase_user", work, write=True)

    def delete_user(self, user_key: str, *, keep_audit: bool) -> int:
        """Delete profile and events (and audit rows unless ``keep_audit``) in one transaction.

        Returns:
            The number of rows deleted.
        """

        def work(conn: Conn) -> int:
            with self._user_transaction(conn, user_key):
                conn.execute(_ALLOW_DELETE)
                n = conn.execute("DELETE FROM profiles WHERE user_key = %s", (user_key,)).rowcount
                n += conn.execute(
                    "DELETE FROM population WHERE user_key = %s", (user_key,)
                ).rowcount
                n += conn.execute("DELETE FROM events WHERE user_key = %s", (user_key,)).rowcount
                if not keep_audit:
                    n += conn.execute("DELETE FROM audit WHERE user_key = %s", (user_key,)).rowcount
            return n

        return self._call("delete_user", work, write=True)


def _profile(user_key: str, row: Any) -> ProfileRecord | None:
    if row is None:
        return None
    return ProfileRecord(user_key, decode_json(row[0], what="state"), int(row[1]), float(row[2]))


def _event(user_key: str, row: Any) -> EventRecord:
    payload = decode_json(row[2], what=f"payload of event {row[0]!r}")
    return EventRecord(str(row[0]), user_key, str(row[1]), payload, float(row[3]))


def _audit(row: Any) -> AuditRecord:
    payload = decode_json(row[3], what=f"payload of audit record {row[0]!r}")
    return AuditRecord(str(row[0]), str(row[1]), str(row[2]), payload, float(row[4]))
