"""The preference model: Bayesian inference of simulated users' hidden weights."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palm_middleware import InvalidParameterError
from palm_middleware._rng import check_random_state
from palm_middleware.exceptions import NotFittedError
from palm_middleware.preferences.events import Observation
from palm_middleware.preferences.model import PosteriorSummary, PreferenceModel

UNIFORM = np.full(4, 0.25)


def bt_observations(
    w: np.ndarray, rewards: np.ndarray, n: int, seed: int, beta: float = 10.0
) -> list[Observation]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        i, j = rng.choice(len(rewards), 2, replace=False)
        p = 1 / (1 + np.exp(-beta * w @ (rewards[i] - rewards[j])))
        out.append(Observation.compare(rewards[i] - rewards[j], 1 if rng.random() < p else -1))
    return out


def test_prior_mean_is_the_default() -> None:
    default = np.array([0.4, 0.3, 0.2, 0.1])
    m = PreferenceModel(prior_mean=default, prior_strength=10, random_state=0).fit([])
    np.testing.assert_allclose(m.predict(), default, atol=0.02)
    assert m.evidence_ == 0 and m.n_events_ == 0


def test_pairwise_choices_recover_hidden_weights() -> None:
    rng = np.random.default_rng(0)
    rewards = rng.uniform(0, 1, (8, 4))
    w = np.array([0.6, 0.1, 0.1, 0.2])
    m = PreferenceModel(prior_mean=UNIFORM, prior_strength=4, random_state=0)
    m.fit(bt_observations(w, rewards, 150, seed=1))
    err0 = 0.5 * np.abs(UNIFORM - w).sum()
    err = 0.5 * np.abs(m.predict() - w).sum()
    assert err < err0 / 3
    lo, hi = m.credible_interval(0.9)
    assert np.all(lo <= hi) and np.mean((w >= lo) & (w <= hi)) >= 0.75


def test_fit_is_reproducible_and_equals_partial_fit_in_distribution() -> None:
    rewards = np.random.default_rng(1).uniform(0, 1, (6, 4))
    obs = bt_observations(np.array([0.1, 0.7, 0.1, 0.1]), rewards, 40, seed=2)
    a = PreferenceModel(prior_mean=UNIFORM, random_state=5).fit(obs).predict()
    b = PreferenceModel(prior_mean=UNIFORM, random_state=5).fit(obs).predict()
    np.testing.assert_array_equal(a, b)
    inc = PreferenceModel(prior_mean=UNIFORM, random_state=5).fit(obs[:20])
    inc.partial_fit(obs[20::2]).partial_fit(obs[21::2])
    # Same posterior, different Monte Carlo path: means agree to sampling error.
    np.testing.assert_allclose(inc.predict(), a, atol=0.05)


def test_explicit_weights_anchor_the_posterior() -> None:
    target = np.array([0.1, 0.2, 0.3, 0.4])
    m = PreferenceModel(prior_mean=UNIFORM, random_state=0)
    m.fit([Observation.anchor(target, np.ones(4), precision=400.0)])
    np.testing.assert_allclose(m.predict(), target, atol=0.03)
    partial = PreferenceModel(prior_mean=UNIFORM, random_state=0).fit(
        [Observation.anchor(np.array([0, 0, 0, 0.7]), np.array([0, 0, 0, 1.0]), precision=400.0)]
    )
    assert abs(partial.predict()[3] - 0.7) < 0.05


def test_text_cue_moves_one_trait() -> None:
    delta = np.array([-0.25, -0.25, -0.25, 0.75])  # e_brevity - default_brevity * 1
    m = PreferenceModel(prior_mean=UNIFORM, random_state=0).fit(
        [Observation.compare(delta, +1, scale=1.0)] * 3
    )
    assert m.predict()[3] > 0.3


def test_forgetting_lets_preferences_drift() -> None:
    rewards = np.eye(4) * 0.8 + 0.1
    old = [Observation.compare(rewards[0] - rewards[3], +1, ts=0.0) for _ in range(15)]
    new = [Observation.compare(rewards[3] - rewards[0], +1, ts=100 * 86400.0) for _ in range(15)]
    day = 86400.0
    fading = PreferenceModel(prior_mean=UNIFORM, half_life=10 * day, random_state=0)
    fading.fit(old).partial_fit(new)
    keeping = PreferenceModel(prior_mean=UNIFORM, half_life=None, random_state=0)
    keeping.fit(old).partial_fit(new)
    assert fading.predict()[3] > keeping.predict()[3] + 0.05
    assert fading.evidence_ < keeping.evidence_
    assert fading.evidence_ == pytest.approx(15 + 15 * 0.5**10, rel=1e-6)


def test_old_observations_beyond_the_window_are_dropped() -> None:
    m = PreferenceModel(prior_mean=UNIFORM, max_observations=5, random_state=0)
    m.fit([Observation.compare(np.array([0.5, -0.5, 0.01 * k, 0]), +1) for k in range(12)])
    assert m.n_events_ == 12 and m.evidence_ == pytest.approx(5.0)
    # The oldest (equally strong) terms went first.
    assert [float(o.vector[2]) for o in m._obs] == pytest.approx([0.07, 0.08, 0.09, 0.10, 0.11])


def test_identical_observations_share_one_term() -> None:
    """Repeats raise one exponent: an update costs the same after ten events or ten thousand."""
    obs = Observation.compare(np.array([0.5, -0.5, 0, 0]), +1)
    m = PreferenceModel(prior_mean=UNIFORM, max_observations=5, random_state=0).fit([obs] * 12)
    assert m.n_events_ == 12 and m.evidence_ == pytest.approx(12.0) and len(m._obs) == 1
    m.partial_fit([obs] * 3)
    assert len(m._obs) == 1 and m.evidence_ == pytest.approx(15.0)


@settings(max_examples=30)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.booleans()), max_size=25),
    st.integers(0, 2**16),
)
def test_weights_stay_on_the_simplex_after_any_events(
    events: list[tuple[int, int, bool]], seed: int
) -> None:
    rewards = np.random.default_rng(seed).uniform(0, 1, (6, 4))
    obs = [Observation.compare(rewards[i] - rewards[j], 1 if y else -1) for i, j, y in events]
    m = PreferenceModel(prior_mean=UNIFORM, n_particles=256, random_state=seed).fit(obs)
    mean = m.predict()
    assert np.all(mean >= 0) and abs(mean.sum() - 1) < 1e-9
    assert np.all(m.particles_ >= 0) and np.allclose(m.particles_.sum(axis=1), 1)
    s = m.summary()
    assert np.all(s.lower <= mean + 1e-9) and np.all(mean <= s.upper + 1e-9)


def test_summary_round_trips_and_samples_on_simplex() -> None:
    m = PreferenceModel(prior_mean=UNIFORM, random_state=0).fit(
        [Observation.compare(np.array([0.3, -0.3, 0, 0]), 1)]
    )
    s = m.summary()
    again = PosteriorSummary.from_dict(s.to_dict())
    np.testing.assert_allclose(again.mean, s.mean, atol=1e-6)
    draws = again.sample(100, np.random.default_rng(0))
    assert draws.shape == (100, 4) and np.allclose(draws.sum(axis=1), 1)
    np.testing.assert_allclose(draws.mean(axis=0), s.mean, atol=0.06)


def test_information_gain_prefers_informative_pairs() -> None:
    m = PreferenceModel(prior_mean=UNIFORM, random_state=0).fit([])
    rewards = np.array(
        [[0.9, 0.1, 0.5, 0.5], [0.1, 0.9, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.51, 0.5]]
    )
    gains = m.information_gain(rewards[[0, 2]] - rewards[[1, 3]])
    assert gains[0] > gains[1] > -1e-12
    assert m.query_pair(rewards) == (0, 1)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"prior_mean": [0.5, 0.6]}, "prior_mean must be a point of the simplex"),
        ({"prior_mean": [1.0]}, "prior_mean"),
        ({"prior_mean": UNIFORM, "beta": -1}, "'beta' parameter"),
        ({"prior_mean": UNIFORM, "lapse": 0.5}, "'lapse' parameter"),
        ({"prior_mean": UNIFORM, "prior_strength": 0}, "'prior_strength' parameter"),
        ({"prior_mean": UNIFORM, "half_life": 0}, "half_life"),
        ({"prior_mean": UNIFORM, "n_particles": 10}, "n_particles"),
    ],
)
def test_bad_parameters(params: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        PreferenceModel(**params).fit([])  # type: ignore[arg-type]


def test_not_fitted_and_bad_observations() -> None:
    with pytest.raises(NotFittedError):
        PreferenceModel(prior_mean=UNIFORM).predict()
    m = PreferenceModel(prior_mean=UNIFORM).fit([])
    with pytest.raises(InvalidParameterError, match="3 entries; the model has 4"):
        m.partial_fit([Observation.compare(np.zeros(3), 1)])
    with pytest.raises(InvalidParameterError, match="cannot be used to seed"):
        check_random_state("seed")  # type: ignore[arg-type]


def test_params_round_trip() -> None:
    m = PreferenceModel(prior_mean=UNIFORM, beta=3.0)
    assert m.get_params()["beta"] == 3.0
    assert m.set_params(beta=4.0).beta == 4.0
    with pytest.raises(InvalidParameterError, match="unknown parameter"):
        m.set_params(temperature=1)


def test_a_late_batch_of_old_events_fades_like_in_fit() -> None:
    day = 86400.0
    new = [Observation.compare(np.array([0.5, -0.5, 0, 0]), 1, ts=100 * day)]
    old = [Observation.compare(np.array([-0.5, 0.5, 0, 0]), 1, ts=0.0)]
    params = {"prior_mean": UNIFORM, "half_life": day, "random_state": 0}
    batch = PreferenceModel(**params).fit(new + old)  # type: ignore[arg-type]
    late = PreferenceModel(**params).fit(new).partial_fit(old)  # type: ignore[arg-type]
    assert late.evidence_ == pytest.approx(batch.evidence_, rel=1e-9)
    assert late.evidence_ == pytest.approx(1 + 0.5**100, rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": 0.0}, "scale"),
        ({"ts": float("inf")}, "ts must be a finite"),
        ({"strength": float("nan")}, "strength"),
    ],
)
def test_observation_fields_are_checked(kwargs: dict[str, float], match: str) -> None:
    from palm_middleware import InvalidEventError

    with pytest.raises(InvalidEventError, match=match):
        Observation.compare(np.array([0.1, -0.1]), 1, **kwargs)
