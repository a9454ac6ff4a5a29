"""How fast the main job's scripted users converge, replayed on measured replies (no generation).

`palm eval --replies-out` writes every member's real reply to every prompt with its trait scores.
This replays `palm demo`'s protocol on them in-process (the same Palm pipeline, policy and
A/B choice of pair): each round a user gets a random prompt, the two members the pipeline asks
about, and prefers the reply with the higher hidden scalarized reward. After R rounds the user
should be routed to the best member within the bounds for their hidden weights. Repeated over
seeds, this gives the share of users that converge, per user and per number of rounds: what
`palm demo --rounds` should be to end right with high probability.

    python bench/bench_demo.py --replies REPLIES.jsonl --portfolio PORTFOLIO.yaml \
        --policy policies/assistant.yaml --rounds 4 8 12 16 --seeds 40
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from palm_middleware import (
    ComparisonUnavailable,
    MemoryStore,
    Pairwise,
    Palm,
    load_policy,
    load_portfolio,
)
from palm_middleware.demo.users import default_users


def load_replies(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """member → prompt id → trait scores."""
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        out[row["member"]][row["prompt_id"]] = row["scores"]
    return out


def replay(
    portfolio_path: Path,
    policy_path: Path,
    replies: dict[str, dict[str, dict[str, float]]],
    rounds: int,
    seed: int,
    margin: float,
    focus: float = 0.9,
) -> dict[str, bool]:
    portfolio = load_portfolio(portfolio_path)
    policy = load_policy(policy_path)
    users = default_users(portfolio.space.names, focus=focus)
    prompts = sorted(set.intersection(*(set(replies[m]) for m in portfolio.ids)))
    rng = random.Random(seed)
    palm = Palm(portfolio, policy, MemoryStore(), random_state=seed)
    names = portfolio.space.names
    out = {}
    for user in users:
        for turn in range(rounds):
            p = rng.choice(prompts)
            # As in the demo: the served request carries the user's words (and their cues).
            d = palm.decide(user.name, [{"role": "user", "content": user.message(p, turn)}])
            try:
                a, b = palm.compare_candidates(user.name, served=d.member)
            except ComparisonUnavailable:
                continue  # no second member within the exploration bound: no question
            ua, ub = user.utility(replies[a][p]), user.utility(replies[b][p])
            if a != b and abs(ua - ub) > margin:
                win, lose = (a, b) if ua > ub else (b, a)
                palm.record_feedback(user.name, Pairwise(winner=win, loser=lose))
        hidden = np.array([user.hidden[t] for t in names])
        clamped = policy.clamp(hidden, evidence=1e9).weights
        best = portfolio.ids[int(np.argmax(portfolio.rewards @ clamped))]
        out[user.name] = palm.decide(user.name).member == best
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--replies", type=Path, required=True)
    ap.add_argument("--portfolio", type=Path, required=True)
    ap.add_argument("--policy", type=Path, default=Path("policies/assistant.yaml"))
    ap.add_argument("--rounds", type=int, nargs="+", default=[4, 8, 12, 16])
    ap.add_argument("--margins", type=float, nargs="+", default=[0.0])
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument(
        "--focus",
        type=float,
        default=0.9,
        help="hidden weight of each user's main trait (palm demo: 0.9)",
    )
    a = ap.parse_args()
    replies = load_replies(a.replies)
    t0 = time.perf_counter()
    users = [u.name for u in default_users(load_portfolio(a.portfolio).space.names)]
    print(f"| margin | rounds | {' | '.join(users)} | all users |")
    print("|---|---|" + "---|" * (len(users) + 1))
    for margin in a.margins:
        for r in a.rounds:
            runs = [
                replay(a.portfolio, a.policy, replies, r, s, margin, a.focus)
                for s in range(a.seeds)
            ]
            per = [np.mean([x[u] for x in runs]) for u in users]
            every = np.mean([all(x.values()) for x in runs])
            print(
                f"| {margin:g} | {r} | " + " | ".join(f"{v:.2f}" for v in per) + f" | {every:.2f} |"
            )
    print(f"\n{a.seeds} seeds per cell; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
