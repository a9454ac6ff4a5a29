"""What A/B pairs cost users, with and without the bound on the second member (issue 17, item 4).

    nice -n 10 python bench/bench_pair_cost.py [--users 50] [--events 50] [--seeds 2]
        [--settings anchor k10 peaked beta3] [--pair-cost 0.4] [--explore-cost 0.2]

Runs the simulator (``palm_middleware.offline.simulate``) on pairwise feedback three times per
setting, on the same members, users and coin flips: ``before`` (``bound_pairs=False``: the
second member only traded off by information-directed sampling); ``bounded`` (it may lose at
most ``pair_cost`` (default 40%) of the best value under the posterior mean, as
``Palm.compare_candidates``), where a step with no member within the bound asks no question
(``none``) or a thumb on the served member (``thumb``). Prints, for ``palm`` and the
well-specified ``reference``: the regret of what users are shown (mean over a pair), the regret
of a shown pair's costlier member (mean and 95th percentile over pairs), the share of steps
with an A/B question, and the regret of the mean route at t = 5, 10, 20, 50.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
from _machine import machine

from palm_middleware.offline.simulate import (
    METHODS,
    SETTINGS,
    SimulationConfig,
    run_simulation,
    with_setting,
)

STEPS = (5, 10, 20, 50)
VARIANTS: dict[str, dict[str, object]] = {
    "before": {"bound_pairs": False},
    "bounded, none": {"bound_pairs": True, "pair_fallback": "none"},
    "bounded, thumb": {"bound_pairs": True, "pair_fallback": "thumb"},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--events", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, help="independent replicates, pooled")
    ap.add_argument("--explore-cost", type=float, default=0.2, help="Thompson draws' bound")
    ap.add_argument("--pair-cost", type=float, default=0.4, help="pairs' second member's bound")
    ap.add_argument(
        "--settings", nargs="+", default=["anchor", "k10", "peaked", "beta3"], choices=SETTINGS
    )
    args = ap.parse_args()
    print(machine())
    print(
        f"{args.users} users x {args.seeds} seeds, {args.events} events, explore_cost "
        f"{args.explore_cost:g}, pair_cost {args.pair_cost:g}"
    )
    steps = [s for s in STEPS if s <= args.events]
    head = " ".join(f"t={s:<3}" for s in steps)
    print(
        f"\n| setting | method | pairs | shown % | costlier member % (mean / p95) | asked % "
        f"| mean-route regret % {head} |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.settings:
        rows: dict[tuple[str, str], list[np.ndarray]] = {}
        for bound, extra in VARIANTS.items():
            t0 = time.perf_counter()
            shown, worst, asked, regret = [], [], [], []
            for k in range(args.seeds):
                cfg = with_setting(
                    SimulationConfig(
                        n_users=args.users,
                        n_events=args.events,
                        feedback=("pairwise",),
                        seed=args.seed + k,
                        explore_cost=args.explore_cost,
                        pair_cost=args.pair_cost,
                        **extra,  # type: ignore[arg-type]
                    ),
                    name,
                )
                res = run_simulation(replace(cfg))
                for mi in (METHODS.index("reference"), METHODS.index("palm")):
                    key = (METHODS[mi], bound)
                    rows.setdefault(key, [np.zeros(0)] * 4)
                    shown = res.shown["pairwise"][mi, :-1]
                    worst = res.pair_max["pairwise"][mi][:, :-1].ravel()
                    asked = res.asked["pairwise"][mi, :-1]
                    regret = res.regret["pairwise"][mi]
                    old = rows[key]
                    rows[key] = [
                        np.concatenate([old[0], shown]),
                        np.concatenate([old[1], worst[~np.isnan(worst)]]),
                        np.concatenate([old[2], asked]),
                        regret if old[3].size == 0 else (old[3] + regret),
                    ]
            took = time.perf_counter() - t0
            for method in ("reference", "palm"):
                sh, wo, ak, rg = rows[(method, bound)]
                rg = rg / args.seeds
                curve = " ".join(f"{100 * rg[s]:5.1f}" for s in steps)
                print(
                    f"| {name} | {method} | {bound} "
                    f"| {100 * sh.mean():.1f} | {100 * wo.mean():.1f} / "
                    f"{100 * np.percentile(wo, 95):.1f} | {100 * ak.mean():.0f} | {curve} |"
                )
            print(f"<!-- {name} bound={bound}: {took:.0f} s -->")


if __name__ == "__main__":
    main()
