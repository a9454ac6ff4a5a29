"""The geometric grid GRID(d, eps, delta) on the probability simplex, and rounding onto it.

Every point is an ℓ∞-normalized level vector (largest coordinate 1, the others 0, 1 or a
geometric level ``tau·(1+eps)^k``) projected back to the simplex. An exact oracle at every grid
point yields an (eps, delta)-approximate portfolio (palm.md §4); :func:`round_to_grid` is the
rounding map of that proof.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from ...exceptions import InvalidParameterError
from ...types import FloatArray

__all__ = ["default_tau", "grid", "grid_levels", "grid_size", "round_to_grid"]

# A level within this relative distance of 1 is 1: tau·(1+eps)^k can land on 1 up to rounding.
_LEVEL_TOL = 1e-9


def default_tau(d: int, delta: float) -> float:
    """The smallest non-zero level, ``delta / (d - 1)``.

    Rounding a weight vector down to the grid zeroes at most d − 1 coordinates (the largest one
    is exactly 1), each losing less than tau of value in the ℓ∞-normalized scale; tau =
    delta / (d − 1) makes that total loss at most delta, which is what the (eps, delta) guarantee
    needs (palm.md §4). For d = 2 it is delta, as in the authors' released grid.
    """
    _check_params(d, 0.1, delta, None)
    return delta / (d - 1)


def grid_levels(d: int, eps: float, delta: float, tau: float | None = None) -> FloatArray:
    """The sorted level set L = {0} ∪ {tau·(1+eps)^k < 1} ∪ {1}.

    Args:
        d: Number of traits (≥ 2).
        eps: Multiplicative step of the levels (> 0).
        delta: Additive slack (> 0); sets the default tau.
        tau: Smallest non-zero level; defaults to :func:`default_tau`.

    Returns:
        Array of shape (n_levels,), starting at 0 and ending at 1.
    """
    _check_params(d, eps, delta, tau)
    t = default_tau(d, delta) if tau is None else float(tau)
    if t >= 1.0 - _LEVEL_TOL:
        return np.array([0.0, 1.0])
    # Count k with t·(1+eps)^k < 1 in closed form, then step back while the top level is ~1.
    n = max(0, math.ceil(math.log(1.0 / t) / math.log1p(eps)))
    geo = t * (1.0 + eps) ** np.arange(n + 1, dtype=np.float64)
    geo = geo[geo < 1.0 - _LEVEL_TOL]
    return np.concatenate(([0.0], geo, [1.0]))


def grid_size(d: int, eps: float, delta: float, tau: float | None = None) -> int:
    """|GRID| = |L|^d − (|L| − 1)^d, without building the grid.

    >>> grid_size(2, 0.4, 0.2), grid_size(3, 0.4, 0.2), grid_size(4, 0.4, 0.2)
    (13, 217, 4641)
    """
    n = len(grid_levels(d, eps, delta, tau))
    return int(n**d - (n - 1) ** d)


def grid(d: int, eps: float, delta: float, tau: float | None = None) -> FloatArray:
    """GRID(d, eps, delta): the geometric grid on the simplex.

    Args:
        d: Number of traits (≥ 2).
        eps: Multiplicative step of the levels (> 0).
        delta: Additive slack (> 0).
        tau: Smallest non-zero level; defaults to ``delta / (d - 1)`` (see :func:`default_tau`).

    Returns:
        Array of shape (n_points, d); rows are distinct points of the simplex, in a fixed
        deterministic order (by position of the first coordinate equal to 1, then lexicographic
        in the level indices).

    >>> g = grid(2, 0.4, 0.2)
    >>> g.shape
    (13, 2)
    """
    levels = grid_levels(d, eps, delta, tau)
    n = len(levels)
    blocks = []
    # The first coordinate equal to 1 sits at position j: coordinates before it take levels
    # below 1, those after it any level. This enumerates each ℓ∞-normalized vector exactly once.
    for j in range(d):
        shape = [n - 1] * j + [1] + [n] * (d - 1 - j)
        idx = np.indices(shape).reshape(d, -1).T
        idx[:, j] = n - 1
        blocks.append(idx)
    idx_all = np.concatenate(blocks, axis=0)
    v = levels[idx_all]
    pts = v / v.sum(axis=1, keepdims=True)
    return _dedupe(pts)


def round_to_grid(
    w: npt.ArrayLike, eps: float, delta: float, tau: float | None = None
) -> FloatArray:
    """Round weight vectors down onto GRID(d, eps, delta) (the map ŵ of palm.md §4).

    Each w is scaled so its largest coordinate is 1, every coordinate is rounded down to the
    nearest level, and the result is normalized back to the simplex.

    Args:
        w: Array-like of shape (d,) or (n, d), rows on the simplex.
        eps: Multiplicative step of the levels.
        delta: Additive slack.
        tau: Smallest non-zero level (see :func:`default_tau`).

    Returns:
        Array of the same shape as ``w``; every row is a grid point.
    """
    arr = np.asarray(w, dtype=np.float64)
    single = arr.ndim == 1
    mat = np.atleast_2d(arr)
    if mat.ndim != 2 or mat.shape[1] < 2:
        raise InvalidParameterError(
            f"round_to_grid: w must have shape (d,) or (n, d) with d >= 2; got {arr.shape}"
        )
    if not np.all(np.isfinite(mat)) or np.any(mat < 0) or np.any(mat.max(axis=1) <= 0):
        raise InvalidParameterError(
            "round_to_grid: w must be finite, non-negative and not all zero; "
            "pass points of the simplex"
        )
    levels = grid_levels(mat.shape[1], eps, delta, tau)
    u = mat / mat.max(axis=1, keepdims=True)
    # The tolerance keeps a coordinate that already sits on a level from dropping one level.
    pos = np.searchsorted(levels, u * (1.0 + _LEVEL_TOL), side="right") - 1
    r = levels[np.clip(pos, 0, len(levels) - 1)]
    out: FloatArray = r / r.sum(axis=1, keepdims=True)
    return out[0] if single else out


def _dedupe(pts: FloatArray) -> FloatArray:
    key = np.round(pts, 12)
    _, first = np.unique(key, axis=0, return_index=True)
    return pts[np.sort(first)]


def _check_params(d: int, eps: float, delta: float, tau: float | None) -> None:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 2:
        raise InvalidParameterError(f"the grid needs d >= 2 traits; got d={d!r}")
    if not (math.isfinite(eps) and eps > 0):
        raise InvalidParameterError(f"eps must be a finite number > 0; got {eps!r}")
    if not (math.isfinite(delta) and delta > 0):
        raise InvalidParameterError(f"delta must be a finite number > 0; got {delta!r}")
    if tau is not None and not (math.isfinite(tau) and tau > 0):
        raise InvalidParameterError(f"tau must be a finite number > 0; got {tau!r}")
