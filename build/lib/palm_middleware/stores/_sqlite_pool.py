"""Per-thread SQLite connections, busy retries and error translation for ``SQLiteStore``.

Every ``sqlite3`` exception leaves this package through ``translate`` (``raise ... from exc``).
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from palm_middleware.exceptions import StoreError, StoreUnavailable

__all__ = ["ConnectionPool", "is_busy", "translate"]

T = TypeVar("T")

_HINTS: dict[str, str] = {
    "SQLITE_NOTADB": " The file is not an SQLite database; check 'path'.",
    "SQLITE_CORRUPT": " The database is corrupt; restore it from a backup.",
    "SQLITE_READONLY": " The store needs write access to the file, its directory and -wal/-shm.",
    "SQLITE_CANTOPEN": " Check that the directory exists and is writable.",
    "SQLITE_FULL": " The disk is full.",
}

_BACKOFF_FIRST = 0.0005  # seconds; doubles per attempt
_BACKOFF_MAX = 0.025  # short: a write transaction lasts well under a millisecond
_JITTER = random.Random()  # own instance: never touch the global RNG


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` means another connection holds a lock (worth retrying)."""
    name: str | None = getattr(exc, "sqlite_errorname", None)  # Python >= 3.11
    if name is not None:
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def translate(exc: sqlite3.Error, *, where: str, op: str) -> StoreError:
    """Map any ``sqlite3.Error`` to ``StoreUnavailable`` (busy/locked) or ``StoreError``."""
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    if is_busy(exc):
        return StoreUnavailable(
            f"{where}: {op} failed, the database is locked by another connection "
            f"({name}: {exc}); retry later or raise 'timeout'."
        )
    # Extended codes (SQLITE_READONLY_DBMOVED, SQLITE_CANTOPEN_ISDIR) share their base's hint.
    hint = next((h for k, h in _HINTS.items() if name == k or name.startswith(k + "_")), "")
    return StoreError(f"{where}: {op} failed ({name}: {exc}).{hint}")


# SQLite connections must not cross fork(): a child drops the ones it inherited and opens its
# own. They are parked here, never closed, because closing them in the child would run SQLite's
# close logic on file locks that belong to the parent.
_FORK_INHERITED: list[sqlite3.Connection] = []
_LIVE_POOLS: weakref.WeakSet[ConnectionPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_LIVE_POOLS):
        pool._forget_after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ConnectionPool:
    """One ``sqlite3`` connection per thread to one WAL database.

    Connections of threads that ended are closed when the next one opens; ``close`` closes
    all of them, so it must run once the other threads are done.

    Args:
        path: The database file.
        where: How error messages name the store (``"SQLite store 'palm.db'"``).
        synchronous: ``PRAGMA synchronous`` value, ``"NORMAL"`` or ``"FULL"``.
        timeout: Seconds ``retry_busy`` keeps retrying before ``StoreUnavailable``.
    """

    def __init__(self, path: Path, *, where: str, synchronous: str, timeout: float) -> None:
        self.path = path
        self.where = where
        self.synchronous = synchronous
        self.timeout = timeout
        self.closed = False
        self._local = threading.local()
        self._conns: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        self._lock = threading.Lock()
        # Writers of this process queue here, so only one per process waits on SQLite's lock.
        self.write_lock = threading.Lock()
        _LIVE_POOLS.add(self)

    def get(self) -> sqlite3.Connection:
        """Return this thread's connection, opening it on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        return conn if conn is not None else self._open()

    def retry_busy(self, op: str, fn: Callable[[], T]) -> T:
        """Run ``fn``, retrying with jittered backoff while SQLite is busy, up to ``timeout``.

        Raises:
            StoreUnavailable: Still busy after ``timeout`` seconds.
            StoreError: Any other SQLite error.
        """
        deadline = 0.0
        attempt = 0
        while True:
            try:
                return fn()
            except sqlite3.Error as exc:
                if not is_busy(exc):
                    raise translate(exc, where=self.where, op=op) from exc
                now = time.monotonic()
                if attempt == 0:
                    deadline = now + self.timeout
                elif now >= deadline:
                    raise StoreUnavailable(
                        f"{self.where}: {op} waited {self.timeout:g}s for a lock held by "
                        "another connection; retry later or raise 'timeout'."
                    ) from exc
                # Jitter keeps processes that collided from colliding again in lockstep.
                delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2**attempt) * _JITTER.uniform(0.5, 1)
                time.sleep(min(delay, max(0.0, deadline - now)))
                attempt += 1

    def discard(self, conn: sqlite3.Connection) -> None:
        """Drop a connection whose state is unknown; the next ``get`` opens a fresh one."""
        with self._lock:
            self._conns = [(r, c) for r, c in self._conns if c is not conn]
        if getattr(self._local, "conn", None) is conn:
            del self._local.conn
        try:
            conn.close()
        except sqlite3.Error:
            pass  # already failing: the caller is handling the error that brought us here

    def close(self) -> None:
        """Close every connection of every thread; later ``get`` calls raise. Idempotent."""
        with self._lock:
            self.closed = True
            conns, self._conns = self._conns, []
            self._local = threading.local()
        _LIVE_POOLS.discard(self)
        first: sqlite3.Error | None = None
        for _, conn in conns:
            try:
                conn.close()
            except sqlite3.Error as exc:  # close the others first, then report
                first = first or exc
        if first is not None:
            raise translate(first, where=self.where, op="close") from first

    def _check_open(self) -> None:
        if self.closed:
            raise StoreError(f"{self.where} is closed; open a new SQLiteStore.")

    def _open(self) -> sqlite3.Connection:
        with self._lock:
            self._check_open()
            # Threads come and go (executors, servers): close what the dead ones left behind.
            alive = []
            for ref, old in self._conns:
                thread = ref()
                if thread is not None and thread.is_alive():
                    alive.append((ref, old))
                    continue
                try:
                    old.close()
                except sqlite3.Error as exc:
                    raise translate(exc, where=self.where, op="open") from exc
            self._conns = alive
        try:
            # timeout=0: no busy handler inside SQLite; retry_busy waits, up to a deadline.
            conn = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise translate(exc, where=self.where, op="open") from exc
        try:
            mode = self.retry_busy(
                "open", lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone()
            )
            if mode is None or str(mode[0]).lower() != "wal":
                raise StoreError(
                    f"{self.where}: could not enable WAL mode (got {mode!r}); the file must "
                    "be on a local filesystem."
                )
            self.retry_busy("open", lambda: self._set_pragmas(conn))
            with self._lock:
                self._check_open()
                self._conns.append((weakref.ref(threading.current_thread()), conn))
        except BaseException:
            conn.close()
            raise
        self._local.conn = conn
        return conn

    def _set_pragmas(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        # Deleted rows (forget) are overwritten with zeros instead of lingering in free pages.
        conn.execute("PRAGMA secure_delete = ON")

    def _forget_after_fork(self) -> None:
        _FORK_INHERITED.extend(conn for _, conn in self._conns)
        self._conns = []
        self._local = threading.local()
        # A lock held by another thread at fork time would stay held forever in the child.
        self._lock = threading.Lock()
        self.write_lock = threading.Lock()
