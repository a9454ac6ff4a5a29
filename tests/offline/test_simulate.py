"""The simulator: the preference model must beat the baselines it is compared with."""

from __future__ import annotations

import numpy as np
import pytest

from palm_middleware import InvalidParameterError
from palm_middleware.offline.simulate import (
    METHODS,
    SimulationConfig,
    format_table,
    lp_front_members,
    run_simulation,
)


def test_lp_front_members_lie_near_the_front() -> None:
    r = lp_front_members(50, 3, p=2.0, noise=0.0, random_state=0)
    np.testing.assert_allclose(np.linalg.norm(r, axis=1), 1.0, atol=1e-9)
    assert r.min() >= 0 and r.max() <= 1


def test_preference_model_converges_and_beats_baselines() -> None:
    cfg = SimulationConfig(n_users=40, n_events=15, n_particles=512, seed=3)
    res = run_simulation(cfg)
    pm, default, arms, oracle, plain = (
        METHODS.index(m)
        for m in ("preference_model", "default", "arm_thompson", "oracle", "particle_random")
    )
    for fb in ("pairwise", "thumbs"):
        reg = res.regret[fb]
        assert reg[oracle].max() == 0
        assert reg[pm, -1] < 0.5 * reg[default, -1]
        assert reg[pm, -1] <= reg[arms, -1] + 0.01
        assert reg[plain, -1] < 0.5 * reg[default, -1]
        assert res.weight_error[fb][pm, -1] < res.weight_error[fb][pm, 0]
        assert 0.7 <= res.coverage[fb][pm, -1] <= 1.0
    rows = res.rows()
    assert len(rows) == 2 * len(METHODS) * 16
    assert "preference_model" in format_table(res)


def test_bad_configs() -> None:
    with pytest.raises(InvalidParameterError):
        run_simulation(SimulationConfig(n_members=1))
    with pytest.raises(InvalidParameterError):
        run_simulation(SimulationConfig(noise=0.5))
