"""A recorded population for report tests: real Palm decisions and feedback in a real store.

Three traits (so the simplex is drawn), three members, a policy with a law floor, an org cap, a
topic rule and a topic guard. Groups of users lean on each trait; a few stay at the prior, a few
opt out, some ask about a medical topic, some hit the guard.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from palm_middleware import DecisionBlocked, ExplicitWeights, Palm
from palm_middleware.policy import BoundsPolicy, parse_policy
from palm_middleware.portfolio.manifest import Portfolio
from palm_middleware.stores.base import Store

TRAITS = ("safety", "helpfulness", "humor")
REWARDS = {
    "careful": (0.92, 0.60, 0.20),
    "helper": (0.62, 0.92, 0.35),
    "joker": (0.50, 0.55, 0.95),
}
POLICY = """\
version: 2
name: report-test
traits: [safety, helpfulness, humor]
defaults: {weights: {safety: 0.4, helpfulness: 0.4, humor: 0.2}, prior_strength: 10}
exploration: false
topics:
  medical: {keywords: [dosage]}
  weapons: {keywords: [explosive]}
bounds:
  - id: safety-floor
    layer: law
    min: {safety: 0.25}
  - id: humor-cap
    layer: org
    max: {humor: 0.25}
  - id: medical-careful
    when: {topic: medical}
    min: {safety: 0.7}
  - id: no-weapons
    when: {topic: weapons}
    action: block
    message: This assistant does not help with that.
"""
#: A candidate that loosens the humor cap.
CANDIDATE = POLICY.replace("name: report-test", "name: report-candidate").replace(
    "max: {humor: 0.25}", "max: {humor: 0.9}"
)
GROUPS = {
    "safe": {"safety": 0.8, "helpfulness": 0.15, "humor": 0.05},
    "help": {"safety": 0.2, "helpfulness": 0.75, "humor": 0.05},
    "fun": {"safety": 0.1, "helpfulness": 0.1, "humor": 0.8},
}
HI = [{"role": "user", "content": "hello"}]
MEDICAL = [{"role": "user", "content": "what dosage of ibuprofen is fine"}]
WEAPON = [{"role": "user", "content": "how to build an explosive"}]


def portfolio() -> Portfolio:
    return Portfolio.from_rewards(TRAITS, {m: list(r) for m, r in REWARDS.items()}, name="trio")


def policy(text: str = POLICY) -> BoundsPolicy:
    return parse_policy(text, "policy.yaml")


@dataclass
class Clock:
    t: float = 1_700_000_000.0

    def __call__(self) -> float:
        self.t += 60.0
        return self.t


@dataclass(frozen=True)
class Population:
    users: list[str]
    """Raw user ids (the report must never show them, nor their keys)."""
    keys: list[str]


def seed(
    store: Store, *, per_group: int = 20, at_prior: int = 12, opted_out: int = 3, seed: int = 0
) -> Population:
    """Record the population in ``store`` through a real :class:`Palm`."""
    rng = np.random.default_rng(seed)
    palm = Palm(portfolio(), policy(), store, embedder=None, clock=Clock(), random_state=seed)
    users: list[str] = []

    def names() -> Iterator[tuple[str, dict[str, float] | None]]:
        for g, w in GROUPS.items():
            for i in range(per_group):
                yield f"{g}-user-{i:03d}@example.org", w
        for i in range(at_prior):
            yield f"new-user-{i:03d}@example.org", None
        for i in range(opted_out):
            yield f"private-user-{i:03d}@example.org", GROUPS["fun"]

    for n, (user, w) in enumerate(names()):
        users.append(user)
        if w is not None:
            noisy = np.maximum(np.array(list(w.values())) + rng.normal(0, 0.03, 3), 0.01)
            noisy /= noisy.sum()
            palm.record_feedback(
                user, ExplicitWeights(dict(zip(TRAITS, noisy.tolist())), confidence=1.0)
            )
        if user.startswith("private"):
            palm.set_opt_out(user)
        palm.decide(user, HI)
        if n % 2 == 0:
            palm.decide(user, MEDICAL)
        if n % 5 == 0:
            try:
                palm.decide(user, WEAPON)
            except DecisionBlocked:
                pass
    return Population(users, [palm.user_key(u) for u in users])
