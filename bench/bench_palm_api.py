"""The real ``Palm`` against the simulator's ``palm`` arm: how far apart, and which setting why.

    nice -n 10 python bench/bench_palm_api.py [--users 100] [--events 50] [--seed 0]
        [--settings bundled anchor beta3]

Per setting (``SETTINGS`` of ``palm_middleware.offline.simulate``) and feedback kind, on the same
members, users and coin flips: no personalization, the reference, the simulator's ``palm`` arm
(as benchmarked: it re-priors every user at each population refit), ``palm`` without re-priors
(``palm_reprior=False``: a user keeps the prior of their first event, as ``Palm`` does), and the
real ``Palm`` through its public API with ``palm``'s learning settings (``palm_api``), then one
of the bundled policy's settings at a time (prior strength 10, ``min_events`` 3, ``max_step``
0.25, its floors/caps/drift on its own portfolio), and all of them (``palm_api_bundled``).
The last column is the paired difference against ``palm_api`` of each user's mean regret over
steps 1..20 (± s.e. over users): what a setting costs early on. Writes ``palm_api.md`` under
``bench/results/simulate/palmapi/``.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from _machine import cpu_model

from palm_middleware.offline.simulate import (
    METHODS,
    SETTINGS,
    SimulationConfig,
    SimulationResult,
    run_api_arm,
    run_simulation,
    with_setting,
)

OUT = Path(__file__).resolve().parent / "results" / "simulate" / "palmapi"
STEPS = (5, 10, 20, 30, 50, 100)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--events", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--settings", nargs="+", default=["bundled", "anchor", "beta3"])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    bad = [s for s in args.settings if s not in SETTINGS]
    if bad:
        ap.error(f"unknown settings {bad}; use {sorted(SETTINGS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    cpu = cpu_model()
    lines = [
        f"machine: {os.cpu_count()} cores, {cpu}; load {os.getloadavg()[0]:.1f} at start",
        f"command: nice -n 10 python bench/bench_palm_api.py --users {args.users} "
        f"--events {args.events} --seed {args.seed} --settings {' '.join(args.settings)}",
        "",
    ]
    steps = [s for s in STEPS if s <= args.events]
    for name in args.settings:
        t0 = time.perf_counter()
        base = with_setting(
            SimulationConfig(n_users=args.users, n_events=args.events, seed=args.seed), name
        )
        rows: list[tuple[str, SimulationResult, str]] = []
        full = run_simulation(replace(base, api=True))
        for m in ("default", "reference", "palm"):
            rows.append((m, full, m))
        # palm's row does not depend on the reference's particle count (its own seeds)
        lean = replace(base, palm_reprior=False, reference_particles=64)
        rows.append(("palm, no re-priors", run_simulation(lean), "palm"))
        rows.append(("palm_api (palm's settings)", full, "palm_api"))
        variants: list[tuple[str, tuple[tuple[str, object], ...]]] = [
            ("palm_api + prior strength 10", (("prior_strength", 10.0),)),
            ("palm_api + min_events 3", (("min_events", 3.0),)),
            ("palm_api + max_step 0.25", (("max_step", 0.25),)),
        ]
        if base.members == "bundled":
            variants.append(("palm_api + floors/caps/drift", (("bounds", True),)))
        variants.append(("palm_api, population off", (("population", False),)))
        for label, over in variants:
            rows.append((label, run_api_arm(replace(base, api_overrides=over)), "palm_api"))
        rows.append(("palm_api_bundled (all of them)", full, "palm_api_bundled"))
        wall = time.perf_counter() - t0
        lines.append(
            f"### {name} ({args.users} users, {args.events} events, β={base.beta:g}, "
            f"flips={base.noise:g}, members {base.members}; {wall:.0f} s wall)"
        )
        lines.append("")
        lines.append(
            "| feedback | arm | "
            + " | ".join(f"t={s}" for s in steps)
            + " | cov90 | Δ mean regret t=1..20 vs palm_api, pts |"
        )
        lines.append("|---" * (len(steps) + 4) + "|")
        for fb in full.regret:
            api = full.per_user[fb][METHODS.index("palm_api")]
            for label, res, m in rows:
                mi = METHODS.index(m)
                reg, se = 100 * res.regret[fb][mi], 100 * res.regret_se[fb][mi]
                cells = " | ".join(f"{reg[s]:.1f} ± {se[s]:.1f}" for s in steps)
                cov = res.coverage[fb][mi, 1:]
                cv = f"{100 * float(np.mean(cov)):.1f}" if np.all(np.isfinite(cov)) else "–"
                d = 100 * (res.per_user[fb][mi, :, 1:21].mean(axis=1) - api[:, 1:21].mean(axis=1))
                delta = f"{d.mean():+.1f} ± {d.std(ddof=1) / np.sqrt(d.size):.1f}"
                lines.append(f"| {fb} | {label} | {cells} | {cv} | {delta} |")
        lines.append("")
        print("\n".join(lines[-(2 * len(rows) + 5) :]), flush=True)
        (args.out / "palm_api.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
