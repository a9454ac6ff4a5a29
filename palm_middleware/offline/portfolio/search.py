"""Lazy search over the grid: call the oracle only where the candidates so far do not certify.

A grid point g is certified by the candidates C when ``max_{c∈C} g·r_c ≥ (1 − eps)·UB(g) − delta``
with the upper bound ``UB(g) = Σ_i g_i·Rmax_i`` (palm.md §5.2), or when the oracle was called at g
itself (the oracle's answer is taken as optimal there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ...exceptions import InvalidParameterError
from ...types import FloatArray
from .._progress import progress_bar
from .oracle import Candidate, Oracle

__all__ = ["LazySearchResult", "lazy_search", "search_order"]

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


def search_order(points: npt.ArrayLike) -> IntArray:
    """Visit order: vertices first, then outward towards the barycentre.

    Points are sorted by decreasing largest coordinate (vertices have 1, the barycentre 1/d),
    ties by decreasing coordinates lexicographically, so the order is deterministic.
    """
    p = np.asarray(points, dtype=np.float64)
    keys = [-p[:, j] for j in range(p.shape[1] - 1, -1, -1)]
    keys.append(-np.round(p.max(axis=1), 12))
    return np.lexsort(keys).astype(np.int64)


@dataclass(frozen=True)
class LazySearchResult:
    """Outcome of :func:`lazy_search`.

    Attributes:
        candidates: Distinct candidates returned by the oracle, in call order.
        oracle_points: Indices of the points where the oracle was called, in call order.
        certified: Per point, whether the final candidates certify it (all True on success).
        rmax: The per-trait bound Rmax used in the final check, shape (d,).
        n_passes: Sweeps over the points (more than one when Rmax grew during a sweep).
    """

    candidates: tuple[Candidate, ...]
    oracle_points: IntArray
    certified: BoolArray
    rmax: FloatArray
    n_passes: int

    @property
    def n_oracle_calls(self) -> int:
        """Number of oracle calls made."""
        return len(self.oracle_points)

    @property
    def rewards(self) -> FloatArray:
        """Candidate rewards, shape (n_candidates, d)."""
        return np.vstack([c.reward for c in self.candidates])


def lazy_search(
    points: npt.ArrayLike,
    oracle: Oracle,
    eps: float,
    delta: float,
    *,
    rmax: Literal["candidates", "trivial"] | npt.ArrayLike = "candidates",
    progress: bool = False,
) -> LazySearchResult:
    """Lazy search: call ``oracle`` only at points the current candidates do not certify.

    Args:
        points: Grid points (or any weight vectors), shape (n, d).
        oracle: ``w -> Candidate``.
        eps: Multiplicative slack of the certificate.
        delta: Additive slack of the certificate.
        rmax: Per-trait upper bound on OPT: ``"candidates"`` (max over evaluated candidates,
            refreshed as they arrive, seeded by oracle calls at the vertices; safer than the
            vertex values alone when the oracle is not exact), ``"trivial"`` (all 1: rewards
            are normalized) or an explicit array of shape (d,).
        progress: Show a tqdm progress bar (hidden when stderr is not a terminal).

    Returns:
        The candidates found and where the oracle was called. Sweeps repeat until a sweep calls
        the oracle nowhere, so every point is certified at the final Rmax.
    """
    g = np.atleast_2d(np.asarray(points, dtype=np.float64))
    if g.ndim != 2 or len(g) == 0:
        raise InvalidParameterError(f"points must have shape (n, d) with n >= 1; got {g.shape}")
    n, d = g.shape
    if isinstance(rmax, str):
        if rmax not in ("candidates", "trivial"):
            raise InvalidParameterError(
                f"rmax must be 'candidates', 'trivial' or an array; got {rmax!r}"
            )
        mode = rmax
        bound = np.ones(d) if rmax == "trivial" else np.zeros(d)
    else:
        mode = "fixed"
        bound = np.asarray(rmax, dtype=np.float64).reshape(-1)
        if bound.shape != (d,):
            raise InvalidParameterError(f"rmax must have shape ({d},); got {bound.shape}")
    order = search_order(g)
    # With Rmax from the candidates, Rmax_i is only an upper bound once Oracle(e_i) has been
    # seen: the vertices are always evaluated (the paper-style Rmax), the rest lazily.
    force = np.isclose(g.max(axis=1), 1.0) if mode == "candidates" else np.zeros(n, dtype=bool)
    best = np.full(n, -np.inf)
    called = np.zeros(n, dtype=bool)
    calls: list[int] = []
    cands: list[Candidate] = []
    seen: set[str] = set()
    target = (1.0 - eps) * (g @ bound) - delta
    bar = progress_bar(n, "lazy search", progress)
    passes = 0
    try:
        while True:
            passes += 1
            grew = False
            for i in order:
                if called[i] or (not force[i] and best[i] >= target[i] - 1e-12):
                    continue
                cand = oracle(g[i])
                if cand.reward.shape != (d,):
                    raise InvalidParameterError(
                        f"oracle returned a reward of shape {cand.reward.shape} for d={d}"
                    )
                called[i] = True
                calls.append(int(i))
                bar.update(1)
                if cand.id in seen:
                    continue
                seen.add(cand.id)
                cands.append(cand)
                best = np.maximum(best, g @ cand.reward)
                if mode == "candidates" and np.any(cand.reward > bound):
                    bound = np.maximum(bound, cand.reward)
                    target = (1.0 - eps) * (g @ bound) - delta
                    grew = True
            if not grew:
                break
    finally:
        bar.close()
    certified = called | (best >= target - 1e-12)
    return LazySearchResult(
        candidates=tuple(cands),
        oracle_points=np.asarray(calls, dtype=np.int64),
        certified=certified,
        rmax=bound,
        n_passes=passes,
    )
