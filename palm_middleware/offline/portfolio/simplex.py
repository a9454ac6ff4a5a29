"""Point sets on the probability simplex: lattices and dense evaluation samples."""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..._rng import RandomState, check_random_state
from ...exceptions import InvalidParameterError
from ...types import FloatArray

__all__ = ["lattice_size", "simplex_lattice", "simplex_sample"]


def simplex_lattice(d: int, n: int) -> FloatArray:
    """All points k/n with non-negative integers k summing to n.

    Args:
        d: Dimension (≥ 1).
        n: Lattice resolution (≥ 1).

    Returns:
        Array of shape (C(n+d−1, d−1), d), in lexicographic order of k (descending first
        coordinate).

    >>> simplex_lattice(2, 2).tolist()
    [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    """
    if d < 1 or n < 1:
        raise InvalidParameterError(f"simplex_lattice needs d >= 1 and n >= 1; got d={d}, n={n}")
    # Stars and bars: choose the d−1 bar positions among n+d−1 slots.
    bars = np.array(list(itertools.combinations(range(n + d - 1), d - 1)), dtype=np.int64)
    bars = bars.reshape(-1, d - 1)
    edges = np.concatenate(
        [np.full((len(bars), 1), -1), bars, np.full((len(bars), 1), n + d - 1)], axis=1
    )
    k = np.diff(edges, axis=1) - 1
    out: FloatArray = (k / n).astype(np.float64)
    return out[::-1] if d > 1 else out


def lattice_size(d: int, n: int) -> int:
    """Number of points of :func:`simplex_lattice`."""
    return math.comb(n + d - 1, d - 1)


def simplex_sample(d: int, n: int, random_state: RandomState = None) -> FloatArray:
    """A dense evaluation set: vertices, barycentre, a lattice and Dirichlet(1, …, 1) draws.

    For d = 2 this is ``n`` evenly spaced points (plus nothing random). For d > 2 it is the
    vertices, the barycentre, the finest lattice with at most n/4 points and n uniform draws.

    Args:
        d: Dimension (≥ 2).
        n: Number of random draws (d > 2) or of evenly spaced points (d = 2).
        random_state: Seed or Generator for the Dirichlet draws.

    Returns:
        Array of shape (m, d) of simplex points.
    """
    if d < 2 or n < 2:
        raise InvalidParameterError(f"simplex_sample needs d >= 2 and n >= 2; got d={d}, n={n}")
    if d == 2:
        t = np.linspace(0.0, 1.0, n)
        return np.column_stack([t, 1.0 - t])
    rng = check_random_state(random_state)
    res = 1
    while lattice_size(d, res + 1) <= max(n // 4, d):
        res += 1
    parts = [
        np.eye(d),
        np.full((1, d), 1.0 / d),
        simplex_lattice(d, res),
        rng.dirichlet(np.ones(d), size=n),
    ]
    return np.concatenate(parts, axis=0)
