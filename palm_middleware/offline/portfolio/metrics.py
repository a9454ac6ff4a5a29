"""Portfolio quality metrics on a set of weight vectors: gaps and usage perplexity (palm.md §6)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ...exceptions import InvalidParameterError
from ...types import FloatArray

__all__ = ["SampledGaps", "route", "sampled_gaps", "usage_perplexity", "usage_shares"]

IntArray = npt.NDArray[np.int64]


def _as_matrix(a: npt.ArrayLike, name: str, d: int | None = None) -> FloatArray:
    m = np.atleast_2d(np.asarray(a, dtype=np.float64))
    if m.ndim != 2 or (d is not None and m.shape[1] != d) or m.shape[0] == 0:
        want = f"(n, {d})" if d is not None else "(n, d)"
        raise InvalidParameterError(f"{name} must have shape {want} with n >= 1; got {m.shape}")
    return m


def route(rewards: npt.ArrayLike, weights: npt.ArrayLike) -> IntArray:
    """SERVE: for each weight vector, the member maximizing w·r (lowest index on ties).

    Args:
        rewards: Array-like of shape (n_members, d).
        weights: Array-like of shape (n_users, d).

    Returns:
        Member indices, shape (n_users,).
    """
    r = _as_matrix(rewards, "rewards")
    w = _as_matrix(weights, "weights", r.shape[1])
    out: IntArray = np.argmax(w @ r.T, axis=1).astype(np.int64)
    return out


def usage_shares(rewards: npt.ArrayLike, users: npt.ArrayLike) -> FloatArray:
    """Share of users routed to each member, shape (n_members,)."""
    r = _as_matrix(rewards, "rewards")
    idx = route(r, users)
    return np.bincount(idx, minlength=r.shape[0]).astype(np.float64) / len(idx)


def usage_perplexity(rewards: npt.ArrayLike, users: npt.ArrayLike) -> float:
    """exp(entropy) of the routing shares; 1 (one member used) to n_members (even use)."""
    p = usage_shares(rewards, users)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


@dataclass(frozen=True)
class SampledGaps:
    """Worst gaps of a portfolio relative to a reference pool over sampled weights.

    Attributes:
        multiplicative: max_w 1 − max_P w·r / max_C w·r (points with OPT(w) = 0 count as 0).
        additive: max_w max_C w·r − max_P w·r.
        multiplicative_at: Weight vector attaining ``multiplicative``.
        additive_at: Weight vector attaining ``additive``.
    """

    multiplicative: float
    additive: float
    multiplicative_at: FloatArray
    additive_at: FloatArray


def sampled_gaps(
    portfolio: npt.ArrayLike, pool: npt.ArrayLike, weights: npt.ArrayLike
) -> SampledGaps:
    """Gaps of ``portfolio`` against ``pool`` over the rows of ``weights`` (palm.md §6).

    Args:
        portfolio: Rewards of the members, shape (k, d).
        pool: Rewards of the reference set defining OPT(w), shape (m, d).
        weights: Evaluation weights, shape (n, d).

    Returns:
        The worst multiplicative and additive gaps and where they occur. With an independent
        reference set the gaps can be negative (the portfolio beats the reference everywhere).
    """
    p = _as_matrix(portfolio, "portfolio")
    c = _as_matrix(pool, "pool", p.shape[1])
    w = _as_matrix(weights, "weights", p.shape[1])
    opt = (w @ c.T).max(axis=1)
    val = (w @ p.T).max(axis=1)
    add = opt - val
    ratio = np.divide(val, opt, out=np.ones_like(val), where=opt > 0)
    mult = 1.0 - ratio
    ia, im = int(np.argmax(add)), int(np.argmax(mult))
    return SampledGaps(
        multiplicative=float(mult[im]),
        additive=float(add[ia]),
        multiplicative_at=w[im].copy(),
        additive_at=w[ia].copy(),
    )
