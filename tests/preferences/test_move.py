"""The particle move (resample, then one vectorized Metropolis-Hastings step) and the fast paths
of an in-place update: the exact posterior is kept, and seeded runs repeat exactly.

References are exact posteriors computed another way: a one-dimensional integral (a Beta
marginal times a Gaussian anchor) and importance sampling from the prior with 200,000 draws.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta as beta_dist

from palm_middleware import load_policy
from palm_middleware.data import bundled
from palm_middleware.preferences.events import Observation
from palm_middleware.preferences.model import PreferenceModel
from palm_middleware.preferences.noise import NoiseGrid
from palm_middleware.preferences.state import LearningState
from palm_middleware.stores.base import EventRecord, ProfileRecord

UNIFORM = np.full(4, 0.25)
REWARDS = np.random.default_rng(11).random((6, 4))
POLICY = load_policy(bundled("policy.yaml"))


def pairs(w: np.ndarray, n: int, seed: int, beta: float = 10.0) -> list[Observation]:
    """Pairwise choices of a user with weights ``w`` (Bradley-Terry at ``beta``)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        i, j = rng.choice(len(REWARDS), 2, replace=False)
        p = 1 / (1 + np.exp(-beta * w @ (REWARDS[i] - REWARDS[j])))
        out.append(Observation.compare(REWARDS[i] - REWARDS[j], 1 if rng.random() < p else -1))
    return out


def moved_many_times(m: PreferenceModel, times: int) -> PreferenceModel:
    for _ in range(times):
        m._rejuvenate()
    return m


def test_moves_keep_an_exact_one_dimensional_posterior() -> None:
    """Dirichlet(2.5, ..) prior, Gaussian anchor on the last trait: its posterior mean is a 1-D
    integral. A wrong proposal correction in the move (a sign, a missing density) shifts it."""
    obs = [Observation.anchor(np.array([0, 0, 0, 0.7]), np.array([0, 0, 0, 1.0]), precision=400)]
    x = np.linspace(1e-6, 1 - 1e-6, 200_001)
    dens = beta_dist.pdf(x, 2.5, 7.5) * np.exp(-200.0 * (x - 0.7) ** 2)
    exact = float((x * dens).sum() / dens.sum())
    for seed in range(3):
        m = PreferenceModel(prior_mean=UNIFORM, prior_strength=10.0, random_state=seed).fit(obs)
        assert m.n_moves_ > 0
        assert m.predict()[3] == pytest.approx(exact, abs=0.006)
        # Twenty more moves, nothing else: the posterior stays put (the kernel keeps it).
        assert moved_many_times(m, 20).predict()[3] == pytest.approx(exact, abs=0.006)


def test_moves_keep_the_posterior_over_weights_and_noise() -> None:
    """With a learned β, the move proposes w and the grid point together (independence draws
    carry a correction for both); the posterior of each must match importance sampling."""
    w_true = np.array([0.1, 0.2, 0.3, 0.4])
    obs = pairs(w_true, 25, seed=2)
    grid = NoiseGrid.centred(lapses=(0.1,))
    m = PreferenceModel(
        prior_mean=UNIFORM, prior_strength=4.0, noise=grid, n_particles=2048, random_state=0
    ).fit(obs)
    m = moved_many_times(m, 10)
    # Reference: 200,000 prior draws of (w, grid point), weighted by the likelihood.
    ref = PreferenceModel(
        prior_mean=UNIFORM, prior_strength=4.0, noise=grid, n_particles=200_000, random_state=9
    ).fit([])
    ll = ref._loglik(ref.particles_, obs) @ np.ones(len(obs))
    wts = np.exp(ll - ll.max())
    wts /= wts.sum()
    assert 1.0 / (wts @ wts) > 2000  # the reference itself is precise
    np.testing.assert_allclose(m.predict(), wts @ ref.particles_, atol=0.015)
    ref_noise = np.bincount(ref._g, weights=wts, minlength=grid.size)
    np.testing.assert_allclose(m.noise_posterior(), ref_noise, atol=0.04)


def test_single_precision_likelihood_matches_double() -> None:
    m = PreferenceModel(prior_mean=UNIFORM, noise=NoiseGrid.centred(), random_state=0).fit([])
    obs = pairs(np.array([0.4, 0.3, 0.2, 0.1]), 12, seed=1) + [
        Observation.compare(REWARDS[0] - REWARDS[1], 1, scale=3.0)
    ]
    got = m._loglik(m.particles_, obs)
    d = np.stack([o.vector * o.y * o.scale for o in obs], axis=1)
    z = (m.particles_ @ d) * m._gb[m._g][:, None]
    lapse = m._gl[m._g][:, None]
    exact = np.log(lapse + (1 - 2 * lapse) / (1 + np.exp(-z)))
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-6)


def test_same_seed_same_in_place_updates() -> None:
    """Two learning states fed the same events store identical profiles, moves included."""

    def run() -> list[dict[str, object]]:
        state = LearningState(half_life=30 * 86400.0, ess_threshold=0.5)  # moves often
        rng = np.random.default_rng(4)
        record: ProfileRecord | None = None
        out = []
        for i in range(60):
            a, b = rng.choice(len(REWARDS), 2, replace=False)
            ts = 1.7e9 + 60.0 * i
            y = 1 if rng.random() < 0.8 else -1
            obs = Observation.compare(REWARDS[a] - REWARDS[b], y, ts=ts)
            ev = EventRecord(f"e{i}", "u", "pairwise", {"obs": [obs.to_dict()]}, ts)
            st = state.rebuild(record, [ev], now=ts, policy=POLICY, limit=0.25)
            record = ProfileRecord("u", st, i + 1, ts)
            out.append(st["posterior"])
        entry = state._cache["u"]
        assert entry.model.n_moves_ > 0  # the run exercised the move
        return out

    assert run() == run()


def test_a_new_user_starts_from_the_same_prior_draw_as_a_fresh_fit() -> None:
    state = LearningState()
    fresh = state.model(POLICY).fit([])
    for _ in range(2):  # the first call draws and keeps the prior, the second copies it
        copy = state._prior_model(POLICY)
        np.testing.assert_array_equal(copy.particles_, fresh.particles_)
        np.testing.assert_array_equal(copy._g, fresh._g)
        assert copy._rng.random() == fresh.copy()._rng.random()
    copy.partial_fit(pairs(UNIFORM, 3, seed=0))  # updating a copy leaves the kept one alone
    np.testing.assert_array_equal(state._prior_model(POLICY).particles_, fresh.particles_)


def test_a_new_user_shares_the_prior_draws_caches_with_the_same_values() -> None:
    """With a population, the kept prior draw carries its sort order, moments and lapse sums to
    every copy: a new user's first event stores what a cold model does (the concentration
    evidence too: its draws are seeded by the particles and the user's likelihood)."""
    from palm_middleware.preferences.population import Population

    state = LearningState(population=Population())
    lapses, strengths = state._aggregates(POLICY)
    assert lapses is not None and strengths is not None
    obs = pairs(np.array([0.1, 0.2, 0.3, 0.4]), 1, seed=2)
    for _ in range(2):
        warm = state._prior_model(POLICY).partial_fit(obs)
        cold = state.model(POLICY).fit([]).partial_fit(obs)
        assert warm.__dict__["_sort"] is not None  # shared, not recomputed
        assert warm.summary().to_dict() == cold.summary().to_dict()
        np.testing.assert_allclose(warm.lapse_evidence(lapses), cold.lapse_evidence(lapses))
        np.testing.assert_allclose(
            warm.strength_evidence(strengths), cold.strength_evidence(strengths)
        )


def test_a_copy_shares_arrays_but_updates_never_reach_the_original() -> None:
    """Copies share the arrays a model only replaces; updating, fading, moving and re-priming
    a copy leaves every array and summary of the original as it was."""
    obs = pairs(np.array([0.1, 0.2, 0.3, 0.4]), 30, seed=9)
    m = PreferenceModel(
        prior_mean=UNIFORM, half_life=100.0, n_particles=256, ess_threshold=0.6, random_state=2
    ).fit([Observation.compare(o.vector, o.y, ts=float(t)) for t, o in enumerate(obs[:10])])
    m.lapse_evidence((0.05, 0.2))
    m.strength_evidence([2.0, 8.0])
    names = ("particles_", "_logw", "_llsum", "_exps", "_ll", "_g", "_gb", "_gl", "_alpha")
    before = {n: np.array(getattr(m, n), copy=True) for n in names}
    summary = m.summary().to_dict()
    lapse, strength = m.lapse_evidence((0.05, 0.2)), m.strength_evidence([2.0, 8.0])
    c = m.copy()
    for t, o in enumerate(obs[10:], start=10):
        c.partial_fit([Observation.compare(o.vector, o.y, ts=float(t))])
    c.fade_to(500.0).reprior(np.array([2.0, 1.0, 1.0, 1.0]))
    assert c.n_moves_ > m.n_moves_
    for n in names:
        np.testing.assert_array_equal(getattr(m, n), before[n])
    assert m.summary().to_dict() == summary
    np.testing.assert_array_equal(m.lapse_evidence((0.05, 0.2)), lapse)
    np.testing.assert_array_equal(m.strength_evidence([2.0, 8.0]), strength)


@pytest.mark.parametrize("d", [2, 3, 4, 7, 8, 11])
def test_row_reductions_of_the_move_equal_numpys(d: int) -> None:
    """The move's column-by-column row max and sum give numpy's numbers exactly (so seeded
    runs repeat those from before they were introduced)."""
    from palm_middleware.preferences.model import _row_max, _row_sum

    a = np.exp(np.random.default_rng(d).standard_normal((1024, d)) * 5)
    np.testing.assert_array_equal(_row_max(a), a.max(axis=1, keepdims=True))
    np.testing.assert_array_equal(_row_sum(a), a.sum(axis=1, keepdims=True))


def test_information_gain_about_the_best_member_equals_the_direct_sums() -> None:
    """P(best = b, y = 1) summed per member (bincounts) equals np.add.at's sums exactly."""
    from palm_middleware.preferences.model import _entropy, _sigmoid

    m = PreferenceModel(prior_mean=UNIFORM, n_particles=512, random_state=4).fit(
        pairs(np.array([0.1, 0.2, 0.3, 0.4]), 12, seed=5)
    )
    deltas = REWARDS[2] - REWARDS[[0, 1, 3, 4, 5]]
    z = (m.particles_ @ deltas.T) * m._gb[m._g][:, None]
    lapse = m._gl[m._g][:, None]
    p = lapse + (1 - 2 * lapse) * _sigmoid(z)
    w = m.weights_
    best = np.argmax(m.particles_ @ REWARDS.T, axis=1)
    mass = np.bincount(best, weights=w, minlength=int(best.max()) + 1)
    joint = np.zeros((mass.size, p.shape[1]))
    np.add.at(joint, best, w[:, None] * p)
    keep = mass > 0
    direct = _entropy(w @ p) - mass[keep] @ _entropy(joint[keep] / mass[keep, None])
    np.testing.assert_array_equal(m.information_gain(deltas, REWARDS), direct)


def test_running_likelihood_sum_stays_exact() -> None:
    """The per-particle Σ exponent · log-likelihood kept across events (forgetting, dropped
    terms, moves) equals a recomputation."""
    obs = pairs(np.array([0.2, 0.2, 0.3, 0.3]), 80, seed=3)
    m = PreferenceModel(
        prior_mean=UNIFORM, half_life=20.0, max_observations=16, ess_threshold=0.8, random_state=0
    ).fit([])
    for t, o in enumerate(obs):
        m.partial_fit([Observation.compare(o.vector, o.y, ts=float(t))])
        np.testing.assert_allclose(m._llsum, m._ll @ m._exps, rtol=1e-9, atol=1e-9)
    assert m.n_moves_ > 0 and len(m._obs) == 16
