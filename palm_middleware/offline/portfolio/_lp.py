"""Small dense linear programs solved by HiGHS with little per-call overhead.

The certificate (:mod:`.certify`) solves thousands of tiny LPs (d + 1 variables, tens of rows).
``scipy.optimize.linprog`` spends about 85% of such a call in Python: input cleaning, option
validation (it builds a HiGHS options manager per option), sparse conversion and result
packing; HiGHS itself runs in ~0.15 ms. :func:`solve_lp` hands HiGHS the very model and options
``linprog(method="highs")`` would (same CSC matrix, same row order, same option values, a reset
solver per call), so the solution is the same to the last bit, and it keeps linprog's feasibility
check of the result. It goes through scipy's bundled HiGHS bindings, which are private: if they
are missing or the fast path meets anything but a clean optimum, it falls back to ``linprog``,
which then also produces the error message. :class:`DenseLPSolver` keeps one HiGHS instance
for a sequence of LPs.
"""

from __future__ import annotations

import importlib
import math
from functools import cache
from typing import Any

import numpy as np

from ...exceptions import PalmError
from ...types import FloatArray

__all__ = ["DenseLPSolver", "solve_lp"]

Bounds = list[tuple[float | None, float | None]]

# linprog's result check: x within bounds and rows satisfied up to sqrt(tol)·10, tol = 1e-9.
_FEAS_TOL = math.sqrt(1e-9) * 10


@cache
def _highs_core() -> Any:
    """scipy's bundled HiGHS bindings, or None when this scipy does not ship them."""
    try:
        return importlib.import_module("scipy.optimize._highspy._core")
    except ImportError:  # pragma: no cover - depends on the installed scipy
        return None


@cache
def _options(core: Any) -> Any:
    # The values linprog(method="highs") sets (scipy/optimize/_linprog_highs.py); every other
    # option keeps its HiGHS default there too.
    opts = core.HighsOptions()
    opts.presolve = "on"
    opts.highs_debug_level = 0
    opts.log_to_console = False
    opts.output_flag = False
    opts.simplex_strategy = 1  # dual simplex
    return opts


class DenseLPSolver:
    """Solves a sequence of small dense LPs with one HiGHS instance.

    Creating a HiGHS instance costs about as much as a third of a small solve, so the
    instance is kept and fully reset (``clear``: model, solution, basis and options) before
    each LP: nothing carries over from one LP to the next, as with linprog's fresh instance.
    Not thread-safe; use one solver per thread.
    """

    def __init__(self) -> None:
        self._core = _highs_core()
        self._highs: Any = None if self._core is None else self._core._Highs()

    def solve(
        self,
        c: FloatArray,
        a_ub: FloatArray,
        b_ub: FloatArray,
        a_eq: FloatArray,
        b_eq: FloatArray,
        bounds: Bounds,
    ) -> FloatArray:
        """``min c·x  s.t.  a_ub x ≤ b_ub, a_eq x = b_eq, bounds``; the optimal x.

        Same arguments and the same answer as ``scipy.optimize.linprog(..., method="highs")``
        with dense arrays and a list of (low, high) bounds.

        Raises:
            PalmError: The LP has no optimal solution (infeasible, unbounded, numerical
                trouble).
        """
        if self._highs is not None:
            x = self._solve_fast(c, a_ub, b_ub, a_eq, b_eq, bounds)
            if x is not None:
                return x
        return _solve_linprog(c, a_ub, b_ub, a_eq, b_eq, bounds)

    def _solve_fast(
        self,
        c: FloatArray,
        a_ub: FloatArray,
        b_ub: FloatArray,
        a_eq: FloatArray,
        b_eq: FloatArray,
        bounds: Bounds,
    ) -> FloatArray | None:
        core, highs = self._core, self._highs
        n_ub = len(b_ub)
        a = np.vstack((a_ub, a_eq))
        n_row, n_col = a.shape
        # CSC exactly as scipy.sparse.csc_array(a) stores it: explicit zeros dropped, rows
        # sorted within each column.
        at = a.T
        nz = at != 0
        cols, rows = np.nonzero(nz)
        start = np.zeros(n_col + 1, dtype=np.int32)
        np.cumsum(nz.sum(axis=1), out=start[1:])
        lo = np.array([-np.inf if b[0] is None else b[0] for b in bounds], dtype=np.float64)
        hi = np.array([np.inf if b[1] is None else b[1] for b in bounds], dtype=np.float64)
        rhs = np.concatenate((b_ub, b_eq)).astype(np.float64)
        lp = core.HighsLp()
        lp.num_col_ = n_col
        lp.num_row_ = n_row
        lp.a_matrix_.num_col_ = n_col
        lp.a_matrix_.num_row_ = n_row
        lp.a_matrix_.format_ = core.MatrixFormat.kColwise
        lp.col_cost_ = np.asarray(c, dtype=np.float64)
        lp.col_lower_ = lo
        lp.col_upper_ = hi
        lp.row_lower_ = np.concatenate((np.full(n_ub, -np.inf), b_eq)).astype(np.float64)
        lp.row_upper_ = rhs
        lp.a_matrix_.start_ = start
        lp.a_matrix_.index_ = rows.astype(np.int32)
        lp.a_matrix_.value_ = at[cols, rows]
        highs.clear()
        if highs.passOptions(_options(core)) == core.HighsStatus.kError:
            return None
        if highs.passModel(lp) == core.HighsStatus.kError:
            return None
        if highs.run() == core.HighsStatus.kError:
            return None
        if highs.getModelStatus() != core.HighsModelStatus.kOptimal:
            return None
        sol = highs.getSolution()
        x: FloatArray = np.array(sol.col_value, dtype=np.float64)
        slack = rhs - np.asarray(sol.row_value, dtype=np.float64)
        feasible = (
            not (np.isnan(x).any() or np.isnan(slack).any())
            and bool(np.all((x >= lo - _FEAS_TOL) & (x <= hi + _FEAS_TOL)))
            and not bool((slack[:n_ub] < -_FEAS_TOL).any())
            and not bool((np.abs(slack[n_ub:]) > _FEAS_TOL).any())
        )
        return x if feasible else None


def solve_lp(
    c: FloatArray,
    a_ub: FloatArray,
    b_ub: FloatArray,
    a_eq: FloatArray,
    b_eq: FloatArray,
    bounds: Bounds,
) -> FloatArray:
    """One LP with a fresh :class:`DenseLPSolver` (see :meth:`DenseLPSolver.solve`)."""
    return DenseLPSolver().solve(c, a_ub, b_ub, a_eq, b_eq, bounds)


def _solve_linprog(
    c: FloatArray,
    a_ub: FloatArray,
    b_ub: FloatArray,
    a_eq: FloatArray,
    b_eq: FloatArray,
    bounds: Bounds,
) -> FloatArray:
    from scipy.optimize import linprog

    res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
    if res.status != 0:
        raise PalmError(f"certificate LP failed (status {res.status}): {res.message}")
    x: FloatArray = np.asarray(res.x, dtype=np.float64)
    return x
