"""Trait spaces and weight vectors on the probability simplex."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .exceptions import InvalidWeightsError
from .types import FloatArray, TraitName

__all__ = ["SIMPLEX_TOL", "TraitSpace", "WeightVector"]

#: Absolute tolerance for "sums to one" and "non-negative" checks.
SIMPLEX_TOL = 1e-6

_TRAIT_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class TraitSpace:
    """An ordered set of trait names (the coordinates of every weight and reward vector).

    >>> space = TraitSpace(["safety", "brevity"])
    >>> space.index("brevity")
    1
    """

    names: tuple[TraitName, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __init__(self, names: Iterable[TraitName]) -> None:
        names = tuple(names)
        if not names:
            raise InvalidWeightsError("a trait space needs at least one trait; got none")
        for n in names:
            if not isinstance(n, str) or not _TRAIT_RE.match(n):
                raise InvalidWeightsError(
                    f"trait name {n!r} is invalid: use lowercase letters, digits and '_', "
                    "starting with a letter"
                )
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InvalidWeightsError(f"trait names must be unique; repeated: {dup}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(names)})

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    @property
    def dim(self) -> int:
        """Number of traits."""
        return len(self.names)

    def index(self, name: TraitName) -> int:
        """Position of ``name``; raises :class:`InvalidWeightsError` for an unknown trait."""
        try:
            return self._index[name]
        except KeyError:
            raise InvalidWeightsError(
                f"unknown trait {name!r}; the trait space is {list(self.names)}"
            ) from None

    def vector(
        self, values: Mapping[TraitName, float], *, fill: float | None = None, what: str = "vector"
    ) -> FloatArray:
        """Turn a ``{trait: value}`` mapping into an array in trait order.

        Unknown names raise; missing names take ``fill`` (or raise when ``fill`` is None).
        """
        out = np.full(self.dim, np.nan if fill is None else float(fill))
        for name, v in values.items():
            out[self.index(name)] = _as_float(v, f"{what}[{name!r}]")
        if fill is None:
            missing = [n for n, x in zip(self.names, out) if math.isnan(x)]
            missing = [n for n in missing if n not in values]
            if missing:
                raise InvalidWeightsError(f"{what} is missing traits {missing}")
        return out

    def uniform(self) -> WeightVector:
        """The barycentre of the simplex."""
        return WeightVector(self, np.full(self.dim, 1.0 / self.dim))


def _as_float(v: object, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise InvalidWeightsError(f"{what} must be a number; got {v!r}")
    return float(v)


@dataclass(frozen=True)
class WeightVector:
    """A user's weights over a :class:`TraitSpace`: non-negative, summing to one.

    Construct from an array in trait order, or with :meth:`from_mapping`. Sums within
    ``SIMPLEX_TOL`` of one are renormalized; anything else raises :class:`InvalidWeightsError`.
    """

    space: TraitSpace
    values: FloatArray

    def __init__(self, space: TraitSpace, values: Sequence[float] | FloatArray) -> None:
        arr = np.array(values, dtype=np.float64, copy=True).reshape(-1)
        check_simplex(arr, space)
        arr = np.clip(arr, 0.0, None)
        arr = arr / arr.sum()
        arr.setflags(write=False)
        object.__setattr__(self, "space", space)
        object.__setattr__(self, "values", arr)

    @classmethod
    def from_mapping(cls, space: TraitSpace, weights: Mapping[TraitName, float]) -> WeightVector:
        """Build from ``{trait: weight}``; traits left out get weight 0."""
        return cls(space, space.vector(weights, fill=0.0, what="weights"))

    def as_dict(self) -> dict[str, float]:
        """``{trait: weight}`` in trait order."""
        return {n: float(v) for n, v in zip(self.space.names, self.values)}

    def __getitem__(self, name: TraitName) -> float:
        return float(self.values[self.space.index(name)])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WeightVector):
            return NotImplemented
        return self.space == other.space and bool(np.array_equal(self.values, other.values))

    def __hash__(self) -> int:
        return hash((self.space, self.values.tobytes()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={v:.3f}" for n, v in self.as_dict().items())
        return f"WeightVector({inner})"


def check_simplex(arr: FloatArray, space: TraitSpace, what: str = "weights") -> None:
    """Raise :class:`InvalidWeightsError` unless ``arr`` lies on the simplex over ``space``."""
    if arr.shape != (space.dim,):
        raise InvalidWeightsError(
            f"{what} must have one entry per trait ({space.dim}: {list(space.names)}); "
            f"got {arr.size}"
        )
    bad = [n for n, x in zip(space.names, arr) if not math.isfinite(x)]
    if bad:
        raise InvalidWeightsError(f"{what} must be finite; got NaN or infinity for {bad}")
    neg = [n for n, x in zip(space.names, arr) if x < -SIMPLEX_TOL]
    if neg:
        raise InvalidWeightsError(f"{what} must be non-negative; negative for {neg}")
    s = float(arr.sum())
    if abs(s - 1.0) > SIMPLEX_TOL:
        raise InvalidWeightsError(f"{what} must sum to 1; got sum {s:.6g}")
