"""``palm simulate``: how fast routing converges for simulated users, against baselines."""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np

from ._common import add_deployment_options


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``simulate`` command."""
    p = sub.add_parser("simulate", help="simulate users with hidden weights; report regret")
    p.add_argument("--traits", type=int, default=4)
    p.add_argument("--members", type=int, default=6)
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--events", type=int, default=20)
    p.add_argument("--beta", type=float, default=10.0, help="Bradley-Terry temperature")
    p.add_argument("--noise", type=float, default=0.1, help="label-flip probability")
    p.add_argument("--feedback", choices=["pairwise", "thumbs", "both"], default="both")
    p.add_argument("--seed", type=int, default=0)
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
    from ..offline.simulate import Feedback, SimulationConfig, format_table, run_simulation

    fb: tuple[Feedback, ...] = (
        ("pairwise", "thumbs") if args.feedback == "both" else (args.feedback,)
    )
    cfg = SimulationConfig(
        n_traits=args.traits,
        n_members=args.members,
        n_users=args.users,
        n_events=args.events,
        beta=args.beta,
        noise=args.noise,
        feedback=fb,
        seed=args.seed,
    )
    result = run_simulation(cfg, progress=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = result.rows()
    with open(args.out / "simulate.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    _plot(result, args.out / "simulate.png")
    print(
        f"{args.users} users, {args.traits} traits, {args.members} members, "
        f"beta={args.beta}, label noise={args.noise}, seed={args.seed}"
    )
    print(format_table(result, steps=(0, 5, 10, args.events)))
    print(f"wrote {args.out / 'simulate.csv'} and {args.out / 'simulate.png'}")
    if args.pipeline_users > 0:
        _pipeline_demo(args)
    return 0


def _plot(result: object, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..offline.simulate import METHODS, SimulationResult

    assert isinstance(result, SimulationResult)
    fbs = list(result.regret)
    fig, axes = plt.subplots(1, len(fbs), figsize=(6 * len(fbs), 4), squeeze=False)
    for ax, fb in zip(axes[0], fbs):
        reg = 100 * result.regret[fb]
        se = 100 * result.regret_se[fb]
        x = np.arange(reg.shape[1])
        for mi, m in enumerate(METHODS):
            ax.plot(x, reg[mi], label=m)
            ax.fill_between(x, reg[mi] - se[mi], reg[mi] + se[mi], alpha=0.2)
        ax.set_title(f"{fb} feedback")
        ax.set_xlabel("events per user")
        ax.set_ylabel("mean regret (% of oracle value)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pipeline_demo(args: argparse.Namespace) -> None:
    """A few users with hidden weights giving pairwise feedback through the real pipeline."""
    from ..pipeline import Palm
    from ..preferences.events import Pairwise
    from ..stores.sqlite import SQLiteStore
    from ._common import load_deployment

    portfolio, policy = load_deployment(args)
    rng = np.random.default_rng(args.seed)
    names = portfolio.space.names
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "demo.db"
        store = SQLiteStore(db)
        palm = Palm(portfolio, policy, store, random_state=args.seed)
        print(
            f"\npipeline: {args.pipeline_users} users through Palm (SQLite {db.name}, "
            f"portfolio {portfolio.name}, policy {policy.name} {policy.version})"
        )
        print(f"{'user':<8}{'hidden weights':<34}{'start':>12}{'after 15':>12}{'best':>12}  rules")
        for u in range(args.pipeline_users):
            w = rng.dirichlet(np.ones(len(names)))
            user = f"user-{u}"
            start = palm.decide(user, [{"role": "user", "content": "hello"}]).member
            for _ in range(15):
                a, b = palm.compare_candidates(user)
                ra = portfolio.rewards[portfolio.index(a)]
                rb = portfolio.rewards[portfolio.index(b)]
                pa = 1 / (1 + np.exp(-args.beta * float(w @ (ra - rb))))
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
