"""The Palm-API arms of two source trees, user by user (a library change measured on ``Palm``).

    # in each tree (PYTHONPATH pointing at it):
    nice -n 10 python bench/compare_palm_api.py save OUT.npz [--users 100] [--events 50]
        [--settings bundled anchor]
    python bench/compare_palm_api.py show BEFORE.npz AFTER.npz

``save`` runs both Palm-API arms (``run_api_arm``: same members, users and coin flips in every
tree) and keeps each user's regret, the coverage and the feedback times. ``show`` prints a
Markdown table: regret at t = 5/10/20/50 before and after, the paired difference of each user's
mean regret over steps 1..20 (± s.e. over users), coverage and ``record_feedback`` times.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from palm_middleware.offline.simulate import (
    API_METHODS,
    METHODS,
    SETTINGS,
    SimulationConfig,
    run_api_arm,
    with_setting,
)


def save(out: Path, users: int, events: int, settings: list[str]) -> None:
    arrays: dict[str, np.ndarray] = {}
    for name in settings:
        base = with_setting(SimulationConfig(n_users=users, n_events=events), name)
        for m in API_METHODS:
            res = run_api_arm(base, m)
            for fb in res.regret:
                key = f"{name}|{m}|{fb}"
                arrays[f"{key}|regret"] = res.per_user[fb][METHODS.index(m)]
                arrays[f"{key}|cover"] = res.coverage[fb][METHODS.index(m)]
                arrays[f"{key}|ms"] = res.update_ms[fb][m]
    np.savez(out, **arrays)  # type: ignore[arg-type]
    print(f"saved {out}")


def show(before: Path, after: Path) -> None:
    a, b = np.load(before), np.load(after)
    keys = sorted({k.rsplit("|", 1)[0] for k in a.files})
    print(
        "| setting | arm | feedback | t=5 / 10 / 20 / 50 before | after | Δ mean regret "
        "t=1..20, pts | cov90 before → after | feedback ms mean / p99 before → after |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for k in keys:
        ra, rb = 100 * a[f"{k}|regret"], 100 * b[f"{k}|regret"]
        steps = [s for s in (5, 10, 20, 50) if s < ra.shape[1]]

        def at(r: np.ndarray, steps: list[int] = steps) -> str:
            return " / ".join(f"{r[:, s].mean():.1f}" for s in steps)

        d = rb[:, 1:21].mean(axis=1) - ra[:, 1:21].mean(axis=1)
        ca, cb = 100 * a[f"{k}|cover"][1:].mean(), 100 * b[f"{k}|cover"][1:].mean()
        ma, mb = a[f"{k}|ms"], b[f"{k}|ms"]
        setting, arm, fb = k.split("|")
        print(
            f"| {setting} | {arm} | {fb} | {at(ra)} | {at(rb)} | "
            f"{d.mean():+.1f} ± {d.std(ddof=1) / np.sqrt(d.size):.1f} | {ca:.1f} → {cb:.1f} | "
            f"{ma.mean():.2f} / {np.percentile(ma, 99):.1f} → "
            f"{mb.mean():.2f} / {np.percentile(mb, 99):.1f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save")
    s.add_argument("out", type=Path)
    s.add_argument("--users", type=int, default=100)
    s.add_argument("--events", type=int, default=50)
    s.add_argument("--settings", nargs="+", default=["bundled", "anchor"], choices=list(SETTINGS))
    sh = sub.add_parser("show")
    sh.add_argument("before", type=Path)
    sh.add_argument("after", type=Path)
    args = ap.parse_args()
    if args.cmd == "save":
        save(args.out, args.users, args.events, args.settings)
    else:
        show(args.before, args.after)


if __name__ == "__main__":
    main()
