"""Baseline portfolios of a given size: uniform grid, random Dirichlet, GPI-style greedy (§7)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from ..._rng import RandomState, check_random_state
from ...exceptions import InvalidParameterError
from ...types import FloatArray
from .oracle import Candidate, Oracle
from .simplex import lattice_size, simplex_lattice

__all__ = ["evaluate_weights", "gpi_greedy", "random_weights", "uniform_weights"]


def uniform_weights(d: int, m: int) -> FloatArray:
    """``m`` evenly spread weight vectors.

    d = 2: w_1 = k/(m−1), k = m−1, …, 0 (the authors' ``even2d`` grid). d > 2: the coarsest
    simplex lattice {k/n : Σk = n} with at least m points, thinned to m by farthest-point
    sampling started from the vertices (so the spread stays even).

    Returns:
        Array of shape (m, d).
    """
    if d < 2 or m < 1:
        raise InvalidParameterError(f"uniform_weights needs d >= 2 and m >= 1; got d={d}, m={m}")
    if d == 2:
        t = np.linspace(1.0, 0.0, m) if m > 1 else np.array([0.5])
        return np.column_stack([t, 1.0 - t])
    n = 1
    while lattice_size(d, n) < m:
        n += 1
    lat = simplex_lattice(d, n)
    if len(lat) == m:
        return lat
    is_vertex = np.isclose(lat.max(axis=1), 1.0)
    chosen = [int(i) for i in np.flatnonzero(is_vertex)][:m]
    dist = np.min(np.abs(lat[:, None, :] - lat[None, chosen, :]).sum(axis=2), axis=1)
    while len(chosen) < m:
        j = int(np.argmax(dist))
        chosen.append(j)
        dist = np.minimum(dist, np.abs(lat - lat[j]).sum(axis=1))
    out: FloatArray = lat[np.sort(chosen)]
    return out


def random_weights(d: int, m: int, random_state: RandomState = None) -> FloatArray:
    """``m`` i.i.d. Dirichlet(1, …, 1) weight vectors, shape (m, d)."""
    if d < 2 or m < 1:
        raise InvalidParameterError(f"random_weights needs d >= 2 and m >= 1; got d={d}, m={m}")
    out: FloatArray = check_random_state(random_state).dirichlet(np.ones(d), size=m)
    return out


def evaluate_weights(weights: npt.ArrayLike, oracle: Oracle) -> list[Candidate]:
    """Call the oracle at every weight vector; repeated candidates are kept once."""
    out: list[Candidate] = []
    seen: set[str] = set()
    for w in np.atleast_2d(np.asarray(weights, dtype=np.float64)):
        c = oracle(w)
        if c.id not in seen:
            seen.add(c.id)
            out.append(c)
    return out


def gpi_greedy(
    oracle: Oracle,
    eval_weights: npt.ArrayLike,
    reference: npt.ArrayLike,
    m: int,
    *,
    kind: Literal["additive", "multiplicative"] = "additive",
    start: npt.ArrayLike | None = None,
    target_gap: float = 0.0,
) -> tuple[list[Candidate], FloatArray]:
    """GPI-style worst-weight greedy: add Oracle(w*) at the weight of the current worst gap.

    Args:
        oracle: ``w -> Candidate``.
        eval_weights: Dense evaluation weights, shape (n, d) (the argmax is taken over them).
        reference: OPT estimate at each evaluation weight, shape (n,).
        m: Target size.
        kind: Gap to chase.
        start: First weight vector; defaults to the barycentre.
        target_gap: Stop early once the worst gap is at most this.

    Returns:
        (the distinct candidates, the weights queried, shape (n_queries, d)).
    """
    w = np.atleast_2d(np.asarray(eval_weights, dtype=np.float64))
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    if ref.shape != (len(w),):
        raise InvalidParameterError(f"reference must have shape ({len(w)},); got {ref.shape}")
    if m < 1:
        raise InvalidParameterError(f"m must be >= 1; got {m}")
    d = w.shape[1]
    first = np.full(d, 1.0 / d) if start is None else np.asarray(start, dtype=np.float64)
    cands: list[Candidate] = []
    seen: set[str] = set()
    queried = [first]
    val = np.full(len(w), -np.inf)
    nxt = first
    # Each query costs one oracle call; stop when the worst weight's answer is already held.
    for _ in range(4 * m):
        c = oracle(nxt)
        if c.id not in seen:
            seen.add(c.id)
            cands.append(c)
            val = np.maximum(val, w @ c.reward)
        if len(cands) >= m:
            break
        if kind == "additive":
            gap = ref - val
        else:
            gap = 1.0 - np.divide(val, ref, out=np.ones_like(val), where=ref > 0)
        i = int(np.argmax(gap))
        if gap[i] <= target_gap:
            break
        nxt = w[i]
        queried.append(nxt)
    return cands, np.vstack(queried)
