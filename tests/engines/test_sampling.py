"""Token choice: greedy, temperature, top-k, top-p, per-request seeded RNG."""

from __future__ import annotations

import numpy as np
import pytest

from palm_middleware.engines._sampling import Sampler
from palm_middleware.engines.base import GenerationParams

LOGITS = np.log(np.array([0.5, 0.25, 0.15, 0.07, 0.03], dtype=np.float32))


def _draws(n: int = 4000, **kw: float | int) -> np.ndarray:
    s = Sampler(GenerationParams(seed=0, **kw))  # type: ignore[arg-type]
    return np.array([s(LOGITS) for _ in range(n)])


def test_greedy_is_argmax() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = rng.standard_normal(50).astype(np.float32)
        assert Sampler(GenerationParams())(logits) == int(np.argmax(logits))


def test_temperature_one_matches_softmax() -> None:
    freq = np.bincount(_draws(temperature=1.0), minlength=5) / 4000
    assert np.allclose(freq, np.exp(LOGITS), atol=0.03)


def test_top_k_and_top_p_restrict_support() -> None:
    assert set(_draws(temperature=1.0, top_k=2)) == {0, 1}
    assert set(_draws(temperature=1.0, top_p=0.7)) == {0, 1}  # 0.5 < 0.7 <= 0.75
    assert set(_draws(temperature=1.0, top_p=0.75)) == {0, 1}
    assert set(_draws(temperature=1.0, top_p=0.76)) == {0, 1, 2}
    freq = np.bincount(_draws(temperature=1.0, top_k=2), minlength=5) / 4000
    assert freq[0] == pytest.approx(2 / 3, abs=0.03)


def test_low_temperature_sharpens() -> None:
    assert (_draws(temperature=0.05) == 0).all()


def test_seeded_samplers_are_independent_of_global_state() -> None:
    a = _draws(200, temperature=1.0)
    np.random.seed(123)  # the global RNG must not matter
    np.random.random(10)
    b = _draws(200, temperature=1.0)
    assert (a == b).all()
