"""Where palm's gap to the reference comes from with noisy users (issue 17, branch noisegap).

    nice -n 10 python bench/bench_noise_diagnosis.py [--users 100] [--events 21] [--seeds 3]
        [--seed 0] [--settings beta3 noise25 anchor] [--variants base true_both ref_clone]

Runs ``palm`` as it is (``base``) and given parts of the truth, all on the same users, members
and coin flips (same seeds), each pooled over ``--seeds`` replicates:

* ``true_both``: the true β and flip rate, fixed (nothing learned about the noise);
* ``true_lapse`` / ``true_beta``: only that one given, the other learned as usual;
* ``p2000``: 2000 particles instead of 1024 (the reference's count);
* ``pop_off``: no population prior refit (the default Dirichlet(1), which is the true one
  unless the setting changes ``user_alpha``); ``true_pop_off``: that and the true noise;
* ``ref_clone``: a second copy of the reference (true noise, no population, 2000 particles;
  its own particle and Thompson seeds): the ratio two identical methods score against each
  other, i.e. the measurement's own noise floor.

Prints palm/reference at t = 20 with the 90% bootstrap interval over users, palm's t = 20
regret and the learned noise; ``--out`` writes the rows as JSON. The t = 20 ratio does not
depend on ``--events`` in distribution (only the coin-flip draws change with it).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from palm_middleware.offline.simulate import (
    METHODS,
    SimulationConfig,
    pool,
    run_simulation,
    targets,
    with_setting,
)

VARIANTS = (
    "base",
    "true_both",
    "true_lapse",
    "true_beta",
    "p2000",
    "pop_off",
    "true_pop_off",
    "ref_clone",
)


def variant(c: SimulationConfig, name: str) -> SimulationConfig:
    """``c`` with palm changed as the named diagnostic variant says (see the module docstring)."""
    told: dict[str, object] = {"palm_beta": c.beta, "palm_lapse": c.noise}
    changes: dict[str, dict[str, object]] = {
        "base": {},
        "true_both": told,
        "true_lapse": {"palm_lapse": c.noise},
        "true_beta": {"palm_beta": c.beta},
        "p2000": {"n_particles": 2000},
        "pop_off": {"population": False},
        "true_pop_off": {**told, "population": False},
        "ref_clone": {**told, "population": False, "n_particles": c.reference_particles},
    }
    return replace(c, **changes[name])  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--events", type=int, default=21)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--settings", nargs="+", default=["beta3", "noise25", "anchor"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    pm, ref = METHODS.index("palm"), METHODS.index("reference")
    t20 = min(20, args.events)
    rows: list[dict[str, object]] = []
    for name in args.settings:
        for v in args.variants:
            t0 = time.process_time()
            runs = [
                run_simulation(
                    variant(
                        with_setting(
                            SimulationConfig(n_users=args.users, n_events=args.events, seed=s),
                            name,
                        ),
                        v,
                    )
                )
                for s in range(args.seed, args.seed + args.seeds)
            ]
            res = pool(runs)
            for fb in res.regret:
                tg = targets(res, fb)
                beta, lapse = res.noise_fit[fb]
                row: dict[str, object] = {
                    "setting": name,
                    "variant": v,
                    "feedback": fb,
                    "ratio": tg["t20_vs_reference"],
                    "lo": tg["t20_ratio_lo"],
                    "hi": tg["t20_ratio_hi"],
                    "palm20": 100 * float(res.regret[fb][pm, t20]),
                    "ref20": 100 * float(res.regret[fb][ref, t20]),
                    "coverage": tg["coverage"],
                    "beta": beta,
                    "lapse": lapse,
                    "cpu_s": time.process_time() - t0,
                }
                rows.append(row)
                print(
                    f"{name:8s} {v:12s} {fb:8s} palm/ref {tg['t20_vs_reference']:.2f} "
                    f"[{tg['t20_ratio_lo']:.2f}-{tg['t20_ratio_hi']:.2f}] "
                    f"palm {row['palm20']:.1f} ref {row['ref20']:.1f} "
                    f"cov {tg['coverage']:.2f} β {beta:.1f} lapse {lapse:.2f}",
                    flush=True,
                )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
