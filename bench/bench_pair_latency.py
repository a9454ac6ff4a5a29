"""What ``Palm.compare_candidates`` costs per call, this tree against a checkout of another.

    nice -n 10 python bench/bench_pair_latency.py [--baseline DIR] [--users 20] [--calls 400]

On an ``SQLiteStore`` file, the bundled portfolio and policy: ``--users`` users each get a
decision and 6 pairwise answers, then round robin each user gets a decision (Thompson) and a
``compare_candidates`` call, timed (wall ms): without ``served`` (this tree: the member of the
user's latest decision, read back from the audit log; before: the posterior mean's member) and,
where the revision takes it, with ``served`` given. ``--baseline``: the same in a child process
per revision, alternating the order round by round, so both see the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine


def measure(users: int, calls: int) -> dict[str, list[float]]:
    from palm_middleware import Pairwise, Palm, SQLiteStore, load_policy, load_portfolio
    from palm_middleware.data import bundled

    portfolio = load_portfolio(bundled("portfolio.yaml"))
    t = [1.7e9]

    def clock() -> float:
        t[0] += 30.0
        return t[0]

    out: dict[str, list[float]] = {"default": [], "served": []}
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "palm.db")
        palm = Palm(
            portfolio,
            load_policy(bundled("policy.yaml")),
            store,
            clock=clock,
            random_state=0,
            embedder=None,
        )
        rng = np.random.default_rng(0)
        ids = portfolio.ids
        for u in range(users):
            palm.decide(f"u{u}")
            for _ in range(6):
                i, j = rng.choice(len(ids), 2, replace=False)
                palm.record_feedback(f"u{u}", Pairwise(winner=ids[i], loser=ids[j]))
        takes_served = "metadata" in palm.compare_candidates.__code__.co_varnames
        for k in range(calls):
            user = f"u{k % users}"
            d = palm.decide(user)
            t0 = time.perf_counter()
            palm.compare_candidates(user)
            out["default"].append(time.perf_counter() - t0)
            if takes_served:
                t0 = time.perf_counter()
                palm.compare_candidates(user, served=d.member)
                out["served"].append(time.perf_counter() - t0)
        store.close()
    return out


def pct(v: list[float]) -> str:
    if not v:
        return "-"
    a = 1e3 * np.asarray(v[10:])
    return f"{np.percentile(a, 50):.2f} / {np.percentile(a, 99):.2f} / {a.max():.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", help="a checkout of another revision")
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.users, args.calls)))
        return
    print(machine())
    here = str(Path(__file__).resolve().parents[1])
    trees = {"this tree": here, **({"baseline": args.baseline} if args.baseline else {})}
    got: dict[str, dict[str, list[float]]] = {n: {"default": [], "served": []} for n in trees}
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(trees)[::-1]
        for name in order:
            env = {**os.environ, "PYTHONPATH": trees[name]}
            cmd = [sys.executable, __file__, "--child", "--users", str(args.users)]
            res = subprocess.run(
                [*cmd, "--calls", str(args.calls)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                cwd=trees[name],
            )
            for key, v in json.loads(res.stdout.strip().splitlines()[-1]).items():
                got[name][key] += v
    print(f"\n{args.rounds} rounds x {args.calls} calls, {args.users} users, SQLite file, wall ms")
    print("| revision | (user) p50 / p99 / max | (user, served=) p50 / p99 / max |")
    print("|---|---|---|")
    for name in trees:
        print(f"| {name} | {pct(got[name]['default'])} | {pct(got[name]['served'])} |")


if __name__ == "__main__":
    main()
