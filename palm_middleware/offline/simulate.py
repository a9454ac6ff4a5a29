"""A simulator of users with hidden weights, to measure how fast routing converges.

Users have hidden w ~ Dirichlet(1); members have reward profiles on a noisy ℓp front. Each
interaction produces feedback drawn from the user's true preferences: a pairwise choice
(Bradley-Terry with temperature β) or a thumb (logistic against the portfolio's mean profile),
flipped with probability ``noise``. After every event each method routes the user, and we record
the regret against the oracle member and the error of the inferred weights.

Methods:
    default: no personalization; the member best for the deployment default.
    arm_thompson: a per-user Beta-Bernoulli Thompson sampler over members (the scheme of simple
        per-arm personalizers), which ignores reward profiles.
    particle_random: :class:`PreferenceModel` fed by queries chosen at random (a plain particle
        posterior: isolates what query choice adds).
    preference_model: :class:`PreferenceModel` with queries chosen by expected information gain
        about which member is best.
    oracle: the best member for the true weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..exceptions import InvalidParameterError
from ..preferences.events import Observation
from ..preferences.model import PreferenceModel
from ..types import FloatArray

__all__ = [
    "METHODS",
    "SimulationConfig",
    "SimulationResult",
    "format_table",
    "lp_front_members",
    "run_simulation",
]

Feedback = Literal["pairwise", "thumbs"]
METHODS = ("default", "arm_thompson", "particle_random", "preference_model", "oracle")
_DEFAULT, _ARMS, _RANDOM, _MODEL, _ORACLE = range(len(METHODS))


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of a simulation run (defaults: the setup the acceptance numbers refer to)."""

    n_traits: int = 4
    n_members: int = 6
    n_users: int = 200
    n_events: int = 20
    beta: float = 10.0
    noise: float = 0.1
    front_p: float = 2.0
    member_noise: float = 0.02
    feedback: tuple[Feedback, ...] = ("pairwise", "thumbs")
    n_particles: int = 2048
    seed: int = 0


@dataclass
class SimulationResult:
    """Per-step metrics, arrays indexed [method, step] with step 0 = before any feedback."""

    config: SimulationConfig
    rewards: FloatArray
    regret: dict[Feedback, FloatArray] = field(default_factory=dict)
    regret_se: dict[Feedback, FloatArray] = field(default_factory=dict)
    weight_error: dict[Feedback, FloatArray] = field(default_factory=dict)
    coverage: dict[Feedback, FloatArray] = field(default_factory=dict)

    def rows(self) -> list[dict[str, float | int | str]]:
        """Long-format rows (method, feedback, step, metrics) for CSV output."""
        out: list[dict[str, float | int | str]] = []
        for fb in self.regret:
            for mi, method in enumerate(METHODS):
                for t in range(self.regret[fb].shape[1]):
                    out.append(
                        {
                            "feedback": fb,
                            "method": method,
                            "events": t,
                            "regret": round(float(self.regret[fb][mi, t]), 6),
                            "regret_se": round(float(self.regret_se[fb][mi, t]), 6),
                            "weight_error": round(float(self.weight_error[fb][mi, t]), 6),
                            "coverage90": round(float(self.coverage[fb][mi, t]), 6),
                        }
                    )
        return out


def lp_front_members(
    n_members: int,
    n_traits: int,
    *,
    p: float = 2.0,
    noise: float = 0.02,
    random_state: int | np.random.Generator | None = 0,
) -> FloatArray:
    """Reward profiles of members aligned at random weights on the ℓp front ‖r‖_p ≤ 1, plus noise.

    The best point of the front for weights w is r_i = w_i^(q−1)/‖w‖_q^(q−1), q = p/(p−1).
    """
    from .portfolio.oracle import stack_rewards
    from .portfolio.synthetic import lp_front_pool

    pool = lp_front_pool(n_traits, n_members, p, sigma=noise, shrink=0.0, random_state=random_state)
    return stack_rewards(pool)


def _sigmoid(x: float) -> float:
    return float(0.5 * (1.0 + np.tanh(0.5 * x)))


def run_simulation(
    config: SimulationConfig = SimulationConfig(), progress: bool = False
) -> SimulationResult:
    """Simulate every method under each feedback kind and return averaged metrics."""
    c = config
    if c.n_members < 2 or c.n_traits < 2 or c.n_users < 1 or c.n_events < 1:
        raise InvalidParameterError("need >= 2 members, >= 2 traits, >= 1 user and >= 1 event")
    if not 0 <= c.noise < 0.5:
        raise InvalidParameterError(f"noise must be in [0, 0.5); got {c.noise}")
    rng = np.random.default_rng(c.seed)
    R = lp_front_members(
        c.n_members, c.n_traits, p=c.front_p, noise=c.member_noise, random_state=rng
    )
    users = rng.dirichlet(np.ones(c.n_traits), size=c.n_users)
    default_w = np.full(c.n_traits, 1.0 / c.n_traits)
    ref = R.mean(axis=0)
    result = SimulationResult(config=c, rewards=R)
    from tqdm import tqdm

    for fb in c.feedback:
        regret = np.zeros((len(METHODS), c.n_users, c.n_events + 1))
        werr = np.zeros_like(regret)
        cover = np.zeros_like(regret)
        # disable=None: a bar on a terminal, silence in logs and CI.
        bar = tqdm(
            range(c.n_users), desc=f"simulate {fb}", disable=None if progress else True, leave=False
        )
        for u in bar:
            w = users[u]
            vals = R @ w
            opt = float(vals.max())
            urng = np.random.default_rng([c.seed, u, 0 if fb == "pairwise" else 1])

            def feedback(
                i: int, j: int | None, w: FloatArray = w, urng: np.random.Generator = urng
            ) -> int:
                if j is None:
                    p = _sigmoid(c.beta * float(w @ (R[i] - ref)))
                else:
                    p = _sigmoid(c.beta * float(w @ (R[i] - R[j])))
                y = 1 if urng.random() < p else -1
                return -y if urng.random() < c.noise else y

            # default and oracle: constant routing
            d_idx = int(np.argmax(R @ default_w))
            regret[_DEFAULT, u, :] = (opt - vals[d_idx]) / opt
            werr[_DEFAULT, u, :] = 0.5 * np.abs(default_w - w).sum()
            regret[_ORACLE, u, :] = 0.0
            # per-arm Thompson sampling
            a = np.ones(c.n_members)
            b = np.ones(c.n_members)
            for t in range(c.n_events + 1):
                best = int(np.argmax(a / (a + b)))
                regret[_ARMS, u, t] = (opt - vals[best]) / opt
                if t == c.n_events:
                    break
                draws = urng.beta(a, b)
                if fb == "thumbs":
                    i = int(np.argmax(draws))
                    y = feedback(i, None)
                    a[i] += y > 0
                    b[i] += y < 0
                else:
                    i, j = (int(k) for k in np.argsort(-draws)[:2])
                    win, lose = (i, j) if feedback(i, j) > 0 else (j, i)
                    a[win] += 1
                    b[lose] += 1
            werr[_ARMS, u, :] = np.nan
            # the preference model, fed random or information-directed queries
            for mi in (_RANDOM, _MODEL):
                model = PreferenceModel(
                    prior_mean=default_w,
                    prior_strength=float(c.n_traits),
                    beta=c.beta,
                    lapse=c.noise,
                    n_particles=c.n_particles,
                    random_state=np.random.default_rng([c.seed, u]),
                ).fit([])
                for t in range(c.n_events + 1):
                    mean = model.predict()
                    best = int(np.argmax(R @ mean))
                    regret[mi, u, t] = (opt - vals[best]) / opt
                    werr[mi, u, t] = 0.5 * np.abs(mean - w).sum()
                    lo, hi = model.credible_interval(0.9)
                    cover[mi, u, t] = float(np.mean((w >= lo) & (w <= hi)))
                    if t == c.n_events:
                        break
                    if fb == "thumbs":
                        i = (
                            int(urng.integers(c.n_members))
                            if mi == _RANDOM
                            else model.query_member(R, ref)
                        )
                        obs = Observation.compare(R[i] - ref, feedback(i, None))
                    else:
                        if mi == _RANDOM:
                            i, j = (int(k) for k in urng.choice(c.n_members, 2, replace=False))
                        else:
                            i, j = model.query_pair(R)
                        obs = Observation.compare(R[i] - R[j], feedback(i, j))
                    model.partial_fit([obs])
        cover[[_DEFAULT, _ARMS, _ORACLE]] = np.nan
        werr[_ORACLE] = 0.0
        result.regret[fb] = regret.mean(axis=1)
        result.regret_se[fb] = regret.std(axis=1, ddof=1) / np.sqrt(c.n_users)
        result.weight_error[fb] = werr.mean(axis=1)
        result.coverage[fb] = cover.mean(axis=1)
    return result


def format_table(result: SimulationResult, steps: Sequence[int] = (0, 5, 10, 20)) -> str:
    """A plain-text table of mean regret (% of the oracle value) at a few step counts."""
    lines = []
    for fb, reg in result.regret.items():
        steps_ = [s for s in steps if s < reg.shape[1]]
        lines.append(f"{fb}: mean regret, % of oracle value (± s.e.), after N events")
        lines.append(f"  {'method':<18}" + "".join(f"{'N=' + str(s):>16}" for s in steps_))
        for mi, m in enumerate(METHODS):
            cells = "".join(
                f"{100 * reg[mi, s]:>9.2f} ± {100 * result.regret_se[fb][mi, s]:4.2f}"
                for s in steps_
            )
            lines.append(f"  {m:<18}{cells}")
        last = reg.shape[1] - 1
        lines.append(
            f"  preference_model: weight error (TV) {result.weight_error[fb][_MODEL, last]:.3f}, "
            f"90% interval coverage {result.coverage[fb][_MODEL, last]:.3f}"
        )
    return "\n".join(lines)
