"""``palm simulate``: how fast routing converges for simulated users, against baselines."""

from __future__ import annotations

import argparse
import csv
import itertools
import tempfile
from pathlib import Path

import numpy as np

from ._common import add_deployment_options


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``simulate`` command."""
    p = sub.add_parser("simulate", help="simulate users with hidden weights; report regret")
    from ..offline.simulate import SETTINGS

    p.add_argument(
        "--setting",
        choices=sorted(SETTINGS),
        default="anchor",
        help="issue 17 setting (anchor, beta3, beta30, noise25, peaked, k10, shift, bundled); "
        "the options below override it",
    )
    p.add_argument("--traits", type=int, default=None)
    p.add_argument("--members", type=int, default=None)
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--events", type=int, default=20)
    p.add_argument("--beta", type=float, default=None, help="Bradley-Terry temperature")
    p.add_argument("--noise", type=float, default=None, help="label-flip probability")
    p.add_argument("--feedback", choices=["pairwise", "thumbs", "both"], default="both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--api",
        action="store_true",
        help="also drive the real Palm through its public API (palm_api: palm's learning "
        "settings; palm_api_bundled: the bundled policy's)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("out/simulate"),
        help="folder for simulate.csv and simulate.png",
    )
    p.add_argument(
        "--pipeline-users",
        type=int,
        default=4,
        help="also run this many users through the full pipeline (SQLite, bundled "
        "portfolio, default policy); 0 to skip",
    )
    add_deployment_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the simulation, write CSV and PNG, print the table."""
    from dataclasses import replace

    from ..offline.simulate import (
        Feedback,
        SimulationConfig,
        format_table,
        plot_result,
        run_simulation,
        with_setting,
    )

    fb: tuple[Feedback, ...] = (
        ("pairwise", "thumbs") if args.feedback == "both" else (args.feedback,)
    )
    cfg = with_setting(
        SimulationConfig(
            n_users=args.users, n_events=args.events, feedback=fb, seed=args.seed, api=args.api
        ),
        args.setting,
    )
    overrides = {
        "n_traits": args.traits,
        "n_members": args.members,
        "beta": args.beta,
        "noise": args.noise,
    }
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    result = run_simulation(cfg, progress=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = result.rows()
    with open(args.out / "simulate.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot_result(result, args.out / "simulate.png", title=args.setting)
    print(
        f"setting {args.setting}: {cfg.n_users} users, {cfg.n_traits} traits, "
        f"{cfg.n_members} members, beta={cfg.beta}, label noise={cfg.noise}, "
        f"users ~ Dirichlet({cfg.user_alpha}), shift={cfg.shift}, seed={cfg.seed}"
    )
    print(format_table(result, steps=sorted({0, 5, 10, 20, 50, 100, args.events})))
    print(f"wrote {args.out / 'simulate.csv'} and {args.out / 'simulate.png'}")
    if args.pipeline_users > 0:
        _pipeline_demo(args, cfg.beta)
    return 0


def _pipeline_demo(args: argparse.Namespace, beta: float) -> None:
    """A few users with hidden weights giving pairwise feedback through the real pipeline."""
    from ..exceptions import ComparisonUnavailable
    from ..pipeline import Palm
    from ..preferences.events import Pairwise, Thumb
    from ..stores.sqlite import SQLiteStore
    from ._common import load_deployment

    portfolio, policy = load_deployment(args)
    rng = np.random.default_rng(args.seed)
    names = portfolio.space.names
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "demo.db"
        store = SQLiteStore(db)
        # A simulated clock (a minute per call): with the wall clock, forgetting would read
        # when each call happened, and runs with the same seed would differ.
        ticks = itertools.count()
        palm = Palm(
            portfolio,
            policy,
            store,
            clock=lambda: 1.7e9 + 60.0 * next(ticks),
            random_state=args.seed,
        )
        print(
            f"\npipeline: {args.pipeline_users} users through Palm (SQLite {db.name}, "
            f"portfolio {portfolio.name}, policy {policy.name} {policy.version})"
        )
        print(f"{'user':<8}{'hidden weights':<34}{'start':>12}{'after 15':>12}{'best':>12}  rules")
        for u in range(args.pipeline_users):
            w = rng.dirichlet(np.ones(len(names)))
            user = f"user-{u}"
            start = palm.decide(user, [{"role": "user", "content": "hello"}]).member
            for step in range(15):
                # What the user is served, then the A/B question that starts from it.
                decision = palm.decide(user, [{"role": "user", "content": f"turn {step}"}])
                served = decision.member
                try:
                    a, b = palm.compare_candidates(user, served=served)
                except ComparisonUnavailable:
                    # Nothing within the pair's cost bound: a thumb on the reply served
                    # instead, as the README advises (judged against the average member).
                    rs = portfolio.rewards[portfolio.index(served)]
                    gain = float(w @ (rs - portfolio.rewards.mean(axis=0)))
                    up = rng.random() < 1 / (1 + np.exp(-beta * gain))
                    palm.record_feedback(user, Thumb(up=up, decision_id=decision.decision_id))
                    continue
                ra = portfolio.rewards[portfolio.index(a)]
                rb = portfolio.rewards[portfolio.index(b)]
                pa = 1 / (1 + np.exp(-beta * float(w @ (ra - rb))))
                win, lose = (a, b) if rng.random() < pa else (b, a)
                palm.record_feedback(user, Pairwise(winner=win, loser=lose))
            d = palm.decide(user, [{"role": "user", "content": "hello again"}])
            clamped = policy.clamp(w, evidence=1e9).weights
            best = portfolio.ids[int(np.argmax(portfolio.rewards @ clamped))]
            hidden = " ".join(f"{v:.2f}" for v in w)
            print(
                f"{user:<8}{hidden:<34}{start:>12}{d.member:>12}{best:>12}  "
                f"{','.join(d.rules_fired) or '-'}"
            )
        print("(best = the member best for the hidden weights after the policy's bounds)")
        store.close()
