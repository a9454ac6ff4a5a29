"""Decision overhead: infer (read profile) + clamp + route + audit write, in process.

Baselines measured in the same run: the bare store round trip (get_profile + append_audit) that
any persistent design pays, and clamp + route alone (no I/O).

    python bench/bench_decision.py [--sizes 1000 100000 1000000] [--requests 3000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from _machine import machine

from palm_middleware import Palm, SQLiteStore, load_policy, load_portfolio
from palm_middleware.data import bundled
from palm_middleware.preferences.model import PreferenceModel
from palm_middleware.stores.base import AuditRecord


def percentiles(xs: list[float]) -> tuple[float, float]:
    a = np.array(xs) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    portfolio = load_portfolio(bundled("portfolio.yaml"))
    policy = load_policy(bundled("policy.yaml"))
    # A realistic stored state: the summary of a posterior after a few events.
    rng = np.random.default_rng(0)
    states = []
    for k in range(64):
        from palm_middleware.preferences.events import Observation

        r = portfolio.rewards
        obs = [
            Observation.compare(r[i] - r[j], 1)
            for i, j in rng.integers(0, len(r), (8, 2))
            if i != j
        ]
        m = PreferenceModel(
            prior_mean=policy.default.values, prior_strength=10, n_particles=512, random_state=k
        ).fit(obs)
        states.append({"posterior": m.summary().to_dict()})
    print(machine())
    print(
        f"{'profiles':>10} {'decide p50':>11} {'p99':>7} | {'store-only p50':>15} {'p99':>7} | "
        f"{'clamp+route p50':>16} {'p99':>7}   (ms)"
    )
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store = SQLiteStore(Path(tmp) / "bench.db")
            palm = Palm(portfolio, policy, store, salt="bench")
            t0 = time.perf_counter()
            store.bulk_put_profiles(
                ((palm.user_key(f"u{i}"), states[i % 64]) for i in range(n)), now=0.0
            )
            build = time.perf_counter() - t0
            users = [f"u{int(i)}" for i in rng.integers(0, n, args.requests)]
            keys = [palm.user_key(u) for u in users]
            for u in users[:200]:  # warm up
                palm.decide(u)
            dec, raw, core = [], [], []
            msgs = [{"role": "user", "content": "How do I boil an egg?"}]
            for u, k in zip(users, keys):
                t = time.perf_counter()
                palm.decide(u, msgs)
                dec.append(time.perf_counter() - t)
                t = time.perf_counter()
                store.get_profile(k)
                store.append_audit(AuditRecord(uuid.uuid4().hex, k, "decision", {"m": "x"}, 0.0))
                raw.append(time.perf_counter() - t)
                w = np.asarray(states[0]["posterior"]["mean"])
                t = time.perf_counter()
                c = policy.clamp(w / w.sum(), evidence=8.0)
                palm.router.route(c.weights)
                core.append(time.perf_counter() - t)
            (d50, d99), (r50, r99), (c50, c99) = (
                percentiles(dec),
                percentiles(raw),
                percentiles(core),
            )
            print(
                f"{n:>10} {d50:>11.3f} {d99:>7.3f} | {r50:>15.3f} {r99:>7.3f} | {c50:>16.3f} "
                f"{c99:>7.3f}   (built in {build:.1f} s; decide/store p50 = {d50 / r50:.1f}x)",
                flush=True,
            )
            store.close()


def feedback_cost(n_events: int = 300) -> None:
    """record_feedback latency as one user's history grows (the posterior is rebuilt each time)."""
    from palm_middleware import Pairwise

    portfolio = load_portfolio(bundled("portfolio.yaml"))
    policy = load_policy(bundled("policy.yaml"))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "fb.db")
        palm = Palm(portfolio, policy, store, salt="bench")
        ids = portfolio.ids
        times = []
        for _ in range(n_events):
            a, b = rng.choice(len(ids), 2, replace=False)
            t = time.perf_counter()
            palm.record_feedback("u", Pairwise(winner=ids[a], loser=ids[b]))
            times.append(time.perf_counter() - t)
        store.close()
    ms = np.array(times) * 1e3
    print(
        f"record_feedback p50 (ms) after 1-10 events {np.median(ms[:10]):.1f}, "
        f"50-100 {np.median(ms[50:100]):.1f}, {n_events - 50}-{n_events} "
        f"{np.median(ms[-50:]):.1f}; max {ms.max():.1f}"
    )


if __name__ == "__main__":
    main()
    feedback_cost()
