"""The population prior: fitted from users' aggregates, shrunk, one user's influence bounded."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import digamma
from scipy.stats import beta as beta_dist

from palm_middleware import InvalidParameterError, Pairwise, Palm, SQLiteStore
from palm_middleware.preferences.events import Observation
from palm_middleware.preferences.model import PreferenceModel
from palm_middleware.preferences.noise import DEFAULT_BETAS, DEFAULT_LAPSES, NoiseGrid
from palm_middleware.preferences.population import (
    STRENGTH_MULTIPLES,
    Population,
    dirichlet_at_total,
    dirichlet_from_mean_log,
    strength_candidates,
)

from ..test_pipeline import POLICY, PORTFOLIO, Clock

GRID = NoiseGrid(DEFAULT_BETAS, (0.1,))
ALPHA0 = np.ones(4)


def test_dirichlet_fit_recovers_alpha_from_mean_log() -> None:
    for a in (0.3, 1.0, 5.0):
        alpha = np.full(4, a)
        s = digamma(alpha) - digamma(alpha.sum())
        np.testing.assert_allclose(dirichlet_from_mean_log(s, np.ones(4)), alpha, rtol=1e-4)


def test_peaked_users_make_a_peaked_prior_and_few_users_stay_near_the_default() -> None:
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.full(4, 0.3), size=400)
    pop = Population(n_min=20, max_strength=4.0)
    for u in range(3):
        pop.observe(str(u), np.log(np.clip(w[u], 1e-4, 1)), GRID.p)
    few = pop.prior(ALPHA0, GRID)
    assert few.n_users == 3 and few.strength > 2.0  # mostly the default Dirichlet(1)
    for u in range(400):
        pop.observe(str(u), np.log(np.clip(w[u], 1e-4, 1)), GRID.p)
    many = pop.prior(ALPHA0, GRID)
    assert many.n_users == 400 and many.strength < 0.6 * few.strength


def test_one_users_influence_is_bounded() -> None:
    """Adding any one user moves the grid probabilities by <= 1/(N + n_min) (total variation)
    and the mean-log statistic by <= ln(1/clip)/(N + n_min) per trait."""
    rng = np.random.default_rng(1)
    pop = Population(n_min=20, clip=1e-4)
    n = 30
    for u in range(n):
        pop.observe(str(u), np.log(rng.dirichlet(np.ones(4))), rng.dirichlet(np.ones(GRID.size)))
    s0, p0, _ = pop.statistics(ALPHA0, GRID)
    extreme_q = np.zeros(GRID.size)
    extreme_q[-1] = 1.0
    pop.observe("outlier", np.array([0.0, -1e9, -1e9, 0.0]), extreme_q)
    s1, p1, n1 = pop.statistics(ALPHA0, GRID)
    assert n1 == n + 1
    assert 0.5 * np.abs(p1 - p0).sum() <= 1 / (n + 1 + 20) + 1e-12
    assert np.abs(s1 - s0).max() <= math.log(1e4) / (n + 1 + 20) + 1e-12
    pop.remove("outlier")
    s2, p2, _ = pop.statistics(ALPHA0, GRID)
    np.testing.assert_allclose(p2, p0)
    np.testing.assert_allclose(s2, s0)


def test_lapse_em_moves_toward_the_users_evidence() -> None:
    pop = Population(n_min=5)
    le = np.array([-30.0, -10.0, -3.0, 0.0, -2.0])  # every user's data favour lapse 0.2
    for u in range(50):
        pop.observe(str(u), np.log(np.full(4, 0.25)), GRID.p, le)
    lapses = []
    for _ in range(5):
        prior = pop.prior(ALPHA0, GRID, DEFAULT_LAPSES)
        lapses.append(prior.noise.lapses[0])
    start = float(np.mean(DEFAULT_LAPSES))  # the uniform start
    assert lapses[0] > start + 0.03 and lapses[-1] == pytest.approx(0.2, abs=0.03)
    assert len(prior.lapse_probs) == len(DEFAULT_LAPSES)


def _model(strength: float, obs: list[Observation], n: int = 4096) -> PreferenceModel:
    return PreferenceModel(
        prior_mean=[0.5, 0.5],
        prior_strength=strength,
        beta=10.0,
        lapse=0.05,
        n_particles=n,
        random_state=0,
    ).fit(obs)


def test_strength_evidence_is_the_marginal_likelihood_ratio() -> None:
    """Two traits: the marginal likelihood under a Beta(s/2, s/2) prior by quadrature, also at
    a quarter of the current concentration (where the posterior particles alone give an
    infinite-variance estimate biased toward the current prior)."""
    obs = [Observation.compare([0.6, -0.6], +1), Observation.compare([0.5, -0.5], +1)]

    def log_marginal(s: float) -> float:
        def f(w1: float) -> float:
            z = 10.0 * (2 * w1 - 1)
            like = np.prod([0.05 + 0.9 / (1 + np.exp(-z * v)) for v in (0.6, 0.5)])
            return float(beta_dist.pdf(w1, s / 2, s / 2) * like)

        return math.log(quad(f, 0, 1, points=[0.5], limit=200)[0])

    m = _model(2.0, obs)
    ev = m.strength_evidence([0.5, 1.2, 2.0, 8.0])
    assert ev[2] == pytest.approx(0.0, abs=1e-6)  # the current prior against itself
    expected = [log_marginal(s) - log_marginal(2.0) for s in (0.5, 1.2, 8.0)]
    # Monte Carlo error (1024 draws beside the particles): ~0.05 nats at s = 0.5 over seeds
    np.testing.assert_allclose(ev[[0, 1, 3]], expected, atol=0.1)
    np.testing.assert_allclose(ev[[1, 3]], expected[1:], atol=0.05)
    assert np.all(_model(2.0, []).strength_evidence([0.5, 8.0]) == 0)  # no feedback: no evidence


def test_strength_evidence_draws_follow_the_observations_and_the_particles() -> None:
    """The draws' likelihood columns are extended event by event: they must equal a direct
    computation, and the evidence a recomputation with the same draws, after in-place events
    and in a model with other particles; asking for the evidence changes none of the model's
    own draws."""

    def check(m: Any) -> None:
        ev = m.strength_evidence(strengths)
        d = m.__dict__["_ev_draws"]
        # (single-precision likelihood: columns computed in another batch differ by ~1e-7)
        np.testing.assert_allclose(d.cols, m._loglik(np.exp(d.logy), m._obs, d.g), atol=1e-5)
        # the same draws, every column computed at once
        m.__dict__["_ev_draws"] = dataclasses.replace(d, cols=d.cols[:, :0], seen=[], obs=None)
        np.testing.assert_allclose(m.strength_evidence(strengths), ev, atol=1e-5)

    strengths = [0.5, 1.0, 2.0, 4.0, 8.0]
    obs = [Observation.compare([0.6, -0.6], +1)]
    m = _model(2.0, obs, n=512)
    twin = _model(2.0, obs, n=512)
    check(m)
    for v in (0.5, -0.4, 0.3):  # in place: new weights and columns
        m.partial_fit([Observation.compare([v, -v], +1)])
        twin.partial_fit([Observation.compare([v, -v], +1)])
        check(m)
    np.testing.assert_array_equal(m.particles_, twin.particles_)
    np.testing.assert_array_equal(m.weights_, twin.weights_)
    check(_model(2.0, obs + [Observation.compare([0.2, -0.2], -1)] * 3, n=512))


def relative_log_marginals(vy: Any, strengths: list[float], current: float = 2.0) -> list[float]:
    """Two traits, comparisons [v, −v] answered y (``vy`` = v·y; β = 10, 5 % lapses): the log
    marginal likelihood under a Beta(s/2, s/2) prior by quadrature, at each s in ``strengths``,
    relative to s = ``current``."""

    def log_marginal(s: float) -> float:
        def f(w1: float) -> float:
            lik = 0.05 + 0.9 / (1 + np.exp(-10.0 * (2 * w1 - 1) * vy))
            return float(beta_dist.pdf(w1, s / 2, s / 2) * np.prod(lik))

        return math.log(quad(f, 0, 1, limit=200)[0])

    return [log_marginal(s) - log_marginal(current) for s in strengths]


def test_strength_evidence_drawn_in_batches_stays_near_the_truth_after_many_events() -> None:
    """The feedback path's rule (``budget``: at most 256 new draws per event, each batch from
    the mixture placed at that event's posterior, kept for the events after): after 30 events
    one at a time, within 0.15 nats of the quadrature marginal likelihood at every candidate,
    and within 0.2 nats of an estimate from 1024 fresh draws (the two estimates' Monte Carlo
    errors are each ~0.05 nats here). A renewal draws all 1024 at once."""
    strengths = [0.5, 1.2, 2.0, 8.0]
    for seed in (0, 2):
        rng = np.random.default_rng(seed)
        vs = rng.uniform(0.1, 0.8, 30) * rng.choice([-1, 1], 30)
        ys = [1 if rng.random() < 0.05 + 0.9 / (1 + math.exp(-4 * v)) else -1 for v in vs]
        m = _model(2.0, [], n=512)
        counts = []
        for v, y in zip(vs, ys, strict=True):
            m.partial_fit([Observation.compare([v, -v], y)])
            ev = m.strength_evidence(strengths, budget=256)
            counts.append(m.__dict__["_ev_draws"].logy.shape[0])
        assert counts[:5] == [256, 512, 768, 1024, 1024]

        truth = relative_log_marginals(vs * np.asarray(ys), strengths)
        np.testing.assert_allclose(ev, truth, atol=0.15)
        m.__dict__.pop("_ev_draws")
        np.testing.assert_allclose(ev, m.strength_evidence(strengths), atol=0.2)
        m.reprior(np.array([0.6, 0.6]))  # a renewal (the prior changed) draws all at once
        m.strength_evidence(strengths, budget=256)
        assert m.__dict__["_ev_draws"].logy.shape[0] == 1024


def _answered(
    rng: np.random.Generator,
    rewards: Any,
    pairs: list[tuple[int, int]],
    user_alpha: Any,
    prior_mean: Any,
    prior_strength: float,
) -> list[PreferenceModel]:
    """60 users with w ~ Dirichlet(user_alpha), 30 pairwise answers each (β = 10, 5 %
    lapses, both known to the model), each user's posterior under the given prior."""
    models = []
    for u, w in enumerate(rng.dirichlet(user_alpha, size=60)):
        obs = []
        for t in range(30):
            i, j = pairs[rng.integers(len(pairs))]
            delta = rewards[i] - rewards[j]
            p_win = 0.05 + 0.9 / (1 + math.exp(-10.0 * float(w @ delta)))
            obs.append(Observation.compare(delta, +1 if rng.random() < p_win else -1, ts=t))
        models.append(
            PreferenceModel(
                prior_mean=prior_mean,
                prior_strength=prior_strength,
                beta=10.0,
                lapse=0.05,
                n_particles=512,
                random_state=u,
            ).fit(obs)
        )
    return models


def test_the_concentration_is_recovered_from_a_synthetic_population() -> None:
    """Users with known Dirichlet(a) weights give 30 pairwise answers each (β = 10, 5% lapses,
    both known); from the Dirichlet(1) default, refits (each users' aggregates, the prior, every
    posterior re-priored) reach the truth within 4 refreshes, up to the shrinkage toward the
    default (n_min = 5 of 65): Σα 1.2 (a = 0.3, peaked) and 4 (a = 1)."""
    rng = np.random.default_rng(3)
    rewards = rng.random((6, 4))
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    for a, lo, hi in ((0.3, 0.8, 2.0), (1.0, 2.8, 5.0)):
        pop = Population(n_min=5)
        alpha0 = np.ones(4)
        models = _answered(rng, rewards, pairs, np.full(4, a), alpha0 / 4, 4.0)
        fits = []
        for _ in range(4):
            for u, m in enumerate(models):
                pop.observe(
                    str(u),
                    m.mean_log_weights(),
                    m.noise_posterior(),
                    None,
                    m.strength_evidence(strength_candidates(4.0)),
                )
            prior = pop.prior(alpha0, NoiseGrid.fixed(10.0, 0.05))
            fits.append(prior.strength)
            for m in models:
                m.reprior(prior.alpha)
        assert lo < fits[-1] < hi, fits


def test_dispersed_users_widen_the_prior_and_concentrated_evidence_never_narrows_it() -> None:
    strengths = np.asarray(strength_candidates(4.0))
    like_default = np.full(4, digamma(1.0) - digamma(4.0))  # mean log w of Dirichlet(1) users
    wide = -((np.log(strengths) - math.log(1.0)) ** 2)  # each user's evidence peaks at 1
    pop = Population(n_min=20)
    for u in range(180):
        pop.observe(str(u), like_default, GRID.p, None, wide)
    prior = pop.prior(ALPHA0, GRID)
    # posterior mean at log 1 (the prior over candidates around the default moves it by
    # ~0.003), shrunk by 20 of 200 pseudo-users toward log 4 (the default)
    assert prior.strength == pytest.approx(math.exp(0.1 * math.log(4.0)), rel=5e-3)
    narrow = -((np.log(strengths) - math.log(16.0)) ** 2)  # evidence for 4x the default
    for u in range(180):
        pop.observe(str(u), like_default, GRID.p, None, narrow)
    assert pop.prior(ALPHA0, GRID).strength == pytest.approx(4.0, rel=1e-3)  # the EM's


@pytest.mark.timeout(30)
def test_evidence_that_barely_tells_the_candidates_apart_leaves_the_default() -> None:
    """As after users' first thumbs: the candidates are symmetric around the default, so the
    fit stays there (with 1/8x to 4x it went to 0.84x, Σα 3.4 for 4, and stayed)."""
    xs = np.log(np.asarray(STRENGTH_MULTIPLES))
    np.testing.assert_allclose(xs, -xs[::-1], atol=1e-12)
    like_default = np.full(4, digamma(1.0) - digamma(4.0))
    pop = Population(n_min=20)
    for u in range(100):  # a faint tilt, half the users each way
        pop.observe(str(u), like_default, GRID.p, None, (-1) ** u * 1e-3 * xs)
    assert pop.prior(ALPHA0, GRID).strength == pytest.approx(4.0, rel=1e-3)


@pytest.mark.timeout(30)
def test_the_evidence_undoes_its_own_widening_up_to_the_default() -> None:
    """Users whose posteriors still repeat a too-wide prior (mean log w of a Dirichlet(0.5)
    each: the mean-log EM step says Σα 2) but whose evidence says 4: back at 4. Evidence for
    16 stops at the default (the evidence never narrows past it and the EM's). With the EM's
    concentration as the limit both stayed at 2: a noisy fit could only ratchet down."""
    strengths = np.asarray(strength_candidates(4.0))
    like_wide = np.full(4, digamma(0.5) - digamma(2.0))
    for peak in (4.0, 16.0):
        pop = Population(n_min=20)
        ev = -((np.log(strengths) - math.log(peak)) ** 2)
        for u in range(100):
            pop.observe(str(u), like_wide, GRID.p, None, ev)
        assert pop.prior(ALPHA0, GRID).strength == pytest.approx(4.0, rel=1e-3)
    pop = Population(n_min=20)
    for u in range(100):  # evidence for 1 (wider than the EM's 2): followed, shrunk
        pop.observe(str(u), like_wide, GRID.p, None, -((np.log(strengths) - math.log(1.0)) ** 2))
    assert pop.prior(ALPHA0, GRID).strength == pytest.approx(4.0 ** (20 / 120), rel=5e-3)


@pytest.mark.timeout(120)
def test_the_concentration_recovers_from_a_too_wide_prior() -> None:
    """Dirichlet(1) users (true Σα 4) whose prior was fitted too wide (Σα 2, as a run of
    noisy fits left K = 10 thumbs at 2.9): 30 pairwise answers each (β = 10, 5% lapses, both
    known), refits from the users' real aggregates (each posterior re-priored in place) bring
    it back within (3.5, 5.0) at the first refresh and keep it there (with the EM's
    concentration as the limit it climbed one EM step per refresh: 2.35, 2.69, 3.01, 3.31)."""
    rng = np.random.default_rng(5)
    rewards = rng.random((6, 4))
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    pop = Population(n_min=5)
    models = _answered(rng, rewards, pairs, np.ones(4), np.full(4, 0.25), 2.0)
    fits = []
    for _ in range(4):
        for u, m in enumerate(models):
            ev = m.strength_evidence(strength_candidates(4.0))
            pop.observe(str(u), m.mean_log_weights(), m.noise_posterior(), None, ev)
        prior = pop.prior(ALPHA0, NoiseGrid.fixed(10.0, 0.05))
        fits.append(prior.strength)
        for m in models:
            m.reprior(prior.alpha)
    assert all(3.5 < f < 5.0 for f in fits), fits


def test_population_validation() -> None:
    with pytest.raises(InvalidParameterError, match="n_min"):
        Population(n_min=0)
    with pytest.raises(InvalidParameterError, match="clip"):
        Population(clip=2.0)


def test_palm_counts_users_who_give_feedback_but_never_opted_out_ones(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "p.db")
    palm = Palm(PORTFOLIO, POLICY, store, clock=Clock(), random_state=0, n_particles=256)
    assert palm.population_prior().n_users == 0  # the policy default
    for user in ("ann", "ben", "cat"):
        palm.record_feedback(user, Pairwise(winner="terse", loser="thorough"))
    pop = palm._profiles.learning.population
    assert pop is not None and len(pop) == 3
    palm.set_opt_out("ben")
    assert len(pop) == 2
    palm.record_feedback("ben", Pairwise(winner="terse", loser="careful"))
    assert len(pop) == 2  # still opted out: never counted
    palm.reset("ann")
    palm.forget("cat")
    assert len(pop) == 0
    state = store.get_profile(palm.user_key("ben")).state  # type: ignore[union-attr]
    assert set(state["population"]) == {
        "mean_log",
        "noise",
        "lapse",
        "strength",
    }  # aggregates, no events
    store.close()


def test_population_prior_is_refit_after_the_update_never_inside_its_transaction(
    tmp_path: Path,
) -> None:
    """A refit costs milliseconds: it must not hold the store's write lock (SQLite here)."""
    store = SQLiteStore(tmp_path / "p.db")
    palm = Palm(PORTFOLIO, POLICY, store, clock=Clock(), random_state=0, n_particles=256)
    learning = palm._profiles.learning
    learning.refresh_every = 2
    pop = learning.population
    assert pop is not None
    fit = pop.prior
    in_transaction: list[bool] = []

    def spy(*args: Any, **kw: Any) -> Any:
        in_transaction.append(store._pool.get().in_transaction)
        return fit(*args, **kw)

    pop.prior = spy  # type: ignore[method-assign]
    for i in range(8):
        palm.record_feedback(f"u{i}", Pairwise(winner="terse", loser="thorough"))
        revision, _ = learning._pop[palm.policy.version]
        assert pop.revision - revision < learning.refresh_every  # fresh for the next update
    assert len(in_transaction) >= 4 and not any(in_transaction)
    store.close()


def test_palm_fixed_noise_and_bad_values(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "p.db")
    palm = Palm(PORTFOLIO, POLICY, store, beta=10.0, lapse=0.05, population=False)
    assert palm.population_prior().noise == NoiseGrid.fixed(10.0, 0.05)
    with pytest.raises(InvalidParameterError, match="beta"):
        Palm(PORTFOLIO, POLICY, store, beta="fast")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="explore_cost"):
        Palm(PORTFOLIO, POLICY, store, explore_cost=2.0)
    store.close()


def test_the_mean_at_a_given_concentration_is_the_em_step_over_the_mean() -> None:
    """``dirichlet_at_total``: at the joint fit's own concentration, the joint fit; at another,
    Σα is that concentration and ψ(α_j) − s_j is one constant (the EM step over the mean
    alone), which a rescaled joint fit is not."""
    alpha = np.array([3.0, 4.0, 1.0, 2.0])
    s = digamma(alpha) - digamma(alpha.sum())
    np.testing.assert_allclose(dirichlet_at_total(s, 10.0, alpha), alpha, rtol=1e-8)
    for total in (4.0, 40.0):
        a = dirichlet_at_total(s, total, alpha)
        assert a.sum() == pytest.approx(total)
        gap = digamma(a) - s
        np.testing.assert_allclose(gap, gap[0], atol=1e-8)
        rescaled = alpha * total / alpha.sum()
        assert np.ptp(digamma(rescaled) - s) > 0.05
