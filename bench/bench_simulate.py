"""Issue 17's "Must show": every setting next to the anchor, all baselines in the same run.

    nice -n 10 python bench/bench_simulate.py [--users 50] [--events 100] [--settings anchor beta3]
        [--seeds 3] [--api]

``--seeds N`` runs N independent replicates (seeds ``seed`` .. ``seed + N - 1``: each its own
members, users, population and coin flips) and pools their users, so the targets' intervals
rest on N × users users and average over portfolios too. ``--api`` adds the Palm-API arms: the
real ``Palm`` driven through its public API (``palm_api``: the learning settings of ``palm``;
``palm_api_bundled``: the bundled policy's prior strength, ``min_events`` and ``max_step``).

Per setting (see ``SETTINGS`` in ``palm_middleware.offline.simulate``) and feedback kind: regret
of the mean route at t = 5, 10, 20, 50, 100 for no personalization, the per-member Beta bandit,
the well-specified 2000-particle reference and the project (``palm``), the regret of what users
are shown, 90% coverage and update times, and the issue's targets met or missed. Writes
``<setting>.csv``/``<setting>.png`` and ``summary.md`` under ``bench/results/simulate/``.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np
from _machine import cpu_model

from palm_middleware.offline.simulate import (
    API_METHODS,
    METHODS,
    SETTINGS,
    SimulationConfig,
    plot_result,
    pool,
    run_simulation,
    targets,
    with_setting,
)

OUT = Path(__file__).resolve().parent / "results" / "simulate"
STEPS = (5, 10, 20, 50, 100)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--events", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, help="independent replicates, pooled")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--summary", default="summary.md", help="file name of the summary")
    ap.add_argument("--api", action="store_true", help="also run the Palm-API arms")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cpu = cpu_model()
    lines = [
        f"machine: {os.cpu_count()} cores, {cpu} (shared with other jobs: timings are loaded)",
        f"command: nice -n 10 python bench/bench_simulate.py --users {args.users} "
        f"--events {args.events} --seed {args.seed} --seeds {args.seeds} "
        f"--settings {' '.join(args.settings)}" + (" --api" if args.api else ""),
        "",
    ]
    t_all = time.process_time()
    for name in args.settings:
        t0, c0 = time.perf_counter(), time.process_time()
        reps = [
            run_simulation(
                with_setting(
                    SimulationConfig(
                        n_users=args.users, n_events=args.events, seed=seed, api=args.api
                    ),
                    name,
                ),
                progress=True,
            )
            for seed in range(args.seed, args.seed + args.seeds)
        ]
        res = pool(reps)
        cfg = res.config
        wall, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        rows = res.rows()
        with open(args.out / f"{name}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        plot_result(res, args.out / f"{name}.png", title=name)
        start = len(lines)
        lines.append(
            f"### {name} ({_describe(cfg, args.seeds)}; {wall:.0f} s wall, {cpu_s:.0f} s CPU)"
        )
        lines.append("")
        steps = [s for s in STEPS if s <= args.events]
        lines.append(
            "| feedback | method | "
            + " | ".join(f"t={s}" for s in steps)
            + " | shown | cov90 | update ms mean / p99 |"
        )
        lines.append("|---" * (len(steps) + 5) + "|")
        for fb in res.regret:
            reg, se = 100 * res.regret[fb], 100 * res.regret_se[fb]
            for mi, m in enumerate(METHODS):
                if m == "oracle" or not res.ran(fb, m):
                    continue
                cells = " | ".join(f"{reg[mi, s]:.1f} ± {se[mi, s]:.1f}" for s in steps)
                shown = 100 * float(np.nanmean(res.shown[fb][mi, :-1]))
                cov = res.coverage[fb][mi, 1:]
                cv = f"{100 * float(np.mean(cov)):.1f}" if np.all(np.isfinite(cov)) else "–"
                mean_ms, p99 = res.update_stats(fb, m)
                upd = "–" if np.isnan(mean_ms) else f"{mean_ms:.3f} / {p99:.3f}"
                lines.append(f"| {fb} | {m} | {cells} | {shown:.1f} | {cv} | {upd} |")
        lines.append("")
        for fb, m in [(fb, m) for fb in res.regret for m in ("palm", *API_METHODS)]:
            if not res.ran(fb, m):
                continue
            tg = targets(res, fb, m)
            fit = res.api_fit.get(fb, {}).get(m)
            bt, lp = res.noise_fit[fb] if fit is None else (fit.beta, fit.lapse)
            alpha = res.prior_fit.get(fb) if fit is None else fit.alpha
            each = (
                " (per replicate: "
                + ", ".join(f"{targets(r, fb, m)['t20_vs_reference']:.2f}" for r in reps)
                + ")"
                if len(reps) > 1
                else ""
            )
            lines.append(
                f"- {fb}, {m}: t=20 {m}/reference = {tg['t20_vs_reference']:.2f} "
                f"[90% CI {tg['t20_ratio_lo']:.2f}–{tg['t20_ratio_hi']:.2f}]{each} "
                f"({'met' if tg['t20_ok'] else 'MISSED'}); worst excess over no "
                f"personalization at t>=5 = {100 * float(tg['max_excess_over_default']):+.1f} "
                f"± {100 * float(tg['excess_se']):.1f} pts at t={int(tg['worst_step'])} "
                f"({'met' if tg['never_worse_ok'] else 'MISSED'}); coverage "
                f"{100 * float(tg['coverage']):.1f}% ({'met' if tg['coverage_ok'] else 'MISSED'}); "
                f"learned β ≈ {bt:.1f}, lapse ≈ {lp:.2f}; prior α ≈ "
                f"{np.array2string(alpha, precision=2) if alpha is not None else '–'}"
            )
        lines.append("")
        print("\n".join(lines[start:]), flush=True)
        (args.out / args.summary).write_text("\n".join(lines) + "\n")
    lines.append(f"total CPU {time.process_time() - t_all:.0f} s")
    (args.out / args.summary).write_text("\n".join(lines) + "\n")
    print(lines[-1])


def _describe(c: SimulationConfig, seeds: int = 1) -> str:
    shift = ", weights re-drawn at t=T/2, half-life 20 events" if c.shift else ""
    return (
        f"d={c.n_traits}, K={c.n_members}, {c.n_users} users"
        + (f" ({seeds} replicates)" if seeds > 1 else "")
        + f", β={c.beta:g}, "
        f"flips={c.noise:g}, users ~ Dirichlet({c.user_alpha:g}){shift}"
    )


if __name__ == "__main__":
    main()
