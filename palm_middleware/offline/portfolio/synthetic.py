"""Synthetic reward fronts for tests and benchmarks without GPUs (palm.md §11).

The ℓp front {r ≥ 0 : ‖r‖_p ≤ 1}, p > 1, has the closed-form optimum for weights w:
r_i = w_i^(q−1) / ‖w‖_q^(q−1) with q = p/(p−1), and OPT(w) = ‖w‖_q. RL-like imperfection is
added as a shrinkage towards a reference profile (the KL pull to the base model) plus Gaussian
noise, clipped to [0, 1].
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..._rng import RandomState, check_random_state
from ...exceptions import InvalidParameterError
from ...types import FloatArray
from .oracle import CallableOracle, Candidate

__all__ = ["lp_front_optimum", "lp_front_oracle", "lp_front_pool"]


def lp_front_optimum(w: npt.ArrayLike, p: float = 2.0) -> FloatArray:
    """The exact maximizer of w·r on the ℓp front, shape like ``w`` ((d,) or (n, d))."""
    if not p > 1:
        raise InvalidParameterError(f"the lp front needs p > 1; got p={p}")
    arr = np.atleast_2d(np.asarray(w, dtype=np.float64))
    q = p / (p - 1.0)
    num = arr ** (q - 1.0)
    norm = np.linalg.norm(arr, ord=q, axis=1, keepdims=True) ** (q - 1.0)
    r: FloatArray = num / norm
    return r[0] if np.ndim(w) == 1 else r


def _imperfect(r: FloatArray, sigma: float, shrink: float, rng: np.random.Generator) -> FloatArray:
    ref = np.full(r.shape[-1], 0.5)  # the base model's profile the KL term pulls towards
    out = (1.0 - shrink) * r + shrink * ref
    if sigma > 0:
        out = out + rng.normal(0.0, sigma, size=out.shape)
    return np.clip(out, 0.0, 1.0)


def lp_front_oracle(
    p: float = 2.0,
    *,
    sigma: float = 0.02,
    shrink: float = 0.05,
    random_state: RandomState = None,
    prefix: str = "lp",
) -> CallableOracle:
    """An oracle on the ℓp front with shrinkage and noise (an imperfect "RL" oracle).

    Args:
        p: Front exponent (> 1; 2 is the quarter circle).
        sigma: Standard deviation of the Gaussian reward noise.
        shrink: Pull towards the profile (0.5, …, 0.5), in [0, 1].
        random_state: Seed or Generator for the noise.
        prefix: Id prefix of the candidates.
    """
    rng = check_random_state(random_state)

    def fn(w: FloatArray) -> FloatArray:
        return _imperfect(lp_front_optimum(w, p), sigma, shrink, rng)

    return CallableOracle(fn, prefix=prefix)


def lp_front_pool(
    d: int,
    n: int,
    p: float = 2.0,
    *,
    sigma: float = 0.02,
    shrink: float = 0.05,
    random_state: RandomState = None,
    prefix: str = "cand",
) -> list[Candidate]:
    """``n`` candidates trained at Dirichlet(1, …, 1) weights on the noisy ℓp front.

    Each candidate carries its training weight and the noise level as its standard error.
    """
    rng = check_random_state(random_state)
    w = rng.dirichlet(np.ones(d), size=n)
    r = _imperfect(lp_front_optimum(w, p), sigma, shrink, rng)
    se = np.full(d, sigma)
    return [Candidate(id=f"{prefix}-{i}", reward=r[i], stderr=se, weight=w[i]) for i in range(n)]
