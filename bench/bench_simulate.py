"""Convergence of weight inference: regret after N events, averaged over several seeds.

    python bench/bench_simulate.py [--seeds 0 1 2 3 4] [--users 200]

Each seed draws its own members (noisy ℓ2 front) and users (Dirichlet(1)); the table gives the
mean over seeds of the mean regret (% of the oracle value) after 20 events, and the spread.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from palm_middleware.offline.simulate import METHODS, SimulationConfig, run_simulation


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--events", type=int, default=20)
    args = ap.parse_args()
    t0 = time.perf_counter()
    results = [
        run_simulation(SimulationConfig(n_users=args.users, n_events=args.events, seed=s))
        for s in args.seeds
    ]
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in open("/proc/cpuinfo")
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    print(f"machine: {os.cpu_count()} cores, {cpu}; {time.perf_counter() - t0:.0f} s")
    print(
        f"d=4 traits, 6 members, {args.users} users x {len(args.seeds)} seeds, beta=10, "
        f"10% label noise; regret after {args.events} events, % of oracle value "
        "(mean over seeds ± s.d. across seeds)\n"
    )
    print("| method | pairwise | thumbs |")
    print("|---|---|---|")
    for mi, m in enumerate(METHODS):
        cells = []
        for fb in ("pairwise", "thumbs"):
            vals = np.array([100 * r.regret[fb][mi, -1] for r in results])
            cells.append(f"{vals.mean():.2f} ± {vals.std(ddof=1):.2f}")
        print(f"| {m} | {cells[0]} | {cells[1]} |")
    for fb in ("pairwise", "thumbs"):
        mi = METHODS.index("preference_model")
        cov = np.mean([r.coverage[fb][mi, -1] for r in results])
        err = np.mean([r.weight_error[fb][mi, -1] for r in results])
        print(
            f"\n{fb}: preference_model 90% credible intervals cover the true weight "
            f"{100 * cov:.1f}% of the time; weight error (total variation) {err:.3f}"
        )


if __name__ == "__main__":
    main()
