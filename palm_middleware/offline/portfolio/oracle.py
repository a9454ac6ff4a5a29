"""Candidate oracles: the step that turns a weight vector into a policy with a measured profile.

An oracle is any callable ``w -> Candidate`` (:class:`Oracle`). Real oracles train, mix or prompt
a model (wrap them with :class:`CallableOracle`); offline oracles answer from a pool of
pre-measured policies (:class:`PoolOracle`, :class:`NearestWeightOracle`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from ...exceptions import InvalidParameterError
from ...types import FloatArray

__all__ = [
    "CallableOracle",
    "Candidate",
    "NearestWeightOracle",
    "Oracle",
    "PoolOracle",
    "stack_rewards",
    "stack_stderrs",
]


@dataclass(frozen=True)
class Candidate:
    """A policy with its measured reward profile.

    Attributes:
        id: Unique name of the policy.
        reward: Mean normalized rewards, shape (d,), in [0, 1].
        stderr: Standard errors of ``reward``, shape (d,), or None when unknown.
        weight: The weight vector the policy was trained for, shape (d,), or None.
    """

    id: str
    reward: FloatArray
    stderr: FloatArray | None = None
    weight: FloatArray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        r = np.asarray(self.reward, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(r)) or r.min(initial=0.0) < 0 or r.max(initial=0.0) > 1:
            raise InvalidParameterError(
                f"candidate {self.id!r}: rewards must be finite and in [0, 1]; got {r.tolist()}"
            )
        object.__setattr__(self, "reward", r)
        if self.stderr is not None:
            s = np.asarray(self.stderr, dtype=np.float64).reshape(-1)
            if s.shape != r.shape or not np.all(np.isfinite(s)) or np.any(s < 0):
                raise InvalidParameterError(
                    f"candidate {self.id!r}: stderr must be finite, >= 0 and of length "
                    f"{r.size}; got {s.tolist()}"
                )
            object.__setattr__(self, "stderr", s)
        if self.weight is not None:
            object.__setattr__(
                self, "weight", np.asarray(self.weight, dtype=np.float64).reshape(-1)
            )


@runtime_checkable
class Oracle(Protocol):
    """Anything that returns a (near-)optimal candidate for a weight vector."""

    def __call__(self, w: FloatArray) -> Candidate:
        """The candidate for weight vector ``w`` (shape (d,), on the simplex)."""
        ...


def stack_rewards(candidates: Sequence[Candidate]) -> FloatArray:
    """Reward profiles as an array of shape (n_candidates, d)."""
    if not candidates:
        return np.zeros((0, 0))
    return np.vstack([c.reward for c in candidates])


def stack_stderrs(candidates: Sequence[Candidate]) -> FloatArray:
    """Standard errors as an array of shape (n_candidates, d); unknown ones are 0."""
    if not candidates:
        return np.zeros((0, 0))
    return np.vstack(
        [np.zeros_like(c.reward) if c.stderr is None else c.stderr for c in candidates]
    )


class PoolOracle:
    """Answers with the best pre-measured candidate for w (argmax of w·r, lowest index on ties).

    Args:
        candidates: The pool; must not be empty.
    """

    def __init__(self, candidates: Sequence[Candidate]) -> None:
        if not candidates:
            raise InvalidParameterError("PoolOracle needs at least one candidate; got none")
        self.candidates = tuple(candidates)
        self._rewards = stack_rewards(self.candidates)
        self.n_calls = 0

    def __call__(self, w: FloatArray) -> Candidate:
        """The pool member maximizing ``w · reward``."""
        self.n_calls += 1
        vals = self._rewards @ np.asarray(w, dtype=np.float64)
        return self.candidates[int(np.argmax(vals))]


class NearestWeightOracle:
    """Answers with the candidate whose training weight is nearest to w (ℓ1 distance).

    This models "the policy we would have trained at w" when only a finite set of trained
    policies exists; unlike :class:`PoolOracle` it does not peek at the rewards.

    Args:
        candidates: The pool; every candidate needs a ``weight``.
    """

    def __init__(self, candidates: Sequence[Candidate]) -> None:
        if not candidates:
            raise InvalidParameterError(
                "NearestWeightOracle needs at least one candidate; got none"
            )
        missing = [c.id for c in candidates if c.weight is None]
        if missing:
            raise InvalidParameterError(
                f"NearestWeightOracle needs the training weight of every candidate; missing for "
                f"{missing[:5]}; add w_<trait> columns or use PoolOracle"
            )
        self.candidates = tuple(candidates)
        self._weights = np.vstack([c.weight for c in self.candidates if c.weight is not None])
        self.n_calls = 0

    def __call__(self, w: FloatArray) -> Candidate:
        """The candidate trained nearest to ``w``."""
        self.n_calls += 1
        dist = np.abs(self._weights - np.asarray(w, dtype=np.float64)).sum(axis=1)
        return self.candidates[int(np.argmin(dist))]


RewardFn = Callable[[FloatArray], "Candidate | npt.ArrayLike"]


class CallableOracle:
    """Wraps a function (train, mix weights, prompt) ``w -> reward vector | Candidate``.

    Plain reward vectors become candidates named ``f"{prefix}-{n}"`` with ``weight=w``.

    Args:
        fn: The function to call.
        prefix: Id prefix for candidates built from plain reward vectors.
    """

    def __init__(self, fn: RewardFn, prefix: str = "oracle") -> None:
        self.fn = fn
        self.prefix = prefix
        self.n_calls = 0

    def __call__(self, w: FloatArray) -> Candidate:
        """Call ``fn(w)`` and wrap its answer as a :class:`Candidate`."""
        w = np.asarray(w, dtype=np.float64)
        out = self.fn(w)
        self.n_calls += 1
        if isinstance(out, Candidate):
            return out
        return Candidate(
            id=f"{self.prefix}-{self.n_calls - 1}", reward=np.asarray(out), weight=w.copy()
        )
