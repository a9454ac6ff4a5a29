from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from palm_middleware import InvalidParameterError, InvalidWeightsError, Portfolio
from palm_middleware.routing import Router, worst_case_values

PF = Portfolio.from_rewards(
    ["helpfulness", "brevity"],
    {"long": [0.9, 0.1], "short": [0.2, 0.95], "mid": [0.6, 0.6], "dominated": [0.3, 0.3]},
)


def test_routes_by_scalarized_reward_and_explains() -> None:
    r = Router(PF).route(np.array([0.9, 0.1]))
    assert r.member == "long" and r.runner_up == "mid"
    assert r.margin == pytest.approx(0.9 * 0.9 + 0.01 - (0.6 * 0.9 + 0.06))
    assert "long" in r.explain() and "over mid" in r.explain()
    assert Router(PF).route(np.array([0.0, 1.0])).member == "short"
    assert Router(PF).route(np.array([0.5, 0.5])).member == "mid"


def test_ties_go_to_manifest_order() -> None:
    pf = Portfolio.from_rewards(["a", "b"], {"x": [0.5, 0.5], "y": [0.5, 0.5], "z": [0.1, 0.1]})
    r = Router(pf).route(np.array([0.3, 0.7]))
    assert (r.member, r.runner_up, r.margin) == ("x", "y", 0.0)
    assert "tie" in r.explain()


def test_bad_weights_rejected() -> None:
    with pytest.raises(InvalidWeightsError):
        Router(PF).route(np.array([0.5, 0.6]))
    with pytest.raises(InvalidWeightsError):
        Router(PF).route(np.array([1.0]))


@given(arrays(np.float64, 2, elements=st.floats(0, 1)).filter(lambda a: a.sum() > 1e-6))
def test_router_returns_the_argmax_and_never_a_dominated_member(w: np.ndarray) -> None:
    w = w / w.sum()
    r = Router(PF).route(w)
    vals = PF.rewards @ w
    assert vals[r.index] >= vals.max() - 1e-12
    assert r.member != "dominated"


def test_worst_case_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        d = 3
        lo = rng.uniform(0, 0.3, d)
        hi = np.minimum(lo + rng.uniform(0.1, 0.8, d), 1)
        if lo.sum() > 1 or hi.sum() < 1:
            continue
        rewards = rng.uniform(0, 1, (4, d))
        exact = worst_case_values(rewards, lo, hi)
        # brute force over a fine lattice of the simplex, restricted to the box
        grid = (
            np.array(
                [
                    (i, j, 200 - i - j)
                    for i, j in itertools.product(range(201), repeat=2)
                    if i + j <= 200
                ]
            )
            / 200
        )
        inside = grid[np.all((grid >= lo - 1e-12) & (grid <= hi + 1e-12), axis=1)]
        if len(inside) == 0:
            continue
        brute = (inside @ rewards.T).min(axis=0)
        assert np.all(exact <= brute + 1e-12)
        assert np.allclose(exact, brute, atol=0.02)


def test_robust_mode_prefers_the_safe_member_under_uncertainty() -> None:
    router = Router(PF)
    # mean slightly favours "long", but the credible box spans both ends
    assert router.route(np.array([0.62, 0.38])).member in ("long", "mid")
    robust = router.route_robust(np.array([0.1, 0.1]), np.array([0.9, 0.9]))
    assert robust.member == "mid" and robust.mode == "robust"


def test_empty_credible_box_rejected() -> None:
    with pytest.raises(InvalidParameterError, match="empty"):
        worst_case_values(PF.rewards, np.array([0.7, 0.7]), np.array([1.0, 1.0]))
