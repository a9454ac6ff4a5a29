"""The population prior: where a new user starts, learned from everyone else's posteriors.

Each user contributes four small aggregates of their own posterior, never events or text:
the posterior mean of log w (the Dirichlet's sufficient statistic, clipped), the posterior over
the β grid, and the log marginal likelihood of their feedback at a few lapse rates and at a few
prior concentrations (:data:`STRENGTH_MULTIPLES` of the default's). :meth:`Population.prior`
is empirical Bayes on them:

* the prior's mean: the Dirichlet whose expected log w matches the users' average (one EM
  step per refresh);
* its concentration and the lapse rate: from the users' summed log evidence over the
  candidates (type-II likelihood; the posterior mean under a uniform prior over them). An EM
  step on the mean-log statistic alone learns the concentration only slowly (with little
  feedback per user a posterior's mean log w mostly repeats its prior's: peaked users' prior
  reached α ≈ 0.8 after 40 events for a true 0.3), and one EM step per refresh on lapse
  probabilities stayed near its uniform start (0.13 for a true 0.1, 0.15 for 0.25). The
  evidence only ever *widens* the prior (the EM's concentration is the upper limit): a
  concentrated prior explains noisy answers as well as a low β or a high lapse does, so with
  25% flips the evidence favoured twice the true concentration; erring wide costs a little
  speed, erring narrow costs calibration;
* the β-grid probabilities: the users' average posterior (a per-user β, one EM step);
* all shrunk toward the policy default by ``n_min`` pseudo-users: the mean-log statistic and
  grid probabilities are averaged with theirs; the concentration (on the log scale) and the
  lapse are averaged as if ``n_min`` users as informative as the average one sat at the
  default.

β is corrected per user (every particle carries one); the lapse rate is the population's
(per-user lapse and β trade off against each other on thumbs, and a per-user fit of both
drifts to near-deterministic, high-lapse corners that no longer rank the good members).
Opted-out users are never added (the caller removes them on opt-out, reset and erasure).

Bound on one user's influence (with N users contributing, any one added or removed):

* the β-grid probabilities move by at most 1 / (N + n_min) in total variation per refresh;
* each coordinate of the mean-log statistic moves by at most ln(1 / clip) / (N + n_min);
* a user's log evidence is clipped to a span of :data:`EVIDENCE_SPAN` nats: one user changes
  the ratio of any two candidates' posterior weights (concentration, lapse) by at most a
  factor e^EVIDENCE_SPAN. That bound is weak: how far it moves the fitted value depends on how
  flat everyone else's evidence is (with many informative users, little).

So with ``n_min = 20`` no single user moves the grid probabilities by more than 5%.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from ..exceptions import InvalidParameterError
from ..types import FloatArray
from .noise import NoiseGrid

__all__ = [
    "EVIDENCE_SPAN",
    "STRENGTH_MULTIPLES",
    "Population",
    "PopulationPrior",
    "dirichlet_from_mean_log",
    "strength_candidates",
]

#: One user's aggregates: mean log w, β-grid posterior, lapse evidence, strength evidence.
_Aggregates = tuple[FloatArray, FloatArray, FloatArray | None, FloatArray | None]

#: Candidate prior concentrations, as multiples of the policy default's total concentration
#: (factors of √2: on a coarser grid the posterior mean snaps to the nearest candidate once
#: the evidence accumulates).
STRENGTH_MULTIPLES = tuple(float(2.0 ** (k / 2)) for k in range(-6, 5))
#: Largest span (nats) of one user's log evidence over candidates (bounds one user's influence).
EVIDENCE_SPAN = 10.0


def strength_candidates(default_strength: float) -> tuple[float, ...]:
    """The total concentrations a user's strength evidence is computed at."""
    return tuple(m * float(default_strength) for m in STRENGTH_MULTIPLES)


@dataclass(frozen=True)
class PopulationPrior:
    """The prior a new user starts from.

    Attributes:
        alpha: Dirichlet parameters over w.
        noise: the β grid with the population's probabilities, at the population's lapse.
        n_users: users it was fitted from (0: the policy default).
        lapse_probs: the population's probabilities over the candidate lapse rates (empty when
            the lapse is fixed).
    """

    alpha: FloatArray
    noise: NoiseGrid
    n_users: int
    lapse_probs: tuple[float, ...] = ()

    @property
    def mean(self) -> FloatArray:
        """Prior mean weights."""
        out: FloatArray = self.alpha / self.alpha.sum()
        return out

    @property
    def strength(self) -> float:
        """Total Dirichlet concentration."""
        return float(self.alpha.sum())


class Population:
    """Running per-user aggregates and the population prior fitted from them (thread-safe).

    Args:
        n_min: pseudo-users at the policy default (shrinkage, and the influence bound above).
        clip: smallest weight counted in the mean-log statistic (bounds a user's influence).
        max_strength: cap on the fitted Dirichlet concentration, as a multiple of the default's.
    """

    def __init__(self, *, n_min: int = 20, clip: float = 1e-4, max_strength: float = 4.0) -> None:
        if not isinstance(n_min, int) or n_min < 1:
            raise InvalidParameterError(f"n_min must be an int >= 1; got {n_min!r}")
        if not 0 < clip < 1:
            raise InvalidParameterError(f"clip must be in (0, 1); got {clip!r}")
        self.n_min = n_min
        self.clip = clip
        self.max_strength = max_strength
        self._stats: dict[str, _Aggregates] = {}
        self._lock = threading.Lock()
        self.revision = 0
        """Bumped on every change (cache key for priors built from it)."""

    def __len__(self) -> int:
        return len(self._stats)

    def observe(
        self,
        key: str,
        mean_log: FloatArray,
        noise_posterior: FloatArray,
        lapse_evidence: FloatArray | None = None,
        strength_evidence: FloatArray | None = None,
    ) -> None:
        """Record (or replace) user ``key``'s aggregates (see the module docstring)."""
        lo = math.log(self.clip)
        ml = np.clip(np.asarray(mean_log, dtype=np.float64), lo, 0.0)
        q = np.asarray(noise_posterior, dtype=np.float64)
        if not (np.all(np.isfinite(ml)) and np.all(np.isfinite(q)) and q.sum() > 0):
            return
        le, se = _evidence(lapse_evidence), _evidence(strength_evidence)
        with self._lock:
            self._stats[key] = (ml, q / q.sum(), le, se)
            self.revision += 1

    def remove(self, key: str) -> None:
        """Drop user ``key`` (opt-out, reset, erasure)."""
        with self._lock:
            if self._stats.pop(key, None) is not None:
                self.revision += 1

    def statistics(
        self, default_alpha: FloatArray, grid: NoiseGrid
    ) -> tuple[FloatArray, FloatArray, int]:
        """The shrunk mean-log statistic, grid probabilities and the number of users counted."""
        a0 = np.maximum(np.asarray(default_alpha, dtype=np.float64), 1e-2)
        s0 = _digamma(a0) - _digamma(np.array([a0.sum()]))[0]
        with self._lock:
            stats = [v for v in self._stats.values() if v[0].shape == a0.shape]
        qs = [v[1] for v in stats if v[1].shape == (grid.size,)]
        n = self.n_min
        s = (sum((v[0] for v in stats), np.zeros_like(a0)) + n * s0) / (len(stats) + n)
        p = (sum(qs, np.zeros(grid.size)) + n * grid.p) / (len(qs) + n)
        return s, p, len(stats)

    def _evidence_fit(
        self, slot: int, xs: FloatArray, x0: float
    ) -> tuple[float | None, FloatArray | None]:
        """The posterior mean of a shared hyperparameter over candidates at ``xs`` (uniform
        prior over them) from the users' log evidence in aggregate ``slot``, shrunk toward
        ``x0`` by ``n_min`` pseudo-users as informative as the average user.

        Returns the shrunk value (None: no user has that evidence) and the posterior
        probabilities of the candidates.
        """
        k = len(xs)
        with self._lock:
            found = [v[slot] for v in self._stats.values()]
        evs = [e for e in found if e is not None and e.shape == (k,)]
        if not evs:
            return None, None
        total = np.sum(evs, axis=0)
        probs = np.exp(total - total.max())
        probs /= probs.sum()
        n = len(evs)
        return (n * float(probs @ xs) + self.n_min * x0) / (n + self.n_min), probs

    def prior(
        self,
        default_alpha: FloatArray,
        grid: NoiseGrid,
        lapses: tuple[float, ...] | None = None,
    ) -> PopulationPrior:
        """The population prior, shrunk toward ``default_alpha`` and the grid's own probabilities.

        ``lapses``: candidate lapse rates to learn the population's over (type-II maximum
        likelihood, shrunk toward the grid's own lapse); the prior's grid then sits at it.
        None: the grid's own lapse.
        """
        a0 = np.maximum(np.asarray(default_alpha, dtype=np.float64), 1e-2)
        s, p, n = self.statistics(a0, grid)
        alpha = dirichlet_from_mean_log(s, a0) if n else a0
        # The evidence only ever widens the prior: it is confounded with the noise model (a
        # concentrated prior explains noisy answers as well as a low β does; with 25% flips it
        # favoured twice the true concentration), and erring narrow costs calibration.
        strengths = np.asarray(strength_candidates(float(a0.sum())))
        log_s, _ = self._evidence_fit(3, np.log(strengths), math.log(float(a0.sum())))
        if log_s is not None and math.exp(log_s) < alpha.sum():
            alpha = alpha * math.exp(log_s) / alpha.sum()
        cap = self.max_strength * float(a0.sum())
        if alpha.sum() > cap:
            alpha = alpha * cap / alpha.sum()
        noise = grid.with_probs(p)
        lapse_probs: tuple[float, ...] = ()
        if lapses is not None and len(lapses) > 1 and len(grid.lapses) == 1:
            lapse, probs = self._evidence_fit(
                2, np.asarray(lapses, dtype=np.float64), grid.lapses[0]
            )
            if lapse is not None and probs is not None:
                lapse_probs = tuple(float(v) for v in probs)
                noise = NoiseGrid(grid.betas, (lapse,), noise.probs)
        return PopulationPrior(alpha=alpha, noise=noise, n_users=n, lapse_probs=lapse_probs)


def dirichlet_from_mean_log(s: FloatArray, init: FloatArray, iters: int = 200) -> FloatArray:
    """The Dirichlet α with E[log w] = ``s`` (Minka's fixed point; the MLE given ``s``)."""
    alpha = np.asarray(init, dtype=np.float64).copy()
    for _ in range(iters):
        new = _inv_digamma(_digamma(np.array([alpha.sum()]))[0] + s)
        if np.max(np.abs(new - alpha)) < 1e-9 * max(1.0, float(alpha.max())):
            alpha = new
            break
        alpha = new
    out: FloatArray = np.clip(alpha, 1e-2, 1e4)
    return out


def _digamma(x: FloatArray) -> FloatArray:
    from scipy.special import digamma

    out: FloatArray = digamma(x)
    return out


def _inv_digamma(y: FloatArray) -> FloatArray:
    """Inverse of the digamma function (Newton from Minka's starting point)."""
    from scipy.special import digamma, zeta

    x = np.where(y >= -2.22, np.exp(y) + 0.5, -1.0 / (y + 0.5772156649))
    for _ in range(8):
        # zeta(2, x) is the trigamma function (polygamma(1, x) without its wrapper's cost)
        x = x - (digamma(x) - y) / zeta(2, x)
        x = np.maximum(x, 1e-6)
    out: FloatArray = x
    return out


def _evidence(ev: FloatArray | None) -> FloatArray | None:
    """A user's log evidence over candidates, relative to its best, clipped to the span (None:
    missing, or flat, as before any feedback: such a user says nothing about the candidates)."""
    if ev is None:
        return None
    e = np.asarray(ev, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.all(np.isfinite(e)) or np.ptp(e) <= 0:
        return None
    out: FloatArray = np.maximum(e - e.max(), -EVIDENCE_SPAN)
    return out
