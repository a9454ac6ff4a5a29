from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import closing
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from palm_middleware.exceptions import (
    InvalidParameterError,
    StoreError,
    StoreUnavailable,
)
from palm_middleware.stores import AuditRecord, SQLiteStore, Store
from palm_middleware.stores._sqlite_pool import translate as _translate
from palm_middleware.stores._sqlite_schema import migrate
from palm_middleware.stores.sqlite import MIGRATIONS, SCHEMA_VERSION

from .contract import StoreContract, count_update, event

ROOT = Path(__file__).resolve().parents[2]


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        store = SQLiteStore(tmp_path / "palm.db")
        yield store
        store.close()


def raw(path: Path) -> closing[sqlite3.Connection]:
    """A plain sqlite3 connection (autocommit), closed on exit."""
    return closing(sqlite3.connect(path, isolation_level=None))


def where(path: Path) -> str:
    return re.escape(str(path))


# ---------------------------------------------------------------------- files and schema


def test_data_and_salt_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "palm.db"
    with SQLiteStore(path) as store:
        salt = store.salt
        store.apply_event(event("e1"), count_update, now=1.0)
        store.append_audit(AuditRecord("a1", "u1", "decision", {"m": 1}, 1.0))
    with SQLiteStore(path, synchronous="FULL") as store:
        assert store.salt == salt
        profile = store.get_profile("u1")
        assert profile is not None and profile.version == 1
        assert [e.event_id for e in store.events("u1")] == ["e1"]
        assert store.get_audit("a1") == AuditRecord("a1", "u1", "decision", {"m": 1}, 1.0)
    with raw(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_salt_is_random_hex_per_database(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "a.db") as a, SQLiteStore(tmp_path / "b.db") as b:
        assert re.fullmatch(r"[0-9a-f]{32}", a.salt)
        assert a.salt != b.salt


def test_migrations_are_numbered_in_order() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert SCHEMA_VERSION == MIGRATIONS[-1].version >= 2


def test_opens_a_v1_database_and_upgrades_it(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with raw(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        assert migrate(conn, target=1, where=str(path)) == 1
        conn.execute("INSERT INTO profiles VALUES ('u1', '{\"count\": 7}', 7, 5.0)")
        conn.execute(
            "INSERT INTO events (event_id, user_key, kind, payload, ts) "
            "VALUES ('old', 'u1', 'thumb', '{}', 4.0)"
        )
        conn.execute("COMMIT")
        salt = conn.execute("SELECT value FROM meta WHERE key = 'user_salt'").fetchone()[0]
        indexes = "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE '%_user_seq'"
        assert conn.execute(indexes).fetchall() == []
    with SQLiteStore(path) as store:
        assert store.salt == salt
        profile = store.get_profile("u1")
        assert profile is not None and (profile.version, profile.state) == (7, {"count": 7})
        _, profile = store.apply_event(event("new"), count_update, now=6.0)
        assert profile is not None and profile.version == 8
        assert profile.state["window"] == ["old", "new"]
    with raw(path) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert version == (str(SCHEMA_VERSION),)
        assert {n for (n,) in conn.execute(indexes)} == {"events_user_seq", "audit_user_seq"}


def test_upgrade_backfills_population_rows_from_the_profiles(tmp_path: Path) -> None:
    """A database from before the population table keeps its users' contributions (never an
    opted-out user's), so an upgraded deployment starts from the same population prior."""
    path = tmp_path / "v3.db"
    agg = {"mean_log": [-1.2, -0.4], "noise": [0.5, 0.5], "lapse": [-3.0, -1.0]}
    profiles = {
        "in": {"n_events": 3, "population": agg},
        "out": {"n_events": 2, "population": agg, "opted_out": True},
        "new": {"n_events": 0},
    }
    with raw(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        assert migrate(conn, target=3, where=str(path)) == 3
        for key, state in profiles.items():
            conn.execute("INSERT INTO profiles VALUES (?, ?, 1, 5.0)", (key, json.dumps(state)))
        conn.execute("COMMIT")
    with SQLiteStore(path) as store:
        assert store.population_rows() == {"in": agg}
        assert store.get_profile("out").state == profiles["out"]  # type: ignore[union-attr]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "palm.db"
    SQLiteStore(path).close()
    with raw(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    msg = rf"'{where(path)}' has schema version 99, newer than the {SCHEMA_VERSION} "
    with pytest.raises(StoreError, match=msg):
        SQLiteStore(path)


def test_corrupt_file_raises_store_error_with_path(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(random.Random(0).randbytes(16384))
    with pytest.raises(StoreError, match=where(path)) as info:
        SQLiteStore(path)
    assert not info.value.is_retryable
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with raw(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StoreError, match="not a palm store"):
        SQLiteStore(path)


def test_directory_path_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=where(tmp_path)) as info:
        SQLiteStore(tmp_path)
    assert not info.value.is_retryable


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"path": ":memory:"}, "MemoryStore"),
        ({"synchronous": "OFF"}, "'synchronous'"),
        ({"timeout": 0}, "'timeout'"),
    ],
)
def test_bad_parameters(tmp_path: Path, kwargs: dict[str, Any], msg: str) -> None:
    kwargs.setdefault("path", tmp_path / "palm.db")
    with pytest.raises(InvalidParameterError, match=msg):
        SQLiteStore(**kwargs)


# ---------------------------------------------------------------------- errors


def test_locked_database_raises_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "palm.db"
    with SQLiteStore(path, timeout=0.2) as store, raw(path) as holder:
        store.put_profile("u1", {"v": 1}, now=0.0)
        holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        with pytest.raises(StoreUnavailable, match=where(path)) as info:
            store.put_profile("u1", {"v": 2}, now=1.0)
        assert info.value.is_retryable
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        profile = store.get_profile("u1")  # WAL: readers do not wait for the writer
        assert profile is not None and profile.state == {"v": 1}
        holder.execute("ROLLBACK")
        assert store.put_profile("u1", {"v": 2}, now=1.0).version == 2


def _sqlite_errors() -> list[type[sqlite3.Error]]:
    found: list[type[sqlite3.Error]] = []
    todo: list[type[sqlite3.Error]] = [sqlite3.Error]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("cls", _sqlite_errors(), ids=lambda c: c.__name__)
def test_every_sqlite_error_is_translated(cls: type[sqlite3.Error]) -> None:
    error = _translate(cls("boom"), where="SQLite store 'x.db'", op="get_profile")
    assert isinstance(error, StoreError)
    assert "x.db" in str(error) and "get_profile" in str(error)


def test_busy_errors_are_retryable() -> None:
    error = _translate(sqlite3.OperationalError("database is locked"), where="w", op="op")
    assert isinstance(error, StoreUnavailable)


def test_events_and_audit_are_append_only_in_the_database(tmp_path: Path) -> None:
    path = tmp_path / "palm.db"
    with SQLiteStore(path) as store:
        store.apply_event(event("e1"), count_update, now=0.0)
        store.append_audit(AuditRecord("a1", "u1", "decision", {}, 0.0))
        with raw(path) as conn:
            for sql in (
                "UPDATE events SET kind = 'x'",
                "DELETE FROM events",
                "UPDATE audit SET kind = 'x'",
                "DELETE FROM audit WHERE record_id = 'a1'",
            ):
                with pytest.raises(sqlite3.IntegrityError, match="palm: "):
                    conn.execute(sql)
        assert len(store.events("u1")) == 1 and len(store.audit()) == 1
        assert store.delete_user("u1", keep_audit=False) == 3
        with raw(path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM deletion_grants").fetchone() == (0,)


# ---------------------------------------------------------------------- bulk and threads


def test_bulk_put_profiles(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "palm.db") as store:
        items = ((f"u{i}", {"i": i}) for i in range(1000))
        assert store.bulk_put_profiles(items, now=1.0) == 1000
        assert store.bulk_put_profiles([("u1", {"i": -1})], now=2.0) == 1
        assert store.get_profile("u1") == store.get_profile("u1")
        profile = store.get_profile("u1")
        assert profile is not None and (profile.version, profile.state) == (2, {"i": -1})
        assert store.count_profiles() == 1000
        with pytest.raises(InvalidParameterError):
            store.bulk_put_profiles([("new", {}), ("bad", {"x": float("nan")})], now=3.0)
        assert store.get_profile("new") is None  # the whole batch rolled back


def test_connections_of_finished_threads_are_closed(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "palm.db") as store:
        for _ in range(5):
            thread = threading.Thread(target=store.count_profiles)
            thread.start()
            thread.join()
        # Each new thread's connection pruned the previous dead one: main + the last thread.
        assert len(store._pool._conns) == 2


# ---------------------------------------------------------------------- processes

_WRITER = """
import sys, time
from palm_middleware.stores import EventRecord, SQLiteStore

path, name, n, synchronous = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
pace = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
time.sleep(max(0.0, float(sys.argv[5]) - time.time()))  # start together with the others

def update(profile, events):
    return {"count": (profile.state["count"] if profile else 0) + 1}

with SQLiteStore(path, synchronous=synchronous) as store:
    i = 0
    while n < 0 or i < n:
        e = EventRecord(f"{name}-{i}", "shared", "k", {"i": i}, 0.0)
        store.apply_event(e, update, window=16, now=0.0)
        print(f"{name}-{i}", flush=True)  # acknowledged: committed
        i += 1
        if pace:
            time.sleep(pace)  # yield the lock so writers interleave even on a loaded machine
"""


def _writer(
    path: Path,
    name: str,
    n: int,
    synchronous: str = "NORMAL",
    start_at: float = 0.0,
    pace: float = 0.0,
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            _WRITER,
            str(path),
            name,
            str(n),
            synchronous,
            str(start_at),
            str(pace),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_processes_writing_concurrently_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "palm.db"
    SQLiteStore(path).close()  # create the schema once; the writers race on data, not DDL
    n_procs, n_each = 3, 300
    start_at = time.time() + 1.0  # after every interpreter has started
    procs = [_writer(path, f"p{k}", n_each, start_at=start_at, pace=0.001) for k in range(n_procs)]
    for proc in procs:
        with proc:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert len(out.split()) == n_each
    with SQLiteStore(path) as store:
        stored = [e.event_id for e in store.events("shared")]
        assert set(stored) == {f"p{k}-{i}" for k in range(n_procs) for i in range(n_each)}
        # The writers really overlapped: their events interleave in commit order.
        switches = sum(a[:2] != b[:2] for a, b in pairwise(stored))
        assert switches > 10
        profile = store.get_profile("shared")
        assert profile is not None
        assert profile.state["count"] == profile.version == n_procs * n_each


def test_processes_creating_the_same_new_file_migrate_once(tmp_path: Path) -> None:
    path = tmp_path / "palm.db"
    start_at = time.time() + 1.0
    procs = [_writer(path, f"p{k}", 5, start_at=start_at) for k in range(3)]
    for proc in procs:
        with proc:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    with SQLiteStore(path) as store:
        assert len(store.events("shared")) == 15


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_acknowledged_events_survive_sigkill(tmp_path: Path, synchronous: str) -> None:
    path = tmp_path / "palm.db"
    SQLiteStore(path).close()
    acked: list[str] = []
    with _writer(path, "w", -1, synchronous) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                acked.append(line.strip())
                if len(acked) >= 300:
                    break
        finally:
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err
    assert len(acked) == 300, "the writer died before acknowledging 300 events"
    with SQLiteStore(path) as store:
        stored = [e.event_id for e in store.events("shared")]
        assert set(acked) <= set(stored)
        profile = store.get_profile("shared")
        # Event and profile are written in one transaction: never one without the other.
        assert profile is not None and profile.state["count"] == len(stored)
    with raw(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_opens_its_own_connections(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "palm.db") as store:
        store.put_profile("u1", {"by": "parent"}, now=0.0)
        with warnings.catch_warnings():
            # Python >= 3.12 warns about fork() in a process that ever had threads.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 1
            try:
                code = 0 if store.put_profile("u1", {"by": "child"}, now=1.0).version == 2 else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        profile = store.get_profile("u1")
        assert profile is not None and profile.state == {"by": "child"}
        assert store.put_profile("u1", {"by": "parent"}, now=2.0).version == 3
