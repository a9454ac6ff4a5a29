"""A simulator of users with hidden weights, to measure how fast and how safely routing learns.

Members have reward profiles on a noisy ℓp front; users have hidden w ~ Dirichlet(user_alpha)
(optionally re-drawn halfway: a user whose taste shifts). Every step each method shows the user
one member (thumbs) or an A/B pair (pairwise) and gets feedback drawn from the user's true
preferences: Bradley-Terry with temperature β on value differences (a thumb compares against
the portfolio's mean profile), flipped with probability ``noise``. All users run in lock step,
so the project's population fit sees everyone's posteriors, as a live deployment would.

Methods:
    default: no personalization; the member best for the deployment default.
    bandit: a per-user Beta-Bernoulli Thompson sampler over members (per-arm personalizers),
        which ignores reward profiles.
    reference: a well-specified particle posterior (2000 particles) told the true β, noise and
        user distribution; shows what ``palm`` shows, by the same rules.
    palm: what the project does by default: noise (β, lapse) learned over a grid, population
        prior refitted every step, Thompson exploration with the cost bound, A/B second member
        chosen given the one served (information-directed).
    oracle: the best member for the true weights.
    palm_api, palm_api_bundled (with ``api=True``): the real :class:`~palm_middleware.Palm`,
        driven only through its public API as an app would (see :func:`_run_api`).
        ``palm_api``'s policy states the learning settings of ``palm`` (prior strength d, no
        ``min_events``, no ``max_step``; β and lapse learned); ``palm_api_bundled`` those of
        the bundled policy (its prior strength, ``min_events`` and ``max_step``), which is what
        a deployment of the default policy gets. On the ℓp front both route on uniform default
        weights with no floors or caps (the bundled policy's are named after its own traits);
        on the bundled portfolio (setting ``bundled``) on the bundled default weights, and
        ``palm_api_bundled`` within the bundled policy's floors, caps and drift limit.

Metrics per step: regret of what ``mode="mean"`` would serve, regret of what is shown (the mean
over an A/B pair's two members), 90% interval coverage of the true weights, weight error, and
the time of each feedback update.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..exceptions import InvalidParameterError
from ..preferences.events import Observation
from ..preferences.model import PreferenceModel
from ..preferences.noise import DEFAULT_BETAS, DEFAULT_LAPSES, NoiseGrid
from ..preferences.population import Population, strength_candidates
from ..preferences.state import EVIDENCE_BATCH
from ..types import FloatArray

if TYPE_CHECKING:
    from ..policy import BoundsPolicy
    from ..portfolio.manifest import Portfolio

__all__ = [
    "API_METHODS",
    "METHODS",
    "ApiFit",
    "SETTINGS",
    "SimulationConfig",
    "SimulationResult",
    "api_deployment",
    "api_settings",
    "format_table",
    "lp_front_members",
    "plot_result",
    "pool",
    "run_api_arm",
    "run_simulation",
    "targets",
    "pair_second",
    "thompson_member",
    "with_setting",
]

Feedback = Literal["pairwise", "thumbs"]
METHODS = ("default", "bandit", "reference", "palm", "oracle", "palm_api", "palm_api_bundled")
_DEFAULT, _BANDIT, _REF, _PALM, _ORACLE, _API, _API_BUNDLED = range(len(METHODS))
#: The Palm-API arms (run with ``SimulationConfig(api=True)``; NaN otherwise).
API_METHODS = METHODS[_API:]


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of a simulation run (defaults: the anchor setting of issue 17).

    ``half_life`` is in events (both particle methods forget with it); ``explore_cost`` is the
    largest relative value loss, under the posterior mean, that a Thompson draw may cost, and
    ``pair_cost`` with ``bound_pairs`` (as ``Palm.compare_candidates``) the one the second
    member of an A/B pair may cost: when no member qualifies, no A/B question is asked that
    step and the served member is shown alone, rated with a thumb (``pair_fallback="thumb"``,
    what the README advises an app to do on ``ComparisonUnavailable``) or not at all
    (``"none"``). ``bound_pairs=False``:
    the pair's second member is only traded off by information-directed sampling (before).
    ``palm_beta`` / ``palm_lapse`` (diagnostics): give ``palm`` that β (a one-point grid) or
    that lapse rate (not learned) instead of learning it; ``palm_reprior=False``: ``palm``
    fits the population but never re-priors users it already has (``Palm`` gives a user the
    prior served at their first event and keeps it). ``members="bundled"``: the bundled
    portfolio's members (6 over its 4 traits) instead of the ℓp front, and the bundled policy's
    default weights as the deployment default. ``api``: also run the Palm-API arms
    (the real ``Palm`` through its public API; milliseconds per event). ``api_overrides``
    (diagnostics): ``(name, value)`` pairs replacing ``palm_api``'s learning settings (keys of
    :func:`api_settings`: ``prior_strength``, ``min_events``, ``max_step``, ``population``,
    ``bounds``).
    """

    n_traits: int = 4
    n_members: int = 6
    n_users: int = 200
    n_events: int = 20
    beta: float = 10.0
    noise: float = 0.1
    user_alpha: float = 1.0
    shift: bool = False
    half_life: float | None = None
    front_p: float = 2.0
    member_noise: float = 0.02
    feedback: tuple[Feedback, ...] = ("pairwise", "thumbs")
    n_particles: int = 1024
    reference_particles: int = 2000
    explore_cost: float = 0.2
    pair_cost: float = 0.4
    bound_pairs: bool = True
    pair_fallback: Literal["thumb", "none"] = "thumb"
    learn: bool = True
    betas: tuple[float, ...] = DEFAULT_BETAS
    lapses: tuple[float, ...] = DEFAULT_LAPSES
    population: bool = True
    n_min: int = 20
    palm_beta: float | None = None
    palm_lapse: float | None = None
    palm_reprior: bool = True
    members: Literal["front", "bundled"] = "front"
    api: bool = False
    api_overrides: tuple[tuple[str, object], ...] = ()
    seed: int = 0


#: The settings of issue 17's "Must show": the anchor and one change each; and ``bundled``: the
#: anchor's users and noise on the bundled portfolio (what ``Palm``'s README deployment serves).
SETTINGS: dict[str, dict[str, object]] = {
    "anchor": {},
    "beta3": {"beta": 3.0},
    "beta30": {"beta": 30.0},
    "noise25": {"noise": 0.25},
    "peaked": {"user_alpha": 0.3},
    "k10": {"n_members": 10},
    "shift": {"shift": True, "half_life": 20.0},
    "bundled": {"members": "bundled", "n_members": 6, "n_traits": 4},
}


@dataclass
class SimulationResult:
    """Per-step metrics, arrays indexed [method, step] with step 0 = before any feedback."""

    config: SimulationConfig
    rewards: FloatArray
    regret: dict[Feedback, FloatArray] = field(default_factory=dict)
    regret_se: dict[Feedback, FloatArray] = field(default_factory=dict)
    shown: dict[Feedback, FloatArray] = field(default_factory=dict)
    weight_error: dict[Feedback, FloatArray] = field(default_factory=dict)
    coverage: dict[Feedback, FloatArray] = field(default_factory=dict)
    update_ms: dict[Feedback, dict[str, FloatArray]] = field(default_factory=dict)
    noise_fit: dict[Feedback, tuple[float, float]] = field(default_factory=dict)
    prior_fit: dict[Feedback, FloatArray] = field(default_factory=dict)
    per_user: dict[Feedback, FloatArray] = field(default_factory=dict)
    """Regret of the mean route per user, [method, user, step] (for paired intervals)."""
    api_fit: dict[Feedback, dict[str, ApiFit]] = field(default_factory=dict)
    """What each Palm-API arm's population fit served at the end (learned noise, prior)."""

    def ran(self, fb: Feedback, method: str) -> bool:
        """Whether ``method`` ran under ``fb`` (the Palm-API arms only with ``api=True``)."""
        return bool(np.any(np.isfinite(self.regret[fb][METHODS.index(method)])))

    asked: dict[Feedback, FloatArray] = field(default_factory=dict)
    """Pairwise, particle methods: the share of users asked an A/B question, [method, step]."""
    pair_max: dict[Feedback, FloatArray] = field(default_factory=dict)
    """Pairwise, particle methods: per user, the regret of a shown pair's costlier member;
    [method, user, step], NaN where no pair was shown."""

    def rows(self) -> list[dict[str, float | int | str]]:
        """Long-format rows (method, feedback, step, metrics) for CSV output."""
        out: list[dict[str, float | int | str]] = []
        for fb in self.regret:
            for mi, method in enumerate(METHODS):
                if not self.ran(fb, method):
                    continue
                for t in range(self.regret[fb].shape[1]):
                    out.append(
                        {
                            "feedback": fb,
                            "method": method,
                            "events": t,
                            "regret": round(float(self.regret[fb][mi, t]), 6),
                            "regret_se": round(float(self.regret_se[fb][mi, t]), 6),
                            "shown_regret": round(float(self.shown[fb][mi, t]), 6),
                            "weight_error": round(float(self.weight_error[fb][mi, t]), 6),
                            "coverage90": round(float(self.coverage[fb][mi, t]), 6),
                        }
                    )
        return out

    def update_stats(self, fb: Feedback, method: str) -> tuple[float, float]:
        """Mean and p99 of the feedback update time (ms) of ``method``."""
        t = self.update_ms[fb].get(method)
        if t is None or t.size == 0:
            return float("nan"), float("nan")
        return float(t.mean()), float(np.percentile(t, 99))


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


def thompson_member(
    summary_mean: FloatArray, draw: FloatArray, rewards: FloatArray, explore_cost: float
) -> int:
    """The member a Thompson draw picks, unless it costs more than ``explore_cost`` of the value
    the posterior mean expects from the mean's own member (then the mean's member)."""
    v = rewards @ summary_mean
    best = int(np.argmax(v))
    i = int(np.argmax(rewards @ draw))
    return i if v[best] - v[i] <= explore_cost * abs(v[best]) else best


def pair_second(
    model: PreferenceModel,
    summary_mean: FloatArray,
    rewards: FloatArray,
    served: int,
    pair_cost: float | None,
) -> int | None:
    """The A/B pair's second member next to ``served``, as ``Palm.compare_candidates`` picks
    it: information-directed among the members losing at most ``pair_cost`` of the best value
    under the posterior mean (None: no bound); None when no member qualifies."""
    if pair_cost is None:
        return model.query_second(rewards, served)
    v = rewards @ summary_mean
    top = float(v.max())
    ok = [j for j in range(len(v)) if j != served and top - float(v[j]) <= pair_cost * abs(top)]
    return model.query_second(rewards, served, ok) if ok else None


def _check(c: SimulationConfig) -> None:
    if c.n_members < 2 or c.n_traits < 2 or c.n_users < 1 or c.n_events < 1:
        raise InvalidParameterError("need >= 2 members, >= 2 traits, >= 1 user and >= 1 event")
    if not 0 <= c.noise < 0.5:
        raise InvalidParameterError(f"noise must be in [0, 0.5); got {c.noise}")
    if not c.beta > 0 or not c.user_alpha > 0:
        raise InvalidParameterError(
            f"beta and user_alpha must be > 0; got {c.beta}, {c.user_alpha}"
        )
    if c.pair_fallback not in ("thumb", "none"):
        raise InvalidParameterError(
            f"pair_fallback must be 'thumb' or 'none'; got {c.pair_fallback!r}"
        )
    if c.palm_beta is not None and not c.palm_beta > 0:
        raise InvalidParameterError(f"palm_beta must be > 0; got {c.palm_beta}")
    if c.palm_lapse is not None and not 0 <= c.palm_lapse < 0.5:
        raise InvalidParameterError(f"palm_lapse must be in [0, 0.5); got {c.palm_lapse}")
    if c.api and c.palm_lapse == 0:
        raise InvalidParameterError("api: a policy states a lapse rate in (0, 0.5); got 0")
    if c.members == "bundled" and (c.n_members, c.n_traits) != (6, 4):
        raise InvalidParameterError("members='bundled' has 6 members over 4 traits")
    if c.members not in ("front", "bundled"):
        raise InvalidParameterError(f"members must be 'front' or 'bundled'; got {c.members!r}")
    if not 0 <= c.explore_cost:
        raise InvalidParameterError(f"explore_cost must be >= 0; got {c.explore_cost}")
    if not 0 <= c.pair_cost:
        raise InvalidParameterError(f"pair_cost must be >= 0; got {c.pair_cost}")


def run_simulation(
    config: SimulationConfig = SimulationConfig(), progress: bool = False
) -> SimulationResult:
    """Simulate every method under each feedback kind and return averaged metrics."""
    c = config
    _check(c)
    R, users, shifted = _world(c)
    result = SimulationResult(config=c, rewards=R)
    for fb in c.feedback:
        _run_feedback(c, fb, R, users, shifted, result, progress)
    return result


def run_api_arm(
    config: SimulationConfig, method: str = "palm_api", progress: bool = False
) -> SimulationResult:
    """Only one Palm-API arm (with ``default`` and ``oracle``), on the same members, users and
    coin flips as :func:`run_simulation` with this config: for diagnostics that vary the arm's
    settings (``config.api_overrides``) without re-running the other methods."""
    c = config
    _check(c)
    mi = METHODS.index(method)
    if method not in API_METHODS:
        raise InvalidParameterError(f"not a Palm-API method: {method!r}; use {list(API_METHODS)}")
    R, users, shifted = _world(c)
    result = SimulationResult(config=c, rewards=R)
    U, T = c.n_users, c.n_events
    d_idx = int(np.argmax(R @ _default_weights(c)))
    for fb in c.feedback:
        shape = (len(METHODS), U, T + 1)
        regret, shown, werr, cover, asked, pair_max = (np.full(shape, np.nan) for _ in range(6))
        for t in range(T + 1):
            w = shifted if c.shift and t >= T // 2 else users
            vals = w @ R.T
            opt = vals.max(axis=1)
            regret[_DEFAULT, :, t] = shown[_DEFAULT, :, t] = (opt - vals[:, d_idx]) / opt
            regret[_ORACLE, :, t] = shown[_ORACLE, :, t] = 0.0
        coins = _coins(c, fb)
        settings = api_settings(c, method)
        arrays = (regret, shown, werr, cover, asked, pair_max)
        fit, times = _run_api(c, fb, R, users, shifted, coins, settings, mi, arrays, progress)
        result.api_fit[fb] = {method: fit}
        result.regret[fb] = regret.mean(axis=1)
        result.per_user[fb] = regret
        result.regret_se[fb] = (
            regret.std(axis=1, ddof=1) / np.sqrt(U) if U > 1 else 0 * regret[:, 0]
        )
        result.shown[fb] = shown.mean(axis=1)
        if fb == "pairwise":
            seen = (~np.isnan(asked)).sum(axis=1)
            result.asked[fb] = np.where(
                seen > 0, np.nansum(asked, axis=1) / np.maximum(seen, 1), np.nan
            )
            result.pair_max[fb] = pair_max
        result.weight_error[fb] = werr.mean(axis=1)
        result.coverage[fb] = cover.mean(axis=1)
        result.update_ms[fb] = {method: 1e3 * np.asarray(times)}
    return result


def _world(c: SimulationConfig) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The members' rewards, the users' hidden weights and their weights after a shift."""
    rng = np.random.default_rng(c.seed)
    R = lp_front_members(
        c.n_members, c.n_traits, p=c.front_p, noise=c.member_noise, random_state=rng
    )
    if c.members == "bundled":  # the same draws from rng either way: the same users
        R = np.array(_bundled()[0].rewards)
    users = rng.dirichlet(np.full(c.n_traits, c.user_alpha), size=c.n_users)
    shifted = rng.dirichlet(np.full(c.n_traits, c.user_alpha), size=c.n_users)
    return R, users, shifted


def _bundled() -> tuple[Portfolio, BoundsPolicy]:
    """The bundled portfolio and policy (README's deployment)."""
    from ..data import bundled
    from ..policy import load_policy
    from ..portfolio.manifest import load_portfolio

    return load_portfolio(bundled("portfolio.yaml")), load_policy(bundled("policy.yaml"))


def _default_weights(c: SimulationConfig) -> FloatArray:
    """The deployment default: uniform on the front, the bundled policy's on its portfolio."""
    if c.members == "bundled":
        return np.array(_bundled()[1].default.values)
    return np.full(c.n_traits, 1.0 / c.n_traits)


def _coins(c: SimulationConfig, fb: Feedback) -> FloatArray:
    """Common random numbers: the user's own coin flips (Bradley-Terry draw, label flip) at
    step t are the same whichever method asks, so methods that show the same thing get the
    same answer and their difference is measured with less noise (the methods' own draws
    differ)."""
    out: FloatArray = np.random.default_rng([c.seed, 99, 0 if fb == "pairwise" else 1]).random(
        (c.n_users, c.n_events, 2)
    )
    return out


def _run_feedback(
    c: SimulationConfig,
    fb: Feedback,
    R: FloatArray,
    users: FloatArray,
    shifted: FloatArray,
    result: SimulationResult,
    progress: bool,
) -> None:
    from tqdm import tqdm

    U, T, K, d = c.n_users, c.n_events, c.n_members, c.n_traits
    default_w = _default_weights(c)
    ref_point = R.mean(axis=0)
    d_idx = int(np.argmax(R @ default_w))
    # palm: β per user over a grid, the lapse rate the population's (starting at 0.1)
    betas = c.betas if c.palm_beta is None else (c.palm_beta,)
    lapse0 = 0.1 if c.palm_lapse is None else c.palm_lapse
    grid = NoiseGrid.centred(betas, (lapse0,)) if c.learn else NoiseGrid.fixed(10.0, 0.05)
    lapses = c.lapses if c.learn and c.palm_lapse is None else None
    alpha0 = default_w * d  # the deployment's starting prior: Dirichlet(1) on the front
    population = Population(n_min=c.n_min)
    strengths = strength_candidates(float(alpha0.sum()))

    def model(n: int, alpha: FloatArray, noise: NoiseGrid, seed: int) -> PreferenceModel:
        return PreferenceModel(
            prior_mean=alpha / alpha.sum(),
            prior_strength=float(alpha.sum()),
            noise=noise,
            half_life=c.half_life,
            n_particles=n,
            random_state=np.random.default_rng([c.seed, seed, 0 if fb == "pairwise" else 1]),
        ).fit([])

    true_alpha = np.full(d, c.user_alpha)
    palm = [model(c.n_particles, alpha0, grid, u) for u in range(U)]
    ref = [
        model(c.reference_particles, true_alpha, NoiseGrid.fixed(c.beta, c.noise), 10_000 + u)
        for u in range(U)
    ]
    a = np.ones((U, K))
    b = np.ones((U, K))
    shape = (len(METHODS), U, T + 1)
    regret, shown, werr, cover, asked, pair_max = (np.full(shape, np.nan) for _ in range(6))
    times: dict[str, list[float]] = {"bandit": [], "reference": [], "palm": []}
    rngs = [
        [np.random.default_rng([c.seed, u, mi, 0 if fb == "pairwise" else 1]) for mi in range(5)]
        for u in range(U)
    ]
    coins = _coins(c, fb)
    w_now = users.copy()
    bar = tqdm(range(T + 1), desc=f"simulate {fb}", disable=None if progress else True, leave=False)
    for t in bar:
        if c.shift and t == T // 2:
            w_now = shifted.copy()
        vals = w_now @ R.T  # (U, K)
        opt = vals.max(axis=1)

        def reg(u: int, i: int, vals: FloatArray = vals, opt: FloatArray = opt) -> float:
            return float((opt[u] - vals[u, i]) / opt[u])

        if c.learn and t > 0 and (t <= 10 or t % 5 == 0 or t == T):
            # empirical Bayes: refit the population prior, re-prior everyone in place
            for u, m in enumerate(palm):
                le = m.lapse_evidence(lapses) if lapses is not None else None
                se = m.strength_evidence(strengths, budget=EVIDENCE_BATCH)  # as Palm
                population.observe(str(u), m.mean_log_weights(), m.noise_posterior(), le, se)
            pop = population.prior(alpha0, grid, lapses)
            result.prior_fit[fb] = pop.alpha
            for m in palm if c.palm_reprior else ():
                m.reprior(pop.alpha if c.population else None, pop.noise.p)
                if pop.noise.lapses[0] != m.noise_grid_.lapses[0]:
                    m.relapse(pop.noise.lapses[0])
        for u in range(U):
            w = w_now[u]
            regret[_DEFAULT, u, t] = reg(u, d_idx)
            shown[_DEFAULT, u, t] = reg(u, d_idx)
            werr[_DEFAULT, u, t] = 0.5 * np.abs(default_w - w).sum()
            regret[_ORACLE, u, t] = shown[_ORACLE, u, t] = werr[_ORACLE, u, t] = 0.0
            regret[_BANDIT, u, t] = reg(u, int(np.argmax(a[u] / (a[u] + b[u]))))
            for mi, m in ((_REF, ref[u]), (_PALM, palm[u])):
                s = m.summary(0.9)
                regret[mi, u, t] = reg(u, int(np.argmax(R @ s.mean)))
                werr[mi, u, t] = 0.5 * np.abs(s.mean - w).sum()
                cover[mi, u, t] = float(np.mean((w >= s.lower) & (w <= s.upper)))
                if t == T:
                    continue
                r = rngs[u][mi]
                i = thompson_member(s.mean, s.sample(1, r)[0], R, c.explore_cost)
                j = None
                if fb == "pairwise":
                    j = pair_second(m, s.mean, R, i, c.pair_cost if c.bound_pairs else None)
                    asked[mi, u, t] = float(j is not None)
                if j is None:  # thumbs, or no A/B question within the bound this step
                    if fb == "pairwise" and c.pair_fallback == "none":
                        shown[mi, u, t] = reg(u, i)
                        continue
                    obs = Observation.compare(
                        R[i] - ref_point, _fb(c, w, R[i] - ref_point, coins[u, t]), ts=t
                    )
                    shown[mi, u, t] = reg(u, i)
                else:
                    obs = Observation.compare(
                        R[i] - R[j], _fb(c, w, R[i] - R[j], coins[u, t]), ts=t
                    )
                    shown[mi, u, t] = 0.5 * (reg(u, i) + reg(u, j))
                    pair_max[mi, u, t] = max(reg(u, i), reg(u, j))
                t0 = time.perf_counter()
                m.partial_fit([obs])
                times[METHODS[mi]].append(time.perf_counter() - t0)
            if t == T:
                continue
            r = rngs[u][_BANDIT]
            draws = r.beta(a[u], b[u])
            if fb == "thumbs":
                i = int(np.argmax(draws))
                y = _fb(c, w, R[i] - ref_point, coins[u, t])
                t0 = time.perf_counter()
                a[u, i] += y > 0
                b[u, i] += y < 0
                times["bandit"].append(time.perf_counter() - t0)
                shown[_BANDIT, u, t] = reg(u, i)
            else:
                i, j = (int(k) for k in np.argsort(-draws)[:2])
                win, lose = (i, j) if _fb(c, w, R[i] - R[j], coins[u, t]) > 0 else (j, i)
                t0 = time.perf_counter()
                a[u, win] += 1
                b[u, lose] += 1
                times["bandit"].append(time.perf_counter() - t0)
                shown[_BANDIT, u, t] = 0.5 * (reg(u, i) + reg(u, j))
    q = np.mean([m.noise_posterior() for m in palm], axis=0)
    result.noise_fit[fb] = palm[0].noise_grid_.mean(q)
    if c.api:
        for mi in (_API, _API_BUNDLED):
            fit, times[METHODS[mi]] = _run_api(
                c, fb, R, users, shifted, coins, api_settings(c, METHODS[mi]), mi,
                (regret, shown, werr, cover, asked, pair_max), progress,
            )  # fmt: skip
            result.api_fit.setdefault(fb, {})[METHODS[mi]] = fit
    result.regret[fb] = regret.mean(axis=1)
    result.per_user[fb] = regret
    result.regret_se[fb] = regret.std(axis=1, ddof=1) / np.sqrt(U) if U > 1 else 0 * regret[:, 0]
    result.shown[fb] = shown.mean(axis=1)
    if fb == "pairwise":
        seen = (~np.isnan(asked)).sum(axis=1)  # NaN rows (other methods) stay NaN, silently
        result.asked[fb] = np.where(
            seen > 0, np.nansum(asked, axis=1) / np.maximum(seen, 1), np.nan
        )
        result.pair_max[fb] = pair_max
    result.weight_error[fb] = werr.mean(axis=1)
    result.coverage[fb] = cover.mean(axis=1)
    result.update_ms[fb] = {k: 1e3 * np.asarray(v) for k, v in times.items()}


@dataclass(frozen=True)
class ApiFit:
    """A Palm-API arm's population prior at the end of a run: the noise it learned (β, lapse:
    the grid's mean) and the Dirichlet new users start from."""

    beta: float
    lapse: float
    alpha: FloatArray


def api_settings(c: SimulationConfig, method: str) -> dict[str, object]:
    """The learning settings the policy of a Palm-API arm states.

    ``palm_api``: those of ``palm`` (prior strength d, i.e. Dirichlet(1) around the default;
    no ``min_events``; no ``max_step``; no trait bounds), then ``c.api_overrides``.
    ``palm_api_bundled``: the bundled policy's prior strength, ``min_events`` and ``max_step``,
    and on its own portfolio (``members="bundled"``) its floors, caps and drift limit too.
    Both: β and lapse as ``palm`` handles them (learned, or ``palm_beta``/``palm_lapse``),
    ``population`` as ``c.population``.
    """
    if method == "palm_api":
        out: dict[str, object] = {
            "prior_strength": float(c.n_traits),
            "min_events": 0.0,
            "max_step": None,
            "population": c.population,
            "bounds": False,
        }
        for k, v in c.api_overrides:
            if k not in out:
                raise InvalidParameterError(
                    f"api_overrides: unknown setting {k!r}; use {list(out)}"
                )
            out[k] = v
        return out
    if method == "palm_api_bundled":
        p = _bundled()[1]
        return {
            "prior_strength": p.prior_strength,
            "min_events": p.min_events,
            "max_step": p.max_step,
            "population": c.population,
            "bounds": c.members == "bundled",
        }
    raise InvalidParameterError(f"not a Palm-API method: {method!r}; use {list(API_METHODS)}")


def api_deployment(
    c: SimulationConfig, rewards: FloatArray, settings: dict[str, object]
) -> tuple[Portfolio, BoundsPolicy]:
    """The portfolio and the policy a Palm-API arm serves.

    On the front: members ``m0``.. over traits ``t0``.. with ``rewards``, uniform default
    weights (the ``default`` method's). With ``members="bundled"``: the bundled portfolio and
    the bundled policy's default weights, and with ``settings["bounds"]`` its floors, caps and
    drift limit (its topic rule needs messages, which the simulator does not send).
    Exploration allowed; ``settings``' prior strength, ``min_events`` and ``max_step``. The
    ``learning:`` section states β and lapse as ``palm`` handles them and the half-life in
    the arm's clock (one second per step): ``never`` without one.
    """
    from ..policy import policy_from_data
    from ..portfolio.manifest import Portfolio

    d = c.n_traits
    bounds: list[dict[str, object]] = []
    if c.members == "bundled":
        portfolio, bundled_policy = _bundled()
        traits = list(portfolio.space.names)
        default = bundled_policy.default.as_dict()
        if settings["bounds"]:
            assert bundled_policy.spec is not None
            for rule in bundled_policy.spec.model_dump(mode="json", exclude_none=True)["bounds"]:
                keep = {k: rule[k] for k in ("min", "max", "max_l1_from_default") if k in rule}
                if keep and "when" not in rule:
                    bounds.append({"id": rule["id"], **keep})
    else:
        if settings["bounds"]:
            raise InvalidParameterError("the bundled policy's bounds need members='bundled'")
        traits = [f"t{k}" for k in range(d)]
        portfolio = Portfolio.from_rewards(
            traits, {f"m{k}": list(map(float, r)) for k, r in enumerate(rewards)}, name="simulate"
        )
        default = {t: 1.0 / d for t in traits}
        default[traits[-1]] = 1.0 - sum(1.0 / d for _ in traits[:-1])  # sums to 1 exactly
    if c.learn:
        beta: object = "learn" if c.palm_beta is None else c.palm_beta
        lapse: object = "learn" if c.palm_lapse is None else c.palm_lapse
    else:
        beta, lapse = 10.0, 0.05  # palm's fixed noise without learning
    half_life = "never" if c.half_life is None else c.half_life / 86400.0
    if settings["min_events"]:
        bounds.append({"id": "min-evidence", "min_events": settings["min_events"]})
    if settings["max_step"] is not None:
        bounds.append({"id": "max-step", "max_step": settings["max_step"]})
    policy = policy_from_data(
        {
            "version": 2,
            "name": "simulate",
            "traits": traits,
            "defaults": {"weights": default, "prior_strength": settings["prior_strength"]},
            "personalization": True,
            "exploration": True,
            "learning": {"beta": beta, "lapse": lapse, "half_life_days": half_life},
            "bounds": bounds,
        },
        "<simulate>",
    )
    return portfolio, policy


class _StepClock:
    """The Palm-API arms' clock: one second per simulated step (``t``), whatever the wall
    clock does, so forgetting counts events as ``palm``'s ``half_life`` does."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return 1_700_000_000.0 + self.t


def _run_api(
    c: SimulationConfig,
    fb: Feedback,
    R: FloatArray,
    users: FloatArray,
    shifted: FloatArray,
    coins: FloatArray,
    settings: dict[str, object],
    mi: int,
    out: tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray],
    progress: bool,
) -> tuple[ApiFit, list[float]]:
    """One Palm-API arm: the real ``Palm`` (MemoryStore, injected clock, ``random_state``)
    driven only through its public API, users in lock step as for the other methods.

    Per user and step: regret, weight error and coverage of what ``palm.route`` (no draw, no
    writes) and ``palm.profile`` say; then ``palm.decide`` (Thompson within the cost bound, as
    the README serves) picks the member shown; thumbs: a ``Thumb`` on that decision; pairwise:
    ``palm.compare_candidates(user, served=member)`` names the second member and the user's
    answer is a ``Pairwise``; on ``ComparisonUnavailable`` (no member within ``pair_cost``)
    the app asks no A/B question and the served reply gets a ``Thumb`` (``pair_fallback``,
    what the README advises) or nothing (``"none"``). The user's coin flips are the other
    methods' (common random numbers). Fills row ``mi`` of ``out`` (regret, shown, weight
    error, coverage, asked, pair_max); returns the final population fit and the times (s) of
    ``record_feedback``.
    """
    from tqdm import tqdm

    from ..exceptions import ComparisonUnavailable
    from ..pipeline import Palm
    from ..preferences.events import Pairwise, Thumb
    from ..stores.memory import MemoryStore

    U, T = c.n_users, c.n_events
    regret, shown, werr, cover, asked, pair_max = out
    portfolio, policy = api_deployment(c, R, settings)
    ref_point = R.mean(axis=0)
    clock = _StepClock()
    store = MemoryStore()
    palm = Palm(
        portfolio, policy, store, mode="thompson", embedder=None, n_particles=c.n_particles,
        explore_cost=c.explore_cost, pair_cost=c.pair_cost if c.bound_pairs else 1.0,
        population=bool(settings["population"]), salt=b"simulate",
        clock=clock,
        random_state=np.random.default_rng([c.seed, 77, mi, 0 if fb == "pairwise" else 1]),
    )  # fmt: skip
    times: list[float] = []
    w_now = users
    label = f"{METHODS[mi]} {fb}"
    bar = tqdm(range(T + 1), desc=label, disable=None if progress else True, leave=False)
    for t in bar:
        clock.t = float(t)
        if c.shift and t == T // 2:
            w_now = shifted
        vals = w_now @ R.T
        opt = vals.max(axis=1, keepdims=True)
        rel = (opt - vals) / opt  # regret of each member, relative to the best
        for u in range(U):
            user, w = f"user-{u}", w_now[u]
            regret[mi, u, t] = rel[u, portfolio.index(palm.route(user).member)]
            prof = palm.profile(user, recent=0)
            mean = np.array([prof.weights[n] for n in portfolio.space.names])
            lo = np.array([prof.lower[n] for n in portfolio.space.names])
            hi = np.array([prof.upper[n] for n in portfolio.space.names])
            werr[mi, u, t] = 0.5 * np.abs(mean - w).sum()
            cover[mi, u, t] = float(np.mean((w >= lo) & (w <= hi)))
            if t == T:
                continue
            decision = palm.decide(user)
            served = decision.member
            i = portfolio.index(served)
            event: Thumb | Pairwise
            other: str | None = None
            if fb == "pairwise":
                try:
                    other = palm.compare_candidates(user, served=served)[1]
                except ComparisonUnavailable:
                    other = None  # no A/B question this step
                asked[mi, u, t] = float(other is not None)
            if other is None:  # thumbs, or no pair within the bound
                shown[mi, u, t] = rel[u, i]
                if fb == "pairwise" and c.pair_fallback == "none":
                    continue
                y = _fb(c, w, R[i] - ref_point, coins[u, t])
                event = Thumb(up=y > 0, decision_id=decision.decision_id)
            else:
                j = portfolio.index(other)
                y = _fb(c, w, R[i] - R[j], coins[u, t])
                win, lose = (served, other) if y > 0 else (other, served)
                event = Pairwise(winner=win, loser=lose)
                shown[mi, u, t] = 0.5 * (rel[u, i] + rel[u, j])
                pair_max[mi, u, t] = max(rel[u, i], rel[u, j])
            t0 = time.perf_counter()
            palm.record_feedback(user, event)
            times.append(time.perf_counter() - t0)
    pop = palm.population_prior()
    beta, lapse = pop.noise.mean()
    palm.store.close()
    return ApiFit(float(beta), float(lapse), np.asarray(pop.alpha, dtype=np.float64)), times


def pool(results: Sequence[SimulationResult]) -> SimulationResult:
    """One result over the users of independent replicates (runs that differ only in ``seed``).

    Each replicate draws its own members, users, population and coin flips, so pooling averages
    over portfolios as well as users: the targets' intervals (users resampled) then rest on
    ``len(results) * n_users`` users. Replicates must agree on everything but the seed.
    """
    if not results:
        raise InvalidParameterError("pool: no results")
    first = results[0].config
    for r in results[1:]:
        if replace(r.config, seed=first.seed) != first:
            raise InvalidParameterError("pool: replicates differ in more than the seed")
    out = SimulationResult(
        config=replace(first, n_users=first.n_users * len(results)), rewards=results[0].rewards
    )
    for fb in results[0].regret:
        per_user = np.concatenate([r.per_user[fb] for r in results], axis=1)
        n = per_user.shape[1]
        out.per_user[fb] = per_user
        out.regret[fb] = per_user.mean(axis=1)
        out.regret_se[fb] = per_user.std(axis=1, ddof=1) / np.sqrt(n)
        # replicates have equal user counts: their means average to the pooled mean
        for name in ("shown", "weight_error", "coverage"):
            getattr(out, name)[fb] = np.mean([getattr(r, name)[fb] for r in results], axis=0)
        out.update_ms[fb] = {
            k: np.concatenate([r.update_ms[fb][k] for r in results])
            for k in results[0].update_ms[fb]
        }
        fits = np.array([r.noise_fit[fb] for r in results])
        out.noise_fit[fb] = (float(fits[:, 0].mean()), float(fits[:, 1].mean()))
        if all(fb in r.prior_fit for r in results):
            out.prior_fit[fb] = np.mean([r.prior_fit[fb] for r in results], axis=0)
        if all(fb in r.api_fit for r in results):
            out.api_fit[fb] = {
                m: ApiFit(
                    float(np.mean([r.api_fit[fb][m].beta for r in results])),
                    float(np.mean([r.api_fit[fb][m].lapse for r in results])),
                    np.mean([r.api_fit[fb][m].alpha for r in results], axis=0),
                )
                for m in results[0].api_fit[fb]
            }
        if all(fb in r.asked for r in results):
            out.asked[fb] = np.mean([r.asked[fb] for r in results], axis=0)
            out.pair_max[fb] = np.concatenate([r.pair_max[fb] for r in results], axis=1)
    return out


def _fb(c: SimulationConfig, w: FloatArray, delta: FloatArray, coins: FloatArray) -> int:
    """A ±1 label: Bradley-Terry on w·delta at the true β, flipped with probability noise
    (``coins``: the user's two uniform draws for this step)."""
    y = 1 if coins[0] < _sigmoid(c.beta * float(w @ delta)) else -1
    return -y if coins[1] < c.noise else y


def with_setting(base: SimulationConfig, name: str) -> SimulationConfig:
    """``base`` changed as the named setting of :data:`SETTINGS` says."""
    if name not in SETTINGS:
        raise InvalidParameterError(f"unknown setting {name!r}; settings: {sorted(SETTINGS)}")
    return replace(base, **SETTINGS[name])  # type: ignore[arg-type]


def format_table(result: SimulationResult, steps: Sequence[int] = (5, 10, 20, 50, 100)) -> str:
    """Plain-text tables: regret of the mean route and of what is shown, coverage, update time."""
    lines = []
    for fb, reg in result.regret.items():
        steps_ = [s for s in steps if s < reg.shape[1]]
        lines.append(f"{fb}: mean-route regret, % of oracle value (± s.e.), after N events")
        lines.append(
            f"  {'method':<17}"
            + "".join(f"{'N=' + str(s):>15}" for s in steps_)
            + f"{'shown':>8}{'cov90':>7}{'upd ms':>8}{'p99':>7}"
        )
        for mi, m in enumerate(METHODS):
            if not result.ran(fb, m):
                continue
            cells = "".join(
                f"{100 * reg[mi, s]:>8.2f} ± {100 * result.regret_se[fb][mi, s]:4.2f}"
                for s in steps_
            )
            sh = 100 * float(np.nanmean(result.shown[fb][mi, :-1]))
            cov = result.coverage[fb][mi, 1:]
            cv = float(np.nanmean(cov)) if np.any(np.isfinite(cov)) else float("nan")
            mean_ms, p99 = result.update_stats(fb, m)
            lines.append(f"  {m:<17}{cells}{sh:>8.2f}{100 * cv:>7.1f}{mean_ms:>8.3f}{p99:>7.3f}")
        if fb in result.noise_fit:
            bt, lp = result.noise_fit[fb]
            lines.append(f"  palm learned beta ≈ {bt:.1f}, lapse ≈ {lp:.2f} (population mean)")
        for m, fit in result.api_fit.get(fb, {}).items():
            lines.append(
                f"  {m} learned beta ≈ {fit.beta:.1f}, lapse ≈ {fit.lapse:.2f} (served prior)"
            )
    return "\n".join(lines)


def targets(
    result: SimulationResult, fb: Feedback, method: str = "palm"
) -> dict[str, float | bool]:
    """Issue 17's targets for ``method`` (``palm`` or a Palm-API arm) under ``fb``: t=20 regret
    vs the reference, the worst excess over no personalization at t >= 5, and the mean 90%
    coverage (steps 1..T).

    With per-user results, also how sure each comparison is (users are the unit; palm and the
    reference see the same users and coin flips): a 90% bootstrap interval of the t=20 ratio
    (2000 resamples of users, fixed seed) and the paired standard error of the worst excess.
    """
    reg = result.regret[fb]
    pm = METHODS.index(method)
    t20 = min(20, reg.shape[1] - 1)
    ratio = float(reg[pm, t20] / max(reg[_REF, t20], 1e-12))
    diff = reg[pm, 5:] - reg[_DEFAULT, 5:]
    worst = int(np.argmax(diff)) + 5 if diff.size else 0
    excess = float(diff.max()) if diff.size else 0.0
    cov = float(np.mean(result.coverage[fb][pm, 1:]))
    out: dict[str, float | bool] = {
        "t20_vs_reference": ratio,
        "t20_ok": bool(reg[pm, t20] <= 1.1 * reg[_REF, t20] + 1e-12),
        "max_excess_over_default": excess,
        "worst_step": float(worst),
        "never_worse_ok": excess <= 0.0,
        "coverage": cov,
        "coverage_ok": 0.85 <= cov <= 0.95,
    }
    per_user = result.per_user.get(fb)
    if per_user is not None and per_user.shape[1] > 1:
        n = per_user.shape[1]
        idx = np.random.default_rng(0).integers(0, n, size=(2000, n))
        palm, ref = (
            per_user[pm, :, t20][idx].mean(axis=1),
            per_user[_REF, :, t20][idx].mean(axis=1),
        )
        ratios = palm / np.maximum(ref, 1e-12)
        out["t20_ratio_lo"], out["t20_ratio_hi"] = (
            float(x) for x in np.percentile(ratios, [5, 95])
        )
        d = per_user[pm, :, worst] - per_user[_DEFAULT, :, worst]
        out["excess_se"] = float(d.std(ddof=1) / np.sqrt(n))
    return out


def plot_result(result: SimulationResult, path: str | Path, title: str = "") -> None:
    """Regret curves per method (solid: mean route; dashed: shown), one panel per feedback."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fbs = list(result.regret)
    fig, axes = plt.subplots(1, len(fbs), figsize=(6 * len(fbs), 4), squeeze=False)
    for ax, fb in zip(axes[0], fbs):
        reg = 100 * result.regret[fb]
        se = 100 * result.regret_se[fb]
        x = np.arange(reg.shape[1])
        for mi, m in enumerate(METHODS):
            if not result.ran(fb, m):
                continue
            (line,) = ax.plot(x, reg[mi], label=m)
            ax.fill_between(x, reg[mi] - se[mi], reg[mi] + se[mi], alpha=0.2)
            if m in ("bandit", "reference", "palm", *API_METHODS):
                ax.plot(x, 100 * result.shown[fb][mi], ls="--", color=line.get_color(), lw=1)
        ax.set_title(f"{title} {fb} (dashed: regret of what is shown)".strip())
        ax.set_xlabel("events per user")
        ax.set_ylabel("mean regret (% of oracle value)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
