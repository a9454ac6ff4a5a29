from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palm_middleware.exceptions import InvalidParameterError
from palm_middleware.offline.portfolio.certify import certified_delta, certified_eps, certify_gaps
from palm_middleware.offline.portfolio.metrics import sampled_gaps
from palm_middleware.offline.portfolio.simplex import simplex_lattice, simplex_sample

FINE = {2: simplex_lattice(2, 20_000), 3: simplex_lattice(3, 500)}


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("seed", range(6))
def test_certificate_equals_fine_grid_maximum(d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pool = rng.uniform(0, 1, (12, d))
    port = pool[rng.choice(12, 3, replace=False)]
    cert = certify_gaps(port, pool)
    fine = sampled_gaps(port, pool, FINE[d])
    assert cert.additive_gap >= fine.additive - 1e-9
    assert cert.multiplicative_gap >= fine.multiplicative - 1e-9
    assert cert.additive_gap <= fine.additive + 1e-3
    assert cert.multiplicative_gap <= fine.multiplicative + 1e-3
    # the reported maximizer attains the value
    at = sampled_gaps(port, pool, cert.additive.at[None, :])
    assert at.additive == pytest.approx(cert.additive_gap, abs=1e-9)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 100_000), d=st.integers(2, 4), k=st.integers(1, 4))
def test_certificate_bounds_every_sampled_gap(seed: int, d: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    pool = rng.uniform(0, 1, (10, d))
    port = rng.uniform(0, 1, (k, d))  # an independent reference: gaps may be negative
    cert = certify_gaps(port, pool)
    s = sampled_gaps(port, pool, simplex_sample(d, 3000, seed))
    assert cert.additive_gap >= s.additive - 1e-9
    assert cert.multiplicative_gap >= s.multiplicative - 1e-9


def test_known_values_and_zero_gap() -> None:
    pool = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.6]])
    cert = certify_gaps(pool[:2], pool)
    assert cert.additive_gap == pytest.approx(0.1)
    assert cert.multiplicative_gap == pytest.approx(1 - 0.5 / 0.6)
    assert np.allclose(cert.additive.at, [0.5, 0.5])
    same = certify_gaps(pool, pool)
    assert same.additive_gap == pytest.approx(0.0, abs=1e-9)
    assert same.multiplicative_gap == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_mixed_forms_are_tight(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pool = rng.uniform(0, 1, (15, 3))
    port = pool[:3]
    w = simplex_sample(3, 20_000, seed)
    opt, val = (w @ pool.T).max(axis=1), (w @ port.T).max(axis=1)
    d_at = certified_delta(port, pool, eps=0.05).value
    assert np.all(val >= 0.95 * opt - d_at - 1e-9)
    e_at = certified_eps(port, pool, delta=0.02).value
    assert np.all(val >= (1 - e_at) * opt - 0.02 - 1e-9)
    # tight: slightly smaller slack fails somewhere on a fine lattice
    fine = simplex_lattice(3, 400)
    opt_f, val_f = (fine @ pool.T).max(axis=1), (fine @ port.T).max(axis=1)
    assert np.any(val_f < 0.95 * opt_f - (d_at - 2e-3))


def test_bad_shapes() -> None:
    with pytest.raises(InvalidParameterError, match="shapes"):
        certify_gaps(np.zeros((2, 2)), np.zeros((3, 3)))


def test_library_api_rejects_unnormalized_rewards() -> None:
    import numpy as np
    import pytest

    from palm_middleware import InvalidParameterError
    from palm_middleware.offline.portfolio import certify_gaps, coverage_matrix

    bad = np.array([[0.5, -0.2], [0.3, 0.9]])
    with pytest.raises(InvalidParameterError, match=r"row 0, column 1 is -0\.2"):
        certify_gaps(bad[:1], bad)
    with pytest.raises(InvalidParameterError, match=r"in \[0, 1\]"):
        coverage_matrix(np.array([[0.5, 0.5]]), np.array([[1.5, 0.2]]), eps=0.1, delta=0.0)
