"""Set-cover pruning of a candidate pool (palm.md §5.3, §9.2, §9.3).

A candidate c *covers* a weight vector u of the universe U when
``u·r_c ≥ (1 − eps')·best(u) − delta'``. A portfolio is a set cover of U. Provided here:

* :func:`greedy_set_cover` (at most (1 + ln|U|) times the optimum) and
  :func:`exact_set_cover` (an integer program solved by ``scipy.optimize.milp``);
* :func:`budgeted_cover`: the smallest worst-case gap reachable with at most k members, by
  bisection over the finite set of candidate gap values with a set-cover feasibility check;
* :func:`max_coverage`: the largest user mass covered by k members (greedy, 1 − 1/e);
* a noise-aware cover test (:func:`coverage_matrix` with ``stderr`` and ``z``) that compares a
  lower confidence bound of each candidate with an upper confidence bound of the best.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ...exceptions import ConvergenceWarning, InvalidParameterError
from ...types import FloatArray
from .certify import _check_rewards

__all__ = [
    "BudgetedCover",
    "budgeted_cover",
    "coverage_matrix",
    "exact_set_cover",
    "greedy_set_cover",
    "max_coverage",
    "required_slack",
    "set_cover",
]

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
CoverMethod = Literal["greedy", "exact"]

# Float slack in the cover test, so a candidate always covers the points where it is the best.
_TOL = 1e-12


def _check(universe: npt.ArrayLike, rewards: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    u = np.atleast_2d(np.asarray(universe, dtype=np.float64))
    r = np.atleast_2d(np.asarray(rewards, dtype=np.float64))
    if u.ndim != 2 or r.ndim != 2 or u.shape[1] != r.shape[1] or len(u) == 0 or len(r) == 0:
        raise InvalidParameterError(
            f"universe and rewards must be non-empty arrays of shapes (n, d) and (m, d); got "
            f"{u.shape} and {r.shape}"
        )
    _check_rewards(r, "candidate")
    return u, r


def _bounds(
    u: FloatArray, r: FloatArray, stderr: npt.ArrayLike | None, z: float
) -> tuple[FloatArray, FloatArray]:
    """(lower values, upper values) of shape (n, m) under the noise model."""
    if stderr is None or z == 0.0:
        v = u @ r.T
        return v, v
    s = np.asarray(stderr, dtype=np.float64)
    if s.shape != r.shape or np.any(s < 0) or not np.all(np.isfinite(s)):
        raise InvalidParameterError(
            f"stderr must be finite, >= 0 and of shape {r.shape}; got shape {s.shape}"
        )
    if z < 0:
        raise InvalidParameterError(f"z must be >= 0; got {z}")
    return u @ (r - z * s).T, u @ (r + z * s).T


def coverage_matrix(
    universe: npt.ArrayLike,
    rewards: npt.ArrayLike,
    eps: float,
    delta: float,
    *,
    best: npt.ArrayLike | None = None,
    stderr: npt.ArrayLike | None = None,
    z: float = 0.0,
) -> BoolArray:
    """Which candidate covers which point: ``u·r_c ≥ (1 − eps)·best(u) − delta``.

    Args:
        universe: Points to cover, shape (n, d).
        rewards: Candidate rewards, shape (m, d).
        eps: Multiplicative slack eps' ≥ 0.
        delta: Additive slack delta' ≥ 0.
        best: Reference value per point, shape (n,); defaults to the best candidate (its upper
            confidence bound when noise-aware).
        stderr: Standard errors of ``rewards``, shape (m, d), for the noise-aware test.
        z: Width of the confidence bounds in standard errors (0 ignores ``stderr``).

    Returns:
        Boolean array of shape (n, m).
    """
    u, r = _check(universe, rewards)
    lo, hi = _bounds(u, r, stderr, z)
    ref = hi.max(axis=1) if best is None else np.asarray(best, dtype=np.float64).reshape(-1)
    if ref.shape != (len(u),):
        raise InvalidParameterError(f"best must have shape ({len(u)},); got {ref.shape}")
    cover: BoolArray = lo + _TOL >= ((1.0 - eps) * ref - delta)[:, None]
    return cover


def _check_cover(cover: npt.ArrayLike) -> BoolArray:
    c = np.asarray(cover, dtype=bool)
    if c.ndim != 2 or c.shape[1] == 0:
        raise InvalidParameterError(f"cover must have shape (n_points, n_sets); got {c.shape}")
    bare = int((~c.any(axis=1)).sum())
    if bare:
        raise InvalidParameterError(
            f"{bare} of {len(c)} points are covered by no candidate; raise eps'/delta', lower "
            "the noise width z, or pass best values the pool can reach"
        )
    return c


def greedy_set_cover(
    cover: npt.ArrayLike,
    *,
    priority: npt.ArrayLike | None = None,
    weights: npt.ArrayLike | None = None,
) -> IntArray:
    """Greedy set cover: repeatedly add the set covering the most uncovered (weighted) points.

    Args:
        cover: Boolean array of shape (n_points, n_sets).
        priority: Tie-break score per set, shape (n_sets,); higher wins (e.g. mean value).
            Remaining ties go to the lower index.
        weights: Weight per point, shape (n_points,) (e.g. user mass); defaults to 1.

    Returns:
        Chosen set indices, in the order they were added.
    """
    c = _check_cover(cover)
    n, m = c.shape
    pri = np.zeros(m) if priority is None else np.asarray(priority, dtype=np.float64)
    if weights is None:
        return _greedy_unit(c, pri)
    wts = np.asarray(weights, dtype=np.float64)
    cf = c.astype(np.float64)
    uncovered = np.ones(n, dtype=bool)
    chosen: list[int] = []
    while uncovered.any():
        gain = wts[uncovered] @ cf[uncovered]
        top = gain.max()
        if top <= 0:  # only zero-weight points left: any cover of them is free to skip
            break
        ties = np.flatnonzero(gain >= top - 1e-12 * max(1.0, top))
        j = int(ties[np.argmax(pri[ties])])  # argmax returns the first (lowest index) maximum
        chosen.append(j)
        uncovered &= ~c[:, j]
    return np.asarray(chosen, dtype=np.int64)


def _greedy_unit(c: BoolArray, pri: FloatArray) -> IntArray:
    """:func:`greedy_set_cover` with unit weights, keeping the gains up to date incrementally.

    Gains are integer counts here, so subtracting the points each pick covers gives exactly the
    numbers a recount would (same picks, same ties), while touching every point only once
    instead of rescanning the (n, m) matrix per pick.
    """
    gain = c.sum(axis=0, dtype=np.int64)
    uncovered = np.ones(len(c), dtype=bool)
    chosen: list[int] = []
    while uncovered.any():
        top = float(gain.max())  # > 0: every point is covered by some set (_check_cover)
        ties = np.flatnonzero(gain >= top - 1e-12 * max(1.0, top))
        j = int(ties[np.argmax(pri[ties])])  # argmax returns the first (lowest index) maximum
        chosen.append(j)
        newly = uncovered & c[:, j]
        gain -= c[newly].sum(axis=0, dtype=np.int64)
        uncovered &= ~newly
    return np.asarray(chosen, dtype=np.int64)


def exact_set_cover(cover: npt.ArrayLike, *, time_limit: float | None = None) -> IntArray:
    """Minimum set cover by integer programming (``scipy.optimize.milp``, HiGHS).

    ``min Σ x_c  s.t.  Σ_{c covers u} x_c ≥ 1 ∀u, x ∈ {0, 1}``. Duplicate rows are merged first.

    Args:
        cover: Boolean array of shape (n_points, n_sets).
        time_limit: Seconds before HiGHS stops; a stop before optimality warns
            (:class:`ConvergenceWarning`) and returns the best cover found.

    Returns:
        Chosen set indices, sorted.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_array

    c = _check_cover(cover)
    rows = np.unique(c, axis=0)
    m = c.shape[1]
    options: dict[str, float] = {} if time_limit is None else {"time_limit": float(time_limit)}
    res = milp(
        np.ones(m),
        constraints=LinearConstraint(csr_array(rows.astype(np.float64)), lb=1.0, ub=np.inf),
        integrality=np.ones(m),
        bounds=Bounds(0.0, 1.0),
        options=options,
    )
    if res.x is None:
        raise InvalidParameterError(f"set-cover ILP found no solution: {res.message}")
    if res.status != 0:
        warnings.warn(
            f"set-cover ILP stopped before optimality ({res.message}); the cover may not be "
            "minimum",
            ConvergenceWarning,
            stacklevel=2,
        )
    return np.flatnonzero(np.asarray(res.x) > 0.5).astype(np.int64)


def set_cover(
    cover: npt.ArrayLike,
    method: CoverMethod = "greedy",
    *,
    priority: npt.ArrayLike | None = None,
    time_limit: float | None = None,
) -> IntArray:
    """Dispatch to :func:`greedy_set_cover` or :func:`exact_set_cover`."""
    if method == "greedy":
        return greedy_set_cover(cover, priority=priority)
    if method == "exact":
        return exact_set_cover(cover, time_limit=time_limit)
    raise InvalidParameterError(f"method must be 'greedy' or 'exact'; got {method!r}")


def required_slack(
    universe: npt.ArrayLike,
    rewards: npt.ArrayLike,
    kind: Literal["multiplicative", "additive"] = "multiplicative",
    *,
    eps: float = 0.0,
    delta: float = 0.0,
    best: npt.ArrayLike | None = None,
) -> FloatArray:
    """The slack each candidate needs to cover each point, shape (n, m).

    ``kind="multiplicative"``: the least eps' with u·r_c ≥ (1 − eps')·best(u) − delta;
    ``kind="additive"``: the least delta' with u·r_c ≥ (1 − eps)·best(u) − delta'.
    Points with best(u) = 0 need no slack (−inf) in the multiplicative form.
    """
    u, r = _check(universe, rewards)
    v = u @ r.T
    ref = v.max(axis=1) if best is None else np.asarray(best, dtype=np.float64).reshape(-1)
    if kind == "additive":
        out: FloatArray = (1.0 - eps) * ref[:, None] - v
        return out
    if kind != "multiplicative":
        raise InvalidParameterError(f"kind must be 'multiplicative' or 'additive'; got {kind!r}")
    pos = ref > 0
    safe = np.where(pos, ref, 1.0)[:, None]
    return np.where(pos[:, None], 1.0 - (v + delta) / safe, -np.inf)


@dataclass(frozen=True)
class BudgetedCover:
    """Result of :func:`budgeted_cover`.

    Attributes:
        indices: Chosen candidates (at most k).
        gap: Worst slack over the universe with these candidates (eps' or delta').
        n_feasibility_checks: Set-cover problems solved during the bisection.
    """

    indices: IntArray
    gap: float
    n_feasibility_checks: int


def budgeted_cover(
    universe: npt.ArrayLike,
    rewards: npt.ArrayLike,
    k: int,
    *,
    kind: Literal["multiplicative", "additive"] = "multiplicative",
    eps: float = 0.0,
    delta: float = 0.0,
    best: npt.ArrayLike | None = None,
    method: CoverMethod = "exact",
    time_limit: float | None = None,
) -> BudgetedCover:
    """The best worst-case gap over the universe reachable with at most ``k`` candidates.

    Bisection over the sorted distinct values of :func:`required_slack` (the optimum is one of
    them), checking feasibility "a cover of size ≤ k exists" with a set-cover solve. With
    ``method="exact"`` the result is optimal on the universe; ``"greedy"`` is faster but may
    stop at a larger gap.

    Args:
        universe: Points, shape (n, d).
        rewards: Candidate rewards, shape (m, d).
        k: Budget (≥ 1).
        kind: Bisect eps' (with ``delta`` fixed) or delta' (with ``eps`` fixed).
        eps: Fixed multiplicative slack for ``kind="additive"``.
        delta: Fixed additive slack for ``kind="multiplicative"``.
        best: Reference values per point; defaults to the best candidate.
        method: Feasibility check by ``"exact"`` ILP or ``"greedy"`` cover.
        time_limit: Per-ILP time limit in seconds.

    Returns:
        The chosen candidates and their worst slack on the universe.
    """
    if k < 1:
        raise InvalidParameterError(f"budget k must be >= 1; got {k}")
    need = required_slack(universe, rewards, kind, eps=eps, delta=delta, best=best)
    # The optimum is a value some (point, candidate) pair needs; points with -inf need nothing.
    finite = need[np.isfinite(need)]
    lo_gap = float(np.max(np.min(need, axis=1)))  # the whole pool's own worst slack
    values = np.unique(finite[finite >= lo_gap]) if finite.size else np.zeros(1)
    if values.size == 0:
        values = np.array([lo_gap])
    checks = 0

    def solve(t: float) -> IntArray:
        nonlocal checks
        checks += 1
        cov = need <= t + _TOL
        quick = greedy_set_cover(cov)
        # A greedy cover within budget already proves feasibility; the ILP only decides the rest.
        if method == "greedy" or len(quick) <= k:
            return quick
        return exact_set_cover(cov, time_limit=time_limit)

    lo, hi = 0, len(values) - 1
    best_sel = solve(float(values[hi]))
    if len(best_sel) > k:  # only possible with the greedy check: fall back to the top-k by use
        best_sel = best_sel[:k]
    while lo < hi:
        mid = (lo + hi) // 2
        sel = solve(float(values[mid]))
        if len(sel) <= k:
            hi, best_sel = mid, sel
        else:
            lo = mid + 1
    worst = float(np.max(np.min(need[:, best_sel], axis=1)))
    return BudgetedCover(indices=np.sort(best_sel), gap=worst, n_feasibility_checks=checks)


def max_coverage(
    cover: npt.ArrayLike, k: int, weights: npt.ArrayLike | None = None
) -> tuple[IntArray, float]:
    """Greedy budgeted maximum coverage (a 1 − 1/e approximation).

    Args:
        cover: Boolean array of shape (n_points, n_sets).
        k: Number of sets to choose (≥ 1).
        weights: Mass per point (e.g. a user distribution), shape (n_points,); defaults to
            uniform. Need not be normalized.

    Returns:
        (chosen set indices in order, covered share of the total mass in [0, 1]).
    """
    c = np.asarray(cover, dtype=bool)
    if c.ndim != 2 or c.shape[1] == 0:
        raise InvalidParameterError(f"cover must have shape (n_points, n_sets); got {c.shape}")
    if k < 1:
        raise InvalidParameterError(f"budget k must be >= 1; got {k}")
    n = c.shape[0]
    wts = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if wts.shape != (n,) or np.any(wts < 0) or wts.sum() <= 0:
        raise InvalidParameterError(
            f"weights must be >= 0, not all zero, with shape ({n},); got shape {wts.shape}"
        )
    cf = c.astype(np.float64)
    uncovered = np.ones(n, dtype=bool)
    chosen: list[int] = []
    for _ in range(min(k, c.shape[1])):
        gain = wts[uncovered] @ cf[uncovered]
        if gain.max() <= 0:
            break
        j = int(np.argmax(gain))
        chosen.append(j)
        uncovered &= ~c[:, j]
    mass = float(wts[~uncovered].sum() / wts.sum())
    return np.asarray(chosen, dtype=np.int64), mass
