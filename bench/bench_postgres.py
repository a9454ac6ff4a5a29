"""PostgresStore vs SQLiteStore: decision overhead at 100k users, audit chain write cost
(one chain vs 16 shards, concurrent writer processes) and feedback throughput (one hot user,
and spread over 10k users), all in one run on this machine.

    PALM_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test python bench/bench_postgres.py

Every schema it creates (``palm_bench_*``) is dropped at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _machine import machine

from palm_middleware import (
    Pairwise,
    Palm,
    SQLiteStore,
    StoreUnavailable,
    load_policy,
    load_portfolio,
)
from palm_middleware.cli._common import bundled
from palm_middleware.preferences.events import Observation
from palm_middleware.preferences.model import PreferenceModel
from palm_middleware.stores.base import AuditRecord, Store
from palm_middleware.stores.postgres import PostgresStore

DSN = os.environ.get("PALM_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
PREFIX = f"palm_bench_{secrets.token_hex(3)}_"
_ERRORS: list[int] = []


def pct(xs: list[float]) -> tuple[float, float]:
    a = np.array(xs) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def states(portfolio: Any, policy: Any) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    out = []
    r = portfolio.rewards
    for k in range(64):
        obs = [
            Observation.compare(r[i] - r[j], 1)
            for i, j in rng.integers(0, len(r), (8, 2))
            if i != j
        ]
        m = PreferenceModel(
            prior_mean=policy.default.values, prior_strength=10, n_particles=512, random_state=k
        ).fit(obs)
        out.append({"posterior": m.summary().to_dict()})
    return out


def settle(schema: str) -> None:
    """Steady state after a bulk load: vacuum/analyze, checkpoint, let the I/O drain."""
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'VACUUM ANALYZE "{schema}".profiles'.encode())
        conn.execute("CHECKPOINT")
    time.sleep(5)


def decision_overhead(n_users: int, n_requests: int) -> None:
    """SQLite and PostgresStore interleaved (same machine state), then PostgresStore with
    synchronous audit commits on its own (its fsyncs would slow the other's WAL writes)."""
    portfolio = load_portfolio(bundled("portfolio.yaml"))
    policy = load_policy(bundled("policy.yaml"))
    st = states(portfolio, policy)
    tmp = tempfile.TemporaryDirectory()
    rng = np.random.default_rng(1)
    users = [f"u{int(i)}" for i in rng.integers(0, n_users, n_requests)]
    msgs = [{"role": "user", "content": "How do I boil an egg?"}]
    rows: list[tuple[str, list[float], list[float]]] = []
    passes: list[dict[str, Callable[[], Store]]] = [
        {
            "SQLite": lambda: SQLiteStore(Path(tmp.name) / "bench.db"),
            "Postgres (default: audit commit async)": lambda: PostgresStore(
                DSN, schema=PREFIX + "dec"
            ),
        },
        {
            "Postgres, audit commit sync (separate pass)": lambda: PostgresStore(
                DSN, schema=PREFIX + "dec_sync", audit_synchronous_commit=True
            )
        },
    ]
    for makers in passes:
        palms = {
            name: Palm(portfolio, policy, make(), salt="bench") for name, make in makers.items()
        }
        for name, palm in palms.items():
            t0 = time.perf_counter()
            palm.store.bulk_put_profiles(  # type: ignore[attr-defined]
                ((palm.user_key(f"u{i}"), st[i % 64]) for i in range(n_users)), now=0.0
            )
            print(f"  built {n_users} profiles in {name} in {time.perf_counter() - t0:.1f} s")
            if isinstance(palm.store, PostgresStore):
                settle(palm.store.schema)
            for u in users[:200]:
                palm.decide(u)
        dec: dict[str, list[float]] = {n: [] for n in palms}
        raw: dict[str, list[float]] = {n: [] for n in palms}
        for u in users:  # interleaved: every store sees the same machine state
            for name, palm in palms.items():
                k = palm.user_key(u)
                t = time.perf_counter()
                palm.decide(u, msgs)
                dec[name].append(time.perf_counter() - t)
                t = time.perf_counter()
                palm.store.get_profile(k)
                palm.store.append_audit(
                    AuditRecord(uuid.uuid4().hex, k, "decision", {"m": "x"}, 0.0)
                )
                raw[name].append(time.perf_counter() - t)
        rows += [(name, dec[name], raw[name]) for name in palms]
        for palm in palms.values():
            palm.store.close()
    print(f"\n## decision overhead, {n_users} profiles, {n_requests} decisions each (ms)")
    print("| store | decide p50 | decide p99 | store only p50 | store only p99 |")
    print("|---|---|---|---|---|")
    for name, d, r in rows:
        (d50, d99), (r50, r99) = pct(d), pct(r)
        print(f"| {name} | {d50:.3f} | {d99:.3f} | {r50:.3f} | {r99:.3f} |")
    tmp.cleanup()


def _audit_worker(schema: str, w: int, n: int, sync: bool, q: Any) -> None:
    times = []
    with PostgresStore(DSN, schema=schema, max_size=1, audit_synchronous_commit=sync) as store:
        for i in range(n):
            t = time.perf_counter()
            store.append_audit(
                AuditRecord(f"{w}-{i}", f"user{(w * 7919 + i) % 1000}", "d", {}, 0.0)
            )
            times.append(time.perf_counter() - t)
    q.put(times)


def _run_procs(
    target: Callable[..., None], args: list[tuple[Any, ...]]
) -> tuple[list[float], float]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, q)) for a in args]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    times: list[float] = []
    for _ in procs:
        got = q.get(timeout=900)
        if isinstance(got, tuple):
            times += got[0]
            _ERRORS.append(got[1])
        else:
            times += got
    for p in procs:
        p.join()
    return times, time.perf_counter() - t0


def audit_chain(n_procs: int, n_each: int) -> None:
    from palm_middleware.audit import verify_audit_chain

    print(f"\n## audit chain: {n_procs} writer processes x {n_each} records (append_audit)")
    print("| chains | records/s | p50 ms | p99 ms | verified |")
    print("|---|---|---|---|---|")
    for sync in (False, True):
        for shards in (1, 16):
            schema = f"{PREFIX}audit_{shards}_{int(sync)}"
            PostgresStore(DSN, schema=schema, audit_shards=shards).close()
            times, wall = _run_procs(
                _audit_worker, [(schema, w, n_each, sync) for w in range(n_procs)]
            )
            with PostgresStore(DSN, schema=schema) as store:
                ok = verify_audit_chain(store).ok
            p50, p99 = pct(times)
            label = f"{shards}{', commit sync' if sync else ''}"
            print(f"| {label} | {len(times) / wall:.0f} | {p50:.2f} | {p99:.2f} | {ok} |")


def _feedback_worker(schema: str, w: int, n: int, n_users: int, q: Any) -> None:
    """``schema``: a Postgres schema, or ``sqlite:<path>`` for the SQLite baseline."""
    portfolio = load_portfolio(bundled("portfolio.yaml"))
    policy = load_policy(bundled("policy.yaml"))
    ids = portfolio.ids
    rng = np.random.default_rng(w)
    times = []
    errors = 0
    store: Any = (
        SQLiteStore(schema[len("sqlite:") :])
        if schema.startswith("sqlite:")
        else PostgresStore(DSN, schema=schema, max_size=1)
    )
    with store:
        palm = Palm(portfolio, policy, store, salt="bench")
        for i in range(n):
            a, b = rng.choice(len(ids), 2, replace=False)
            user = f"u{int(rng.integers(0, n_users))}"
            event = Pairwise(winner=ids[a], loser=ids[b], event_id=f"{w}-{i}")
            t = time.perf_counter()
            try:
                palm.record_feedback(user, event)
            except StoreUnavailable:  # lock_timeout: what a client would get as a 503
                errors += 1
                continue
            times.append(time.perf_counter() - t)
    q.put((times, errors))


def feedback(n_procs: int, n_each: int) -> None:
    print(f"\n## feedback throughput: {n_procs} processes x {n_each} record_feedback")
    print("| store, users | events/s | p50 ms | p99 ms | errors (lock timeout) |")
    print("|---|---|---|---|---|")
    tmp = tempfile.TemporaryDirectory()
    for kind, n_users in (("SQLite", 1), ("Postgres", 1), ("SQLite", 10_000), ("Postgres", 10_000)):
        if kind == "SQLite":
            schema = f"sqlite:{tmp.name}/fb_{n_users}.db"
            SQLiteStore(schema[len("sqlite:") :]).close()
        else:
            schema = f"{PREFIX}fb_{n_users}"
            PostgresStore(DSN, schema=schema).close()
        _ERRORS.clear()
        times, wall = _run_procs(
            _feedback_worker, [(schema, w, n_each, n_users) for w in range(n_procs)]
        )
        p50, p99 = pct(times)
        label = f"{kind}, " + ("1 (hot user)" if n_users == 1 else f"{n_users} (spread)")
        print(f"| {label} | {len(times) / wall:.1f} | {p50:.1f} | {p99:.1f} | {sum(_ERRORS)} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument(
        "--parts", nargs="+", default=["decision", "audit", "feedback"], help="what to run"
    )
    args = ap.parse_args()
    print(machine())
    try:
        if "decision" in args.parts:
            decision_overhead(args.users, args.requests)
        if "audit" in args.parts:
            audit_chain(args.procs, 500)
        if "feedback" in args.parts:
            feedback(2, 100)
    finally:
        import psycopg

        with psycopg.connect(DSN, autocommit=True) as conn:
            for (name,) in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (PREFIX,)
            ).fetchall():
                conn.execute(f'DROP SCHEMA "{name}" CASCADE'.encode())


if __name__ == "__main__":
    main()
