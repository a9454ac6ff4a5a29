"""``PostgresStore`` against the real server: the store contract, migrations, isolation,
cross-process serialization, the sharded audit chain and error translation."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from palm_middleware.audit import verify_audit_chain
from palm_middleware.exceptions import (
    InvalidParameterError,
    StoreError,
    StoreUnavailable,
)
from palm_middleware.stores import AuditRecord, Store
from palm_middleware.stores.base import audit_hash
from tests.pg import SchemaFactory, pg_required

from .contract import StoreContract, count_update, event

# Where Postgres is required a missing driver is an error, never a silent skip.
psycopg = __import__("psycopg") if pg_required() else pytest.importorskip("psycopg")
from palm_middleware.stores.postgres import (  # noqa: E402
    SCHEMA_VERSION,
    PostgresStore,
    translate,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def schema(pg_schemas: SchemaFactory) -> Iterator[str]:
    name = pg_schemas.new()
    yield name
    pg_schemas.drop(name)


@pytest.fixture
def pg(pg_dsn: str, schema: str) -> Iterator[PostgresStore]:
    store = PostgresStore(pg_dsn, schema=schema, max_size=12)
    yield store
    store.close()


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store(self, pg: PostgresStore) -> Iterator[Store]:
        yield pg


def sql(dsn: str, schema: str, statement: str, params: Any = None) -> list[Any]:
    with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as conn:
        cur = conn.execute(statement.encode(), params)
        return cur.fetchall() if cur.description else []


# ---------------------------------------------------------------------- configuration


def test_dsn_comes_from_the_environment_and_is_never_shown(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_dsn = pg_dsn + ("&" if "?" in pg_dsn else "?") + "application_name=s3cr3t"
    monkeypatch.setenv("MY_PALM_DSN", secret_dsn)
    with PostgresStore(dsn_env="MY_PALM_DSN", schema=schema) as store:
        assert store.get_profile("u1") is None
        assert "s3cr3t" not in repr(store) and "127.0.0.1" not in repr(store)
    monkeypatch.delenv("MY_PALM_DSN")
    with pytest.raises(InvalidParameterError, match="'MY_PALM_DSN', which is not set"):
        PostgresStore(dsn_env="MY_PALM_DSN", schema=schema)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"schema": "Bad-Name"}, "schema"),
        ({"schema": "x; drop"}, "schema"),
        ({"max_size": 0}, "max_size"),
        ({"min_size": 5, "max_size": 2}, "min_size"),
        ({"timeout": 0}, "timeout"),
        ({"audit_shards": 0}, "audit_shards"),
        ({"retry_interval": -1}, "retry_interval"),
    ],
)
def test_bad_parameters_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidParameterError, match=field):
        PostgresStore("postgresql://127.0.0.1:1/none", **kwargs)


# ---------------------------------------------------------------------- schema


def test_schema_is_versioned_salted_and_reopened(pg_dsn: str, schema: str) -> None:
    with PostgresStore(pg_dsn, schema=schema) as store:
        salt = store.salt
        assert re.fullmatch(r"[0-9a-f]{32}", salt) and store.audit_shards == 16
        store.apply_event(event("e1"), count_update, now=1.0)
    with PostgresStore(pg_dsn, schema=schema, audit_shards=16) as store:
        assert store.salt == salt
        assert [e.event_id for e in store.events("u1")] == ["e1"]
    rows = sql(pg_dsn, schema, "SELECT value FROM meta WHERE key = 'schema_version'")
    assert rows == [(str(SCHEMA_VERSION),)]
    with pytest.raises(StoreError, match="created with audit_shards=16; got 4"):
        PostgresStore(pg_dsn, schema=schema, audit_shards=4)


def test_upgrade_backfills_population_rows_from_the_profiles(pg_dsn: str, schema: str) -> None:
    """A schema from before the population table keeps its users' contributions (never an
    opted-out user's)."""
    from palm_middleware.stores._postgres_schema import migrate

    agg = {"mean_log": [-1.2, -0.4], "noise": [0.5, 0.5], "lapse": [-3.0, -1.0]}
    profiles = {
        "in": {"n_events": 3, "population": agg},
        "out": {"n_events": 2, "population": agg, "opted_out": True},
        "new": {"n_events": 0},
    }
    with psycopg.connect(pg_dsn, autocommit=True, options=f"-c search_path={schema}") as conn:
        assert migrate(conn, schema, audit_shards=2, where="test", target=1) == 1
        for key, state in profiles.items():
            conn.execute("INSERT INTO profiles VALUES (%s, %s, 1, 5.0)", (key, json.dumps(state)))
    with PostgresStore(pg_dsn, schema=schema) as store:
        assert store.population_rows() == {"in": agg}
        assert store.get_profile("out").state == profiles["out"]  # type: ignore[union-attr]
    rows = sql(pg_dsn, schema, "SELECT value FROM meta WHERE key = 'schema_version'")
    assert rows == [(str(SCHEMA_VERSION),)]


def test_two_schemas_are_isolated(pg_dsn: str, pg_schemas: SchemaFactory) -> None:
    a_name, b_name = pg_schemas.new(), pg_schemas.new()
    with PostgresStore(pg_dsn, schema=a_name) as a, PostgresStore(pg_dsn, schema=b_name) as b:
        a.put_profile("u1", {"x": 1}, now=0.0)
        assert b.get_profile("u1") is None and a.salt != b.salt
    pg_schemas.drop(a_name)
    pg_schemas.drop(b_name)


def test_newer_schema_is_refused(pg_dsn: str, schema: str) -> None:
    PostgresStore(pg_dsn, schema=schema).close()
    sql(pg_dsn, schema, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match=f"schema version 99, newer than the {SCHEMA_VERSION}"):
        PostgresStore(pg_dsn, schema=schema)


def test_foreign_schema_is_refused(pg_dsn: str, schema: str) -> None:
    sql(pg_dsn, "public", f'CREATE SCHEMA "{schema}"; CREATE TABLE "{schema}".orders (id int)')
    with pytest.raises(StoreError, match=r"not a palm store \(orders\)"):
        PostgresStore(pg_dsn, schema=schema)


def test_concurrent_openers_migrate_once(pg_dsn: str, schema: str) -> None:
    code = (
        "import sys; from palm_middleware.stores.postgres import PostgresStore; "
        "s = PostgresStore(sys.argv[1], schema=sys.argv[2]); print(s.salt); s.close()"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, pg_dsn, schema], stdout=subprocess.PIPE, env=env
        )
        for _ in range(4)
    ]
    salts = {p.communicate(timeout=60)[0].decode().strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(salts) == 1  # one migration created one salt; the others read it


def test_rows_are_append_only_in_the_database(pg: PostgresStore, pg_dsn: str) -> None:
    pg.apply_event(event("e1"), count_update, now=1.0)
    pg.append_audit(AuditRecord("a1", "u1", "decision", {}, 1.0))
    for statement in (
        "UPDATE events SET kind = 'x'",
        "DELETE FROM events",
        "UPDATE audit SET kind = 'x'",
        "DELETE FROM audit",
        "DELETE FROM audit_chain",
    ):
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            sql(pg_dsn, pg.schema, statement)
    assert pg.delete_user("u1", keep_audit=False) == 3
    assert len(pg.audit_chain()) == 1  # the link outlives the record


def test_retention_purge(pg: PostgresStore) -> None:
    for i, ts in enumerate((10.0, 20.0, 30.0)):
        pg.apply_event(
            event(f"e{i}").__class__(f"e{i}", "u1", "thumb", {}, ts), count_update, now=ts
        )
    pg.apply_event(
        event("old2", user_key="u2").__class__("old2", "u2", "t", {}, 5.0), count_update, now=5.0
    )
    assert sorted(pg.users_with_events_before(25.0)) == ["u1", "u2"]
    assert pg.purge_events(before=25.0, user_key="u1") == 2
    assert [e.event_id for e in pg.events("u1")] == ["e2"]
    assert pg.purge_events(before=25.0) == 1
    assert pg.users_with_events_before(25.0) == []
    assert pg.get_profile("u1") is not None  # profiles survive the purge of their events


# ---------------------------------------------------------------------- audit chain


def test_chain_hashes_match_audit_hash_and_verify(pg: PostgresStore, pg_dsn: str) -> None:
    records = [
        AuditRecord(f"a{i}", f"user-{i % 5}", "decision", {"i": i, "txt": 'é ✓ "q"'}, i + 0.5)
        for i in range(40)
    ]
    for record in records:
        pg.append_audit(record)
    links = pg.audit_chain()
    assert len(links) == 40 and len({link.chain for link in links}) > 1
    by_id = {r.record_id: r for r in records}
    for link in links:  # the server computed exactly stores.base.audit_hash
        r = by_id[link.record_id]
        assert link.hash == audit_hash(
            link.prev_hash, r.record_id, r.user_key, r.kind, r.payload, r.ts
        )
    report = verify_audit_chain(pg)
    assert report.ok and report.checked == 40 and len(report.heads) > 1
    # Tampering is seen: edit a payload behind the store's back.
    sql(pg_dsn, pg.schema, "ALTER TABLE audit DISABLE TRIGGER audit_append_only")
    sql(pg_dsn, pg.schema, "UPDATE audit SET payload = '{\"i\":999}' WHERE record_id = 'a7'")
    report = verify_audit_chain(pg)
    assert not report.ok and any("a7 was modified" in p for p in report.problems)


def test_forget_leaves_a_verifiable_chain(pg: PostgresStore) -> None:
    for i in range(6):
        pg.append_audit(AuditRecord(f"a{i}", "u1" if i < 3 else "u2", "decision", {}, 1.0))
    erased = [r.record_id for r in pg.audit("u1")]
    pg.delete_user("u1", keep_audit=False)
    pg.append_audit(AuditRecord("f1", "u1", "forget", {"erased": erased}, 2.0))
    report = verify_audit_chain(pg)
    assert report.ok and report.erased == 3 and report.checked == 4


def _audit_writer(dsn: str, schema: str, worker: int, n: int) -> None:
    with PostgresStore(dsn, schema=schema, max_size=2) as store:
        for i in range(n):
            store.append_audit(
                AuditRecord(f"w{worker}-{i}", f"u{i % 3}", "decision", {"i": i}, 0.0)
            )


@pytest.mark.parametrize("shards", [1, 16])
def test_chain_verifies_with_many_concurrent_writer_processes(
    pg_dsn: str, schema: str, shards: int
) -> None:
    PostgresStore(pg_dsn, schema=schema, audit_shards=shards).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_audit_writer, args=(pg_dsn, schema, w, 60)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with PostgresStore(pg_dsn, schema=schema) as store:
        report = verify_audit_chain(store)
        assert report.ok, report.problems
        assert report.checked == 240 and len(store.audit()) == 240
        assert len(report.heads) == min(shards, 3)  # three users, one chain each at most


# ---------------------------------------------------------------------- processes


def _feedback_writer(dsn: str, schema: str, worker: int, n: int) -> None:
    with PostgresStore(dsn, schema=schema, max_size=2) as store:
        for i in range(n):
            # Every worker also re-delivers the events of worker 0: they must count once.
            for eid in {f"p{worker}-{i}", f"p0-{i}"}:
                store.apply_event(
                    event(eid).__class__(eid, "hot", "thumb", {"w": worker, "i": i}, 0.0),
                    count_update,
                    window=3,
                    now=0.0,
                )


def test_feedback_of_one_user_is_serialized_across_processes(pg_dsn: str, schema: str) -> None:
    PostgresStore(pg_dsn, schema=schema).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_feedback_writer, args=(pg_dsn, schema, w, 50)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with PostgresStore(pg_dsn, schema=schema) as store:
        profile = store.get_profile("hot")
        stored = store.events("hot")
        assert len(stored) == 200 == len({e.event_id for e in stored})
        # No lost update: every insert bumped the count and the version exactly once.
        assert profile is not None and profile.state["count"] == 200 and profile.version == 200


# ---------------------------------------------------------------------- errors


def _all_subclasses(cls: type) -> set[type]:
    out: set[type] = set()
    subs: list[type] = cls.__subclasses__()
    for sub in subs:
        out |= {sub, *_all_subclasses(sub)}
    return out


def test_every_psycopg_exception_is_translated() -> None:
    import psycopg_pool

    classes = {psycopg.Error, *_all_subclasses(psycopg.Error)}
    assert len(classes) > 200
    for cls in classes:
        try:
            exc = cls("boom")
        except TypeError:
            continue
        out = translate(exc, where="PostgreSQL store (schema 'x')", op="get_profile")
        assert isinstance(out, StoreError), cls
        retryable = issubclass(cls, (psycopg.OperationalError, psycopg.InterfaceError))
        assert isinstance(out, StoreUnavailable) == retryable, cls
        assert out.is_retryable == retryable
    exhausted = translate(psycopg_pool.PoolTimeout("x"), where="w", op="decide")
    assert isinstance(exhausted, StoreUnavailable) and "pool is exhausted" in str(exhausted)
    unique = translate(psycopg.errors.UniqueViolation("dup"), where="w", op="op")
    assert type(unique) is StoreError


def test_unreachable_server_is_store_unavailable_without_the_dsn(schema: str) -> None:
    with pytest.raises(StoreUnavailable) as info:
        PostgresStore("postgresql://palm:hunter2@127.0.0.1:1/x", schema=schema, timeout=1.0)
    assert "hunter2" not in str(info.value)


def test_pool_exhausted_is_store_unavailable(pg_dsn: str, schema: str) -> None:
    import threading

    with PostgresStore(pg_dsn, schema=schema, max_size=1, timeout=0.5) as store:
        held = threading.Event()
        release = threading.Event()

        def update(profile: Any, events: Any) -> dict[str, Any]:
            held.set()
            release.wait(10)
            return {}

        worker = threading.Thread(target=lambda: store.apply_event(event("slow"), update, now=0.0))
        worker.start()
        assert held.wait(10)
        try:
            with pytest.raises(StoreUnavailable, match="pool is exhausted"):
                store.get_profile("u2")
        finally:
            release.set()
            worker.join(10)
        assert store.get_profile("u1") is not None  # free again: serves


def test_import_is_lazy() -> None:
    code = (
        "import sys, palm_middleware, palm_middleware.stores; "
        "print('psycopg' in sys.modules); from palm_middleware.stores import PostgresStore; "
        "print('psycopg' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


# ---------------------------------------------------------------------- outage


@pytest.mark.timeout(120)
def test_outage_fails_fast_then_reconnects_by_itself(pg_dsn: str, schema: str) -> None:
    import time

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from tests.tcp_forwarder import TcpForwarder

    params = conninfo_to_dict(pg_dsn)
    fwd = TcpForwarder(str(params.get("host", "127.0.0.1")), int(str(params.get("port", 5432))))
    port = fwd.start()
    dsn = make_conninfo(pg_dsn, host="127.0.0.1", port=port)
    store = PostgresStore(dsn, schema=schema, min_size=2, timeout=2.0, retry_interval=0.5)
    try:
        store.apply_event(event("before"), count_update, now=0.0)
        fwd.stop()
        errors = []
        for _ in range(20):  # every call: StoreUnavailable, none hangs for the pool timeout
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                store.get_profile("u1")
            errors.append((time.monotonic() - t0, str(info.value)))
        assert sum(1 for _, msg in errors if "unreachable" in msg) >= 15  # the breaker answered
        fwd.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                profile = store.get_profile("u1")
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "did not reconnect within 30 s"
                time.sleep(0.1)
        assert profile is not None and profile.state["count"] == 1
        assert store.apply_event(event("after"), count_update, now=1.0)[0]
    finally:
        store.close()
        fwd.close()


def test_sessions_commit_audit_async_and_feedback_sync(pg_dsn: str, schema: str) -> None:
    with PostgresStore(pg_dsn, schema=schema) as store:
        with store._pool.connection() as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
        assert store._sync_local == "SET LOCAL synchronous_commit = on"
        assert store.apply_event(event("e1"), count_update, now=0.0)[0]
    with PostgresStore(pg_dsn, schema=schema, audit_synchronous_commit=True) as store:
        with store._pool.connection() as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert store._sync_local is None
