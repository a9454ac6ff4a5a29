"""Routing: pick the portfolio member that maximizes the user's scalarized reward w·r̂."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .exceptions import InvalidParameterError
from .portfolio.manifest import Portfolio
from .traits import check_simplex
from .types import FloatArray, MemberId

__all__ = ["Route", "RouteMode", "Router", "worst_case_values"]

RouteMode = Literal["mean", "thompson", "robust", "compare"]

#: Values closer than this count as tied; ties go to the member listed first in the manifest.
TIE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class Route:
    """A routing decision that explains itself.

    Attributes:
        member: the chosen member.
        value: its score (w·r̂, or the worst case over the credible set in robust mode).
        runner_up: the next best member (None for a one-member portfolio).
        margin: value(member) − value(runner_up); 0 means a tie broken by manifest order.
        mode: how weights were turned into a choice.
        scores: every member's score, in manifest order.
    """

    member: MemberId
    index: int
    value: float
    runner_up: MemberId | None
    margin: float
    mode: RouteMode
    scores: FloatArray

    def explain(self) -> str:
        """One line a person can read."""
        if self.mode == "compare":
            return (
                f"{self.member} (value {self.value:.3f}) for an A/B comparison; routing "
                f"would serve {self.runner_up} (value {self.value - self.margin:.3f})"
            )
        if self.runner_up is None:
            return f"{self.member} (only member)"
        tie = " (tie, broken by manifest order)" if self.margin <= TIE_TOLERANCE else ""
        what = "worst-case value" if self.mode == "robust" else "value"
        return (
            f"{self.member} ({what} {self.value:.3f}) over {self.runner_up} by "
            f"{self.margin:.3f}{tie}"
        )


class Router:
    """Chooses members of a :class:`Portfolio` by scalarized reward.

    Routing costs one (n_members × n_traits) matrix-vector product; only members on the upper
    convex hull of the reward profiles can ever be chosen.
    """

    def __init__(self, portfolio: Portfolio) -> None:
        self.portfolio = portfolio
        self._rewards = np.ascontiguousarray(portfolio.rewards)
        self._ids = portfolio.ids

    def scores(self, weights: FloatArray) -> FloatArray:
        """w·r̂ for every member."""
        out: FloatArray = self._rewards @ weights
        return out

    def route(self, weights: FloatArray, *, mode: RouteMode = "mean") -> Route:
        """The member maximizing w·r̂ for ``weights`` (a posterior mean or a posterior draw)."""
        w = np.asarray(weights, dtype=np.float64)
        check_simplex(w, self.portfolio.space)
        return self._pick(self._rewards @ w, mode)

    def route_robust(self, lower: FloatArray, upper: FloatArray) -> Route:
        """The member with the best worst case over {w on the simplex, lower ≤ w ≤ upper}."""
        return self._pick(worst_case_values(self._rewards, lower, upper), "robust")

    def _pick(self, scores: FloatArray, mode: RouteMode) -> Route:
        best = float(scores.max())
        # First index within tolerance of the max: deterministic, independent of float noise.
        i = int(np.flatnonzero(scores >= best - TIE_TOLERANCE)[0])
        if len(scores) == 1:
            return Route(self._ids[0], 0, best, None, 0.0, mode, scores)
        rest = scores.copy()
        rest[i] = -np.inf
        j = int(np.argmax(rest))
        return Route(
            member=self._ids[i],
            index=i,
            value=float(scores[i]),
            runner_up=self._ids[j],
            margin=max(float(scores[i] - scores[j]), 0.0),
            mode=mode,
            scores=scores,
        )


def worst_case_values(rewards: FloatArray, lower: FloatArray, upper: FloatArray) -> FloatArray:
    """min over {w ∈ simplex, lower ≤ w ≤ upper} of w·r, for every row r of ``rewards``.

    Exact: start from ``lower`` and pour the remaining mass into the traits where r is smallest.
    """
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    if lo.sum() > 1 + 1e-9 or hi.sum() < 1 - 1e-9 or np.any(lo > hi + 1e-12):
        raise InvalidParameterError(
            f"credible box is empty on the simplex: sum(lower)={lo.sum():.4f}, "
            f"sum(upper)={hi.sum():.4f}"
        )
    out = np.empty(rewards.shape[0])
    room = np.maximum(hi - lo, 0.0)
    for k, r in enumerate(rewards):
        left = 1.0 - float(lo.sum())
        v = float(lo @ r)
        for t in np.argsort(r, kind="stable"):
            take = min(left, float(room[t]))
            v += take * float(r[t])
            left -= take
            if left <= 0:
                break
        out[k] = v
    return out
