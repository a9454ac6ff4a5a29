"""How noisy users are: a grid over the feedback temperature β and the lapse (label-flip) rate.

A deployment rarely knows how sharply its users choose (β) or how often a click is random
(lapse). Fixing them wrong makes the posterior overconfident (β too high) or slow (too low).
:class:`NoiseGrid` is a discrete prior over (β, lapse) pairs; a
:class:`~palm_middleware.preferences.model.PreferenceModel` built with one carries a grid point
in every particle, so each user's posterior learns its own noise level (the per-user correction)
and its credible intervals widen when the noise is uncertain. The serving path uses a β grid at
one lapse rate: :mod:`~palm_middleware.preferences.population` refits the β probabilities from
all users' posteriors (one EM step per refresh) and the lapse rate from their summed marginal
likelihoods at a few candidate rates (empirical Bayes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..exceptions import InvalidParameterError
from ..types import FloatArray

__all__ = ["DEFAULT_BETAS", "DEFAULT_LAPSES", "NoiseGrid"]

#: β candidates: geometric, from near-random choices to near-deterministic ones.
DEFAULT_BETAS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
#: Lapse candidates: the share of labels that are random (a random label is a flip half the time).
DEFAULT_LAPSES = (0.01, 0.05, 0.1, 0.2, 0.3)


@dataclass(frozen=True)
class NoiseGrid:
    """A discrete prior over (β, lapse): the product of ``betas`` and ``lapses``.

    Attributes:
        betas: temperatures, each > 0.
        lapses: lapse rates, each in [0, 0.5).
        probs: prior probability of each (β, lapse) point, β-major (``len(betas) *
            len(lapses)`` values summing to 1); None = uniform.
    """

    betas: tuple[float, ...] = DEFAULT_BETAS
    lapses: tuple[float, ...] = DEFAULT_LAPSES
    probs: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        betas = tuple(float(b) for b in self.betas)
        lapses = tuple(float(x) for x in self.lapses)
        if not betas or not all(math.isfinite(b) and b > 0 for b in betas):
            raise InvalidParameterError(f"noise grid betas must be finite and > 0; got {betas}")
        if not lapses or not all(0 <= x < 0.5 for x in lapses):
            raise InvalidParameterError(f"noise grid lapses must be in [0, 0.5); got {lapses}")
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "lapses", lapses)
        n = len(betas) * len(lapses)
        if self.probs is None:
            object.__setattr__(self, "probs", (1.0 / n,) * n)
        else:
            p = np.asarray(self.probs, dtype=np.float64)
            if p.shape != (n,) or not np.all(np.isfinite(p)) or p.min() < 0 or p.sum() <= 0:
                raise InvalidParameterError(
                    f"noise grid probs must be {n} non-negative numbers (β-major); "
                    f"got {list(self.probs)}"
                )
            object.__setattr__(self, "probs", tuple(float(x) for x in p / p.sum()))

    @classmethod
    def centred(
        cls,
        betas: Sequence[float] = DEFAULT_BETAS,
        lapses: Sequence[float] = (0.1,),
        beta0: float = 8.0,
        spread: float = 1.0,
    ) -> NoiseGrid:
        """A grid whose prior favours β near ``beta0``: log-normal weights (sd ``spread`` in
        ln β), so a deployment with few users is shrunk toward a sensible temperature rather
        than toward near-random choices."""
        lb = np.log(np.asarray(betas, dtype=np.float64))
        wb = np.exp(-0.5 * ((lb - math.log(beta0)) / spread) ** 2)
        probs = np.repeat(wb / wb.sum(), len(lapses)) / len(lapses)
        return cls(tuple(betas), tuple(lapses), tuple(float(x) for x in probs))

    @classmethod
    def fixed(cls, beta: float, lapse: float) -> NoiseGrid:
        """A grid of one point: the noise is known (stated by the deployment)."""
        return cls((beta,), (lapse,))

    @property
    def size(self) -> int:
        """Number of (β, lapse) points."""
        return len(self.betas) * len(self.lapses)

    @property
    def points(self) -> tuple[FloatArray, FloatArray]:
        """β and lapse of every point, β-major, each shape (size,)."""
        b = np.repeat(np.asarray(self.betas), len(self.lapses))
        lp = np.tile(np.asarray(self.lapses), len(self.betas))
        return b, lp

    @property
    def p(self) -> FloatArray:
        """The prior probabilities as an array."""
        assert self.probs is not None
        return np.asarray(self.probs, dtype=np.float64)

    def with_probs(self, probs: FloatArray) -> NoiseGrid:
        """The same points with new probabilities."""
        return NoiseGrid(self.betas, self.lapses, tuple(float(x) for x in probs))

    def mean(self, posterior: FloatArray | None = None) -> tuple[float, float]:
        """Mean β (geometric) and mean lapse under ``posterior`` (default: the prior)."""
        q = self.p if posterior is None else np.asarray(posterior, dtype=np.float64)
        b, lp = self.points
        return float(np.exp(q @ np.log(b))), float(q @ lp)
