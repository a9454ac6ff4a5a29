"""Exact worst-case gaps of a portfolio over the whole simplex, by linear programming.

For a portfolio P and a reference pool C (OPT(w) = max_{c∈C} w·r_c):

* additive gap  ``max_w OPT(w) − max_{p∈P} w·r_p``: for each c one LP
  ``max t  s.t.  t ≤ w·(r_c − r_p) ∀p, w ∈ Δ`` (the maximum over c of the LP optima);
* multiplicative gap ``max_w 1 − max_p w·r_p / OPT(w)``: for each c a linear-fractional program
  ``min_w max_p (w·r_p)/(w·r_c)``, made linear by the Charnes–Cooper substitution y = w / (w·r_c):
  ``min t  s.t.  y·r_p ≤ t ∀p, y·r_c = 1, y ≥ 0``.

Both are exact (up to the LP solver's 1e-7 feasibility tolerance), unlike gaps on a sample.
Pool members whose cheap upper bound cannot beat the best gap found so far are skipped, so the
number of LPs solved is usually far below |C|. The generalized forms
(1 − eps)·OPT(w) − delta give the tightest delta for a given eps and vice versa.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ...exceptions import InvalidParameterError
from ...types import FloatArray
from ._lp import DenseLPSolver

__all__ = [
    "GapCertificate",
    "WorstCase",
    "certified_delta",
    "certified_eps",
    "certify_gaps",
]


@dataclass(frozen=True)
class WorstCase:
    """A certified worst-case value and a weight vector attaining it.

    Attributes:
        value: The maximum over the simplex.
        at: A maximizing weight vector, shape (d,).
        n_lps: Number of linear programs solved.
        violators: When asked for (``collect_above``), the maximizer of every per-member
            program whose value exceeds that threshold, shape (n, d).
    """

    value: float
    at: FloatArray
    n_lps: int
    violators: FloatArray | None = None


@dataclass(frozen=True)
class GapCertificate:
    """Exact worst-case gaps of a portfolio relative to a pool over the whole simplex."""

    additive: WorstCase
    multiplicative: WorstCase

    @property
    def additive_gap(self) -> float:
        """max_w OPT(w) − max_P w·r."""
        return self.additive.value

    @property
    def multiplicative_gap(self) -> float:
        """max_w 1 − max_P w·r / OPT(w)."""
        return self.multiplicative.value


def _inputs(portfolio: npt.ArrayLike, pool: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    p = np.atleast_2d(np.asarray(portfolio, dtype=np.float64))
    c = np.atleast_2d(np.asarray(pool, dtype=np.float64))
    if p.ndim != 2 or c.ndim != 2 or p.shape[0] == 0 or c.shape[0] == 0 or p.shape[1] != c.shape[1]:
        raise InvalidParameterError(
            f"portfolio and pool must be non-empty reward arrays of shapes (k, d) and (m, d); "
            f"got {p.shape} and {c.shape}"
        )
    for name, arr in (("portfolio", p), ("pool", c)):
        _check_rewards(arr, name)
    return p, c


def _check_rewards(arr: FloatArray, name: str) -> None:
    """Rewards must be normalized: the LP certificate assumes 0 <= r <= 1 (non-negative)."""
    bad = np.argwhere(~np.isfinite(arr) | (arr < 0) | (arr > 1))
    if bad.size:
        i, j = (int(x) for x in bad[0])
        raise InvalidParameterError(
            f"{name} rewards must be finite numbers in [0, 1]; row {i}, column {j} is "
            f"{float(arr[i, j])!r} ({len(bad)} bad entries); normalize rewards first"
        )


def _probe(d: int) -> FloatArray:
    # Vertices, barycentre and edge midpoints: a cheap lower bound that lets most LPs be skipped.
    eye = np.eye(d)
    mids = (eye[:, None, :] + eye[None, :, :]).reshape(-1, d) / 2.0
    return np.concatenate([eye, np.full((1, d), 1.0 / d), mids])


def certified_delta(portfolio: npt.ArrayLike, pool: npt.ArrayLike, eps: float = 0.0) -> WorstCase:
    """Smallest delta with max_P w·r ≥ (1 − eps)·OPT(w) − delta for every w of the simplex.

    That is max_w [(1 − eps)·max_C w·r − max_P w·r]; with eps = 0 the exact additive gap.

    Args:
        portfolio: Member rewards, shape (k, d).
        pool: Reference rewards defining OPT, shape (m, d).
        eps: Multiplicative slack in [0, 1].

    Returns:
        The exact maximum and a weight vector attaining it.
    """
    p, c = _inputs(portfolio, pool)
    k, d = p.shape
    scaled = (1.0 - eps) * c
    probe = _probe(d)
    vals = (probe @ scaled.T).max(axis=1) - (probe @ p.T).max(axis=1)
    best_i = int(np.argmax(vals))
    best, best_w = float(vals[best_i]), probe[best_i].copy()
    # min_p max_i (s_c − r_p)_i bounds the LP of c from above (a max over w of a min over p).
    ub = (scaled[:, None, :] - p[None, :, :]).max(axis=2).min(axis=1)
    n_lps = 0
    solver = DenseLPSolver()
    a_eq = np.concatenate([np.ones(d), [0.0]])[None, :]
    bounds: list[tuple[float | None, float | None]] = [(0.0, None)] * d + [(None, None)]
    obj = np.concatenate([np.zeros(d), [-1.0]])
    for j in np.argsort(-ub, kind="stable"):
        if ub[j] <= best + 1e-12:
            break
        a_ub = np.concatenate([p - scaled[j], np.ones((k, 1))], axis=1)
        x = solver.solve(obj, a_ub, np.zeros(k), a_eq, np.ones(1), bounds)
        n_lps += 1
        w = np.clip(x[:d], 0.0, None)
        w = w / w.sum()
        val = float(scaled[j] @ w - (p @ w).max())  # exact value at the LP's w, not the LP's t
        if val > best:
            best, best_w = val, w
    return WorstCase(value=best, at=best_w, n_lps=n_lps)


def certified_eps(
    portfolio: npt.ArrayLike,
    pool: npt.ArrayLike,
    delta: float = 0.0,
    *,
    collect_above: float | None = None,
) -> WorstCase:
    """Smallest eps with max_P w·r ≥ (1 − eps)·OPT(w) − delta for every w of the simplex.

    That is max_w 1 − (max_P w·r + delta) / max_C w·r over the w with OPT(w) > 0; with
    delta = 0 the exact multiplicative gap. Solved per pool member with the Charnes–Cooper
    linear program, so the answer is exact (no bisection).

    Args:
        portfolio: Member rewards, shape (k, d).
        pool: Reference rewards defining OPT, shape (m, d).
        delta: Additive slack ≥ 0.
        collect_above: Also return every per-member maximizer with a value above this
            (cutting planes for a cover); this solves more programs.

    Returns:
        The exact maximum and a weight vector attaining it.
    """
    p, c = _inputs(portfolio, pool)
    k, d = p.shape
    stop = np.inf if collect_above is None else collect_above
    found: list[FloatArray] = []
    shifted = p + delta  # (w·r_p + delta) = w·(r_p + delta·1) on the simplex
    probe = _probe(d)
    opt = (probe @ c.T).max(axis=1)
    val_p = (probe @ shifted.T).max(axis=1)
    vals = np.where(opt > 0, 1.0 - val_p / np.where(opt > 0, opt, 1.0), -np.inf)
    best_i = int(np.argmax(vals))
    best, best_w = float(vals[best_i]), probe[best_i].copy()
    # 1 − max_p min_{i: c_i > 0} a_pi / c_i bounds the program of c from above.
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(c[:, None, :] > 0, shifted[None, :, :] / c[:, None, :], np.inf)
    ub = 1.0 - ratio.min(axis=2).max(axis=1)
    ub[c.max(axis=1) <= 0] = -np.inf  # w·r_c = 0 everywhere: c never sets a positive OPT
    n_lps = 0
    solver = DenseLPSolver()
    bounds: list[tuple[float | None, float | None]] = [(0.0, None)] * d + [(None, None)]
    obj = np.concatenate([np.zeros(d), [1.0]])
    a_ub = np.concatenate([shifted, -np.ones((k, 1))], axis=1)
    for j in np.argsort(-ub, kind="stable"):
        if ub[j] <= min(best, stop) + 1e-12:
            break
        a_eq = np.concatenate([c[j], [0.0]])[None, :]
        x = solver.solve(obj, a_ub, np.zeros(k), a_eq, np.ones(1), bounds)
        n_lps += 1
        y = np.clip(x[:d], 0.0, None)
        if y.sum() <= 0:
            continue
        w = y / y.sum()
        o = float((c @ w).max())
        if o <= 0:
            continue
        val = 1.0 - float((shifted @ w).max()) / o
        if val > stop:
            found.append(w)
        if val > best:
            best, best_w = val, w
    violators = None
    if collect_above is not None:
        violators = np.vstack(found) if found else np.zeros((0, d))
    return WorstCase(value=best, at=best_w, n_lps=n_lps, violators=violators)


def certify_gaps(portfolio: npt.ArrayLike, pool: npt.ArrayLike) -> GapCertificate:
    """Exact worst-case additive and multiplicative gaps of ``portfolio`` against ``pool``.

    Args:
        portfolio: Member rewards, shape (k, d).
        pool: Reference rewards defining OPT(w), shape (m, d). Include the portfolio's own
            members for gaps ≥ 0; an independent reference set can give negative gaps.

    Returns:
        Both gaps with a maximizing weight vector each.

    >>> cert = certify_gaps([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0], [0.6, 0.6]])
    >>> round(cert.additive_gap, 6), round(cert.multiplicative_gap, 6)
    (0.1, 0.166667)
    """
    return GapCertificate(
        additive=certified_delta(portfolio, pool, 0.0),
        multiplicative=certified_eps(portfolio, pool, 0.0),
    )
