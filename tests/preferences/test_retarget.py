"""The concentration evidence's draws re-targeted to a new prior (after a re-prior) instead of
drawn anew: the same estimate, within Monte Carlo error, as fresh draws and as quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import beta as beta_dist

from palm_middleware.preferences.events import Observation
from palm_middleware.preferences.model import PreferenceModel
from palm_middleware.preferences.noise import NoiseGrid

STRENGTHS = [0.5, 1.2, 2.0, 8.0]
BETAS = (3.0, 10.0, 30.0)
LAPSE = 0.05


def _answers(seed: int, n: int = 30) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    vs = rng.uniform(0.1, 0.8, n) * rng.choice([-1, 1], n)
    ys = [1 if rng.random() < LAPSE + 0.9 / (1 + math.exp(-4 * v)) else -1 for v in vs]
    return vs, ys


def _log_marginal(
    vy: np.ndarray, s: float, probs: tuple[float, ...], lapse: float = LAPSE
) -> float:
    """Two traits, comparisons [v, −v] answered y: log Σ_β π(β) ∫ Beta(w1; s/2, s/2) · lik."""

    def f(w1: float, b: float) -> float:
        lik = lapse + (1 - 2 * lapse) / (1 + np.exp(-b * (2 * w1 - 1) * vy))
        return float(beta_dist.pdf(w1, s / 2, s / 2) * np.prod(lik))

    return math.log(sum(p * quad(f, 0, 1, args=(b,), limit=200)[0] for b, p in zip(BETAS, probs)))


def _model(vs: np.ndarray, ys: list[int], probs: tuple[float, ...]) -> PreferenceModel:
    return PreferenceModel(
        prior_mean=[0.5, 0.5],
        prior_strength=2.0,
        noise=NoiseGrid(BETAS, (LAPSE,), probs),
        n_particles=1024,
        random_state=0,
        ess_threshold=0.05,
    ).fit([Observation.compare([v, -v], y) for v, y in zip(vs, ys, strict=True)])


@pytest.mark.timeout(120)
def test_retargeted_draws_match_quadrature_and_fresh_draws() -> None:
    """A re-prior that moves the concentration (2 → 1.4 and 2 → 3) and the grid probabilities:
    the same draws and columns, re-targeted, give the quadrature marginal likelihood at every
    candidate within 0.1 nats, as fresh draws do (Monte Carlo error ~0.05 nats at s = 0.5, in
    either: the re-targeted estimate keeps the first draws' error), and a fresh draw's estimate
    within 0.15 nats."""
    old = (0.2, 0.5, 0.3)
    for seed in (0, 1):
        vs, ys = _answers(seed)
        vy = vs * np.asarray(ys)
        m = _model(vs, ys, old)
        m.strength_evidence(STRENGTHS)
        for total, new in ((1.4, (0.3, 0.45, 0.25)), (3.0, (0.15, 0.5, 0.35))):
            c = m.copy().reprior(np.array([total / 2, total / 2]), np.array(new))
            before = c.__dict__["_ev_draws"]
            c.retarget_evidence()
            after = c.__dict__["_ev_draws"]
            assert after.logy is before.logy and after.cols is before.cols  # re-targeted
            ev = c.strength_evidence(STRENGTHS)
            assert c.__dict__["_ev_draws"].logy is after.logy  # and not drawn anew when asked
            truth = [_log_marginal(vy, s, new) - _log_marginal(vy, total, new) for s in STRENGTHS]
            np.testing.assert_allclose(ev, truth, atol=0.1)
            fresh = c.copy().renew_evidence()
            assert fresh.__dict__["_ev_draws"].logy is not before.logy
            np.testing.assert_allclose(fresh.strength_evidence(STRENGTHS), truth, atol=0.1)
            np.testing.assert_allclose(ev, fresh.strength_evidence(STRENGTHS), atol=0.15)


@pytest.mark.timeout(120)
def test_the_grid_ratio_is_what_keeps_retargeted_draws_unbiased() -> None:
    """Grid probabilities moved a lot (the draws' grid points came from the old ones): without
    the ratio of new to old grid probability in each draw's weight the estimate would be the
    old grid's (0.3-0.4 nats away at the extreme candidates); with it, the new grid's
    (quadrature within 0.08 nats)."""
    vs, ys = _answers(4)
    vy = vs * np.asarray(ys)
    old, new = (0.5, 0.3, 0.2), (0.2, 0.4, 0.4)
    m = _model(vs, ys, old)
    m.strength_evidence(STRENGTHS)
    c = m.copy().reprior(None, np.array(new)).retarget_evidence()
    ev = c.strength_evidence(STRENGTHS)
    assert c.__dict__["_ev_draws"].logy is m.__dict__["_ev_draws"].logy
    truth_new = [_log_marginal(vy, s, new) - _log_marginal(vy, 2.0, new) for s in STRENGTHS]
    truth_old = [_log_marginal(vy, s, old) - _log_marginal(vy, 2.0, old) for s in STRENGTHS]
    assert np.abs(np.subtract(truth_new, truth_old)).max() > 0.25  # the grids differ visibly
    np.testing.assert_allclose(ev, truth_new, atol=0.08)


@pytest.mark.timeout(120)
def test_a_new_lapse_rate_recomputes_the_columns_from_the_old() -> None:
    """A re-prior that also moves the population's lapse rate (``relapse``, as every refit of
    a learned lapse does): the same draws, their comparisons' columns equal to a direct
    computation at the new rate, and the evidence the quadrature's at that rate."""
    vs, ys = _answers(5)
    vy = vs * np.asarray(ys)
    m = _model(vs, ys, (0.2, 0.5, 0.3))
    m.strength_evidence(STRENGTHS)
    first = m.__dict__["_ev_draws"]
    c = m.copy().reprior(np.array([0.8, 0.8])).relapse(0.12).retarget_evidence()
    d = c.__dict__["_ev_draws"]
    assert d.logy is first.logy
    direct = c._loglik(np.exp(d.logy), c._obs, d.g)
    np.testing.assert_allclose(d.cols, direct, atol=1e-5)
    ev = c.strength_evidence(STRENGTHS)
    probs = (0.2, 0.5, 0.3)
    truth = [
        _log_marginal(vy, s, probs, 0.12) - _log_marginal(vy, 1.6, probs, 0.12) for s in STRENGTHS
    ]
    np.testing.assert_allclose(ev, truth, atol=0.1)


def test_far_moves_and_pending_draws_draw_anew() -> None:
    """Re-targeting only where it is cheap and no noisier than half the draws: a prior much
    wider than the draws' (its χ² inflation diverges), draws placed when the user held under
    4/5 of today's observations and a first drawing still in batches draw anew; the choice
    depends on the priors and the observation counts alone."""
    vs, ys = _answers(3, 12)
    m = _model(vs, ys, (0.2, 0.5, 0.3))
    m.strength_evidence(STRENGTHS)
    first = m.__dict__["_ev_draws"]
    wide = m.copy().reprior(np.array([0.2, 0.2])).retarget_evidence()
    assert wide.__dict__["_ev_draws"].logy is not first.logy
    assert wide.__dict__["_ev_draws"].logy.shape == first.logy.shape
    grown = m.copy()  # placed at 12 observations; 16 now: more than RETARGET_FRESH (1.25)x
    more = _answers(4, 4)
    grown.partial_fit([Observation.compare([v, -v], y) for v, y in zip(*more, strict=True)])
    grown.reprior(np.array([1.1, 1.1])).retarget_evidence()
    assert grown.__dict__["_ev_draws"].logy is not first.logy
    assert grown.__dict__["_ev_draws"].placed == 16
    same = m.copy().retarget_evidence()  # nothing changed: nothing to do
    assert same.__dict__["_ev_draws"] is first
    batched = _model(vs, ys, (0.2, 0.5, 0.3))
    batched.strength_evidence(STRENGTHS, budget=256)
    batched.reprior(np.array([1.1, 1.1])).retarget_evidence()
    assert batched.__dict__["_ev_draws"].logy.shape[0] == 1024  # completed, all anew
