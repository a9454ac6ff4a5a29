"""Learning how noisy a user is: the (β, lapse) grid in the particle posterior."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from palm_middleware import InvalidParameterError
from palm_middleware.preferences.events import Observation
from palm_middleware.preferences.model import PreferenceModel
from palm_middleware.preferences.noise import DEFAULT_BETAS, NoiseGrid

UNIFORM = [0.25, 0.25, 0.25, 0.25]
REWARDS = np.random.default_rng(7).random((6, 4))


def observations(w: np.ndarray, beta: float, flips: float, n: int, seed: int) -> list[Observation]:
    """Pairwise choices of a user with weights ``w`` (Bradley-Terry at ``beta``, label flips)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        i, j = rng.choice(len(REWARDS), 2, replace=False)
        delta = REWARDS[i] - REWARDS[j]
        y = 1 if rng.random() < 1 / (1 + np.exp(-beta * w @ delta)) else -1
        out.append(Observation.compare(delta, -y if rng.random() < flips else y))
    return out


def model(noise: NoiseGrid | None = None, **kw: Any) -> PreferenceModel:
    return PreferenceModel(
        prior_mean=UNIFORM, prior_strength=4.0, noise=noise, n_particles=512, **kw
    )


def test_grid_validation_names_the_field() -> None:
    with pytest.raises(InvalidParameterError, match="betas"):
        NoiseGrid((0.0, 1.0))
    with pytest.raises(InvalidParameterError, match="lapses"):
        NoiseGrid((1.0,), (0.5,))
    with pytest.raises(InvalidParameterError, match="probs"):
        NoiseGrid((1.0, 2.0), (0.1,), (1.0,))
    with pytest.raises(InvalidParameterError, match="noise must be a NoiseGrid"):
        PreferenceModel(prior_mean=UNIFORM, noise="learn").fit([])  # type: ignore[arg-type]
    grid = NoiseGrid.centred(lapses=(0.1,), beta0=8.0)
    assert grid.betas == DEFAULT_BETAS and grid.lapses == (0.1,) and grid.size == len(DEFAULT_BETAS)
    assert int(np.argmax(grid.p)) == DEFAULT_BETAS.index(8.0)  # favours β near beta0
    assert NoiseGrid.fixed(3.0, 0.2).mean() == pytest.approx((3.0, 0.2))


@pytest.mark.parametrize("beta, low, high", [(2.0, 1.0, 5.0), (32.0, 12.0, 64.0)])
def test_each_user_learns_their_beta(beta: float, low: float, high: float) -> None:
    w = np.array([0.1, 0.2, 0.3, 0.4])
    m = model(NoiseGrid(DEFAULT_BETAS, (0.05,)), random_state=0).fit(
        observations(w, beta, 0.05, 150, seed=1)
    )
    learned, _ = m.noise_grid_.mean(m.noise_posterior())
    assert low <= learned <= high
    assert m.noise_posterior().sum() == pytest.approx(1.0)


def test_intervals_widen_when_users_are_noisier_than_assumed() -> None:
    """Data at β = 2: a model fixed at β = 10 is overconfident; the learned one is not."""
    w = np.array([0.1, 0.2, 0.3, 0.4])
    obs = observations(w, 2.0, 0.1, 60, seed=2)
    fixed = model(beta=10.0, lapse=0.1, random_state=0).fit(obs)
    learned = model(NoiseGrid(DEFAULT_BETAS, (0.1,)), random_state=0).fit(obs)
    width = [float(np.sum(hi - lo)) for lo, hi in (m.credible_interval() for m in (fixed, learned))]
    assert width[1] > 1.2 * width[0]


def test_lapse_evidence_prefers_the_true_flip_rate() -> None:
    w = np.array([0.1, 0.2, 0.3, 0.4])
    noisy = model(NoiseGrid.fixed(10.0, 0.1), random_state=0).fit(
        observations(w, 10.0, 0.3, 200, seed=3)
    )
    ev = noisy.lapse_evidence([0.01, 0.1, 0.3])
    assert ev[1] == pytest.approx(0.0, abs=1e-9)  # relative to the lapse it was fitted at
    assert ev[2] > ev[1] > ev[0]


def test_lapse_evidence_kept_per_event_equals_a_recompute() -> None:
    """The lapse sums kept across in-place updates (with forgetting, repeats, moves and
    dropped terms) equal a recompute from every stored observation."""
    w = np.array([0.1, 0.2, 0.3, 0.4])
    obs = observations(w, 10.0, 0.2, 80, seed=5)
    lapses = (0.01, 0.1, 0.3)
    m = model(
        NoiseGrid(DEFAULT_BETAS, (0.1,)),
        half_life=50.0,
        max_observations=8,
        ess_threshold=0.5,
        random_state=0,
    ).fit(obs[:5], now=5.0)
    m.lapse_evidence(lapses)  # from here on kept per event
    for t, o in enumerate(obs[5:] + obs[:10], start=6):
        m.partial_fit([o], now=float(t))
        kept = m.lapse_evidence(lapses)
        m.__dict__["_lapse_ev"] = None
        # (the logistic terms are float32: sums kept and recomputed agree to ~1e-8 by rounding;
        # seeds 0-7 differ by at most 2e-8)
        assert np.allclose(kept, m.lapse_evidence(lapses), atol=1e-7)
    assert m.n_moves_ > 0 and len(m._obs) == 8


def test_lapse_sums_kept_through_moves_equal_a_recompute() -> None:
    """Never recomputed in between: the per-particle lapse sums carried through fading,
    repeats, dropped terms, resampling and moves (the moved particles' sums come from the
    move's own logistic terms) equal Σ_j exps_j · (loglik_j at the lapse − loglik_j) computed
    from every observation, anchors (no lapse) mixed in."""
    w = np.array([0.1, 0.2, 0.3, 0.4])
    obs = observations(w, 10.0, 0.2, 70, seed=6)
    anchor = Observation.anchor(w, np.array([1.0, 0, 0, 0]), precision=50.0)
    lapses = (0.01, 0.1, 0.3)
    m = model(
        NoiseGrid(DEFAULT_BETAS, (0.1,)),
        half_life=40.0,
        max_observations=10,
        ess_threshold=0.6,
        random_state=1,
    ).fit(obs[:3] + [anchor], now=3.0)
    m.lapse_evidence(lapses)
    for t, o in enumerate(obs[3:] + obs[:8], start=4):
        m.partial_fit([o] if t % 9 else [o, anchor], now=float(t))
        kept = m._lapse_diffs(lapses)
        exact = np.stack(
            [(m._loglik(m.particles_, m._obs, lapse=x) - m._ll) @ m._exps for x in lapses]
        )
        # Single-precision logistic terms: ~1e-7 relative per term, whichever columns were
        # evaluated together.
        np.testing.assert_allclose(kept, exact, rtol=1e-5, atol=1e-5)
        fresh = m.copy()
        fresh.__dict__["_lapse_ev"] = None
        np.testing.assert_allclose(
            m.lapse_evidence(lapses), fresh.lapse_evidence(lapses), atol=1e-5
        )
    assert m.n_moves_ >= 5 and len(m._obs) == 10


def test_relapse_and_reprior_equal_a_refit() -> None:
    w = np.array([0.1, 0.2, 0.3, 0.4])
    obs = observations(w, 10.0, 0.1, 30, seed=4)
    moved = model(NoiseGrid.fixed(10.0, 0.1), random_state=0).fit(obs).relapse(0.25)
    refit = model(NoiseGrid.fixed(10.0, 0.25), random_state=1).fit(obs)
    assert np.abs(moved.predict() - refit.predict()).sum() < 0.06
    assert moved.noise_grid_.lapses == (0.25,)
    alpha = np.array([3.0, 1.0, 1.0, 1.0])
    reprior = model(NoiseGrid.fixed(10.0, 0.1), random_state=0).fit(obs).reprior(alpha)
    direct = PreferenceModel(
        prior_mean=alpha / alpha.sum(),
        prior_strength=6.0,
        beta=10.0,
        lapse=0.1,
        n_particles=512,
        random_state=1,
    ).fit(obs)
    assert np.abs(reprior.predict() - direct.predict()).sum() < 0.06
    with pytest.raises(InvalidParameterError, match="single lapse"):
        model(NoiseGrid((10.0,), (0.1, 0.2)), random_state=0).fit([]).relapse(0.2)


def test_query_second_pairs_the_served_member_with_an_informative_cheap_one() -> None:
    m = model(random_state=0).fit(observations(np.array([0.1, 0.2, 0.3, 0.4]), 10.0, 0.1, 10, 5))
    for served in range(len(REWARDS)):
        j = m.query_second(REWARDS, served)
        assert j != served and 0 <= j < len(REWARDS)
    with pytest.raises(InvalidParameterError, match="served"):
        m.query_second(REWARDS, 99)
