"""The population prior: where a new user starts, learned from everyone else's posteriors.

Each user contributes four small aggregates of their own posterior, never events or text:
the posterior mean of log w (the Dirichlet's sufficient statistic, clipped), the posterior over
the β grid, and the log marginal likelihood of their feedback at a few lapse rates and at a few
prior concentrations.
:meth:`Population.prior` is one EM step of empirical Bayes on them: the prior's concentration
from users' log marginal likelihoods at a few candidate concentrations (see below), the
Dirichlet of that concentration whose expected log w best matches the users' average (the EM
step over the mean at that concentration), the β-grid probabilities equal to the users'
average posterior, and the lapse-rate probabilities the EM fixed point of the users'
responsibilities (iterated from uniform at every fit, so the prior is a function of the
aggregates alone: any replica reading the same rows fits the same prior, however often it
refits), all shrunk toward
the policy default by ``n_min`` pseudo-users. β is corrected per user (every
particle carries one); the lapse rate is the population's (per-user lapse and β trade off
against each other on thumbs, and a per-user fit of both drifts to near-deterministic,
high-lapse corners that no longer rank the good members). Opted-out users are never added
(the caller removes them on opt-out, reset and erasure).

The concentration: the posterior mean over :data:`STRENGTH_MULTIPLES` of the default's given
the users' summed log evidence (prior over them: log-normal around the default, sd a factor
:data:`STRENGTH_PRIOR_SD`, so flat evidence, as after users' first events, leaves the default
where it is), shrunk on the log scale as if ``n_min`` users as informative as the average one
sat at the default. The mean-log fit alone learns it only slowly (with little feedback per
user a posterior's mean log w mostly repeats its prior's: peaked users' prior reached α ≈ 0.8
after 40 events for a true 0.3). Each user's evidence is an importance-sampling estimate
from a defensive mixture of Dirichlets (:meth:`PreferenceModel.strength_evidence`): unbiased
for candidates far below the current concentration too (the earlier estimate over the
posterior particles alone was biased toward the current prior, and moved the fit down by at
most ~2× per refresh). The evidence never makes the prior narrower than the larger of the
mean-log fit's and the policy default's concentration: it is confounded with the noise model
(a concentrated prior explains noisy answers as well as a low β does; with 25% flips it
favoured twice the true concentration), and erring narrow costs calibration. The limit is
not the mean-log fit's alone: that fit is one EM step from the current prior (with thumbs
from Dirichlet(1) users it moved Σα 2.9 only to 3.06), so with it the evidence could only
widen, the noisy fit kept each downward draw, and the prior ratcheted below the truth
(Σα 2.9–3.1 for a true 4). Up to the default the evidence may undo its own widening.

Where the aggregates live: the store keeps one population row per contributing user (written
with the profile, deleted with the user; see ``palm_middleware.stores.base``); a
:class:`Population` is this process's mirror of those rows (:meth:`Population.load`), refitted
off the request path (``palm_middleware.population_feed``).

Bound on one user's influence (with N users contributing, any one added or removed):

* the β-grid probabilities move by at most 1 / (N + n_min) in total variation;
* the lapse probabilities move by at most 1 / (N + n_min) per EM step, but the fitted fixed
  point compounds the steps (as repeated one-step refits did before the fit was made a
  function of the aggregates): measured at most about 1 / n_min for any N (0.049 worst over
  N = 1..1000 with extreme users; ``tests/preferences/test_population_store.py`` checks it);
* a user's concentration evidence is clipped to a span of :data:`EVIDENCE_SPAN` nats: one user
  changes the ratio of any two candidates' posterior weights by at most a factor
  e^EVIDENCE_SPAN (weak: how far that moves the fit depends on how flat everyone else's
  evidence is).
So with ``n_min = 20`` no single user moves the grid probabilities by more than 5%, and by
1 / (N + 20) once N users contribute.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exceptions import InvalidParameterError
from ..types import FloatArray
from .noise import NoiseGrid

__all__ = [
    "EVIDENCE_SPAN",
    "STRENGTH_MULTIPLES",
    "STRENGTH_PRIOR_SD",
    "Population",
    "PopulationPrior",
    "dirichlet_at_total",
    "dirichlet_from_mean_log",
    "strength_candidates",
]

#: Candidate prior concentrations, as multiples of the policy default's total concentration
#: (factors of √2: on a coarser grid the posterior mean snaps to the nearest candidate once
#: the evidence accumulates). Symmetric around the default (1/8× to 8×): with evidence flat
#: on one side (thumbs from Dirichlet(1) users barely tell Σα 4 from 16) the posterior mean
#: depends on where the grid stops, and 1/8× to 4× put it at 0.84× the default.
STRENGTH_MULTIPLES = tuple(float(2.0 ** (k / 2)) for k in range(-6, 7))
#: Standard deviation, as a factor, of the prior over the candidate concentrations around the
#: default's.
STRENGTH_PRIOR_SD = 4.0
#: Largest span (nats) of one user's log evidence over candidates (bounds one user's influence).
EVIDENCE_SPAN = 10.0


def strength_candidates(default_strength: float) -> tuple[float, ...]:
    """The total concentrations a user's strength evidence is computed at."""
    return tuple(m * float(default_strength) for m in STRENGTH_MULTIPLES)


_Stats = tuple[FloatArray, FloatArray, FloatArray | None, FloatArray | None]
"""One user's aggregates: mean log w (clipped), β-grid posterior, lapse log-likelihoods,
concentration log evidence."""


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
        self._stats: dict[str, _Stats] = {}
        self._lock = threading.Lock()
        self.revision = 0
        """Bumped on every change (cache key for priors built from it)."""
        self.removals = 0
        """Bumped on every :meth:`remove` (a :meth:`load` of rows read before it is refused)."""

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
        stats = self._parse(mean_log, noise_posterior, lapse_evidence, strength_evidence)
        if stats is None:
            return
        with self._lock:
            self._stats[key] = stats
            self.revision += 1

    def _parse(
        self,
        mean_log: Any,
        noise_posterior: Any,
        lapse_evidence: Any,
        strength_evidence: Any = None,
    ) -> _Stats | None:
        lo = math.log(self.clip)
        ml = np.clip(np.asarray(mean_log, dtype=np.float64), lo, 0.0)
        q = np.asarray(noise_posterior, dtype=np.float64)
        le = None if lapse_evidence is None else np.asarray(lapse_evidence, dtype=np.float64)
        if not (np.all(np.isfinite(ml)) and np.all(np.isfinite(q)) and q.sum() > 0):
            return None
        if le is not None and not np.all(np.isfinite(le)):
            le = None
        return ml, q / q.sum(), le, _evidence(strength_evidence)

    def remove(self, key: str) -> None:
        """Drop user ``key`` (opt-out, reset, erasure)."""
        with self._lock:
            self.removals += 1
            if self._stats.pop(key, None) is not None:
                self.revision += 1

    def load(self, rows: Mapping[str, Mapping[str, Any]], *, removals: int | None = None) -> bool:
        """Make the aggregates exactly the store's population ``rows`` (key -> ``{"mean_log",
        "noise", "lapse", "strength"}``); ``revision`` grows by the number of users that changed.

        ``removals``: the value of :attr:`removals` when ``rows`` were read; if a user was
        removed since, the rows may still hold them, so nothing is loaded and False returned
        (read again). Malformed rows are skipped.
        """
        parsed: dict[str, _Stats] = {}
        for key, agg in rows.items():
            try:
                stats = self._parse(
                    agg["mean_log"], agg["noise"], agg.get("lapse"), agg.get("strength")
                )
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            if stats is not None:
                parsed[key] = stats
        with self._lock:
            if removals is not None and removals != self.removals:
                return False
            old = self._stats
            changed = sum(1 for k in old if k not in parsed)
            changed += sum(1 for k, v in parsed.items() if k not in old or not _same(old[k], v))
            self._stats = parsed
            self.revision += changed
        return True

    def _snapshot(self) -> list[_Stats]:
        """The aggregates in an order set by their values alone (not by user keys, which differ
        with the store's salt): the sums come out bit-identical in every process and run."""
        with self._lock:
            stats = list(self._stats.values())

        def order(v: _Stats) -> bytes:
            tail = b"".join(b"" if x is None else x.tobytes() for x in v[2:])
            return v[0].tobytes() + v[1].tobytes() + tail

        stats.sort(key=order)
        return stats

    def statistics(
        self, default_alpha: FloatArray, grid: NoiseGrid
    ) -> tuple[FloatArray, FloatArray, int]:
        """The shrunk mean-log statistic, grid probabilities and the number of users counted."""
        a0 = np.maximum(np.asarray(default_alpha, dtype=np.float64), 1e-2)
        s0 = _digamma(a0) - _digamma(np.array([a0.sum()]))[0]
        stats = [v for v in self._snapshot() if v[0].shape == a0.shape]
        qs = [v[1] for v in stats if v[1].shape == (grid.size,)]
        n = self.n_min
        total_s = np.stack([v[0] for v in stats]).sum(axis=0) if stats else np.zeros_like(a0)
        total_q = np.stack(qs).sum(axis=0) if qs else np.zeros(grid.size)
        s = (total_s + n * s0) / (len(stats) + n)
        p = (total_q + n * grid.p) / (len(qs) + n)
        return s, p, len(stats)

    def lapse_fit(self, lapses: tuple[float, ...], *, tol: float = 1e-9) -> FloatArray:
        """The population's probabilities over ``lapses``: the EM fixed point from uniform
        (a function of the aggregates alone, however often it is refitted)."""
        k = len(lapses)
        pi0 = np.full(k, 1.0 / k)
        les = [v[2] for v in self._snapshot() if v[2] is not None and v[2].shape == (k,)]
        if not les:
            return pi0
        ev = np.stack(les)
        lik = np.exp(ev - ev.max(axis=1, keepdims=True))  # per user, up to a constant; max 1
        pi = pi0
        for _ in range(500):
            # responsibilities pi * lik / (lik @ pi), summed over users: two products
            resp = pi * (lik.T @ (1.0 / (lik @ pi)))
            new: FloatArray = (resp + self.n_min * pi0) / (len(les) + self.n_min)
            if float(np.abs(new - pi).max()) < tol:
                return new
            pi = new
        return pi

    def _strength_fit(self, xs: FloatArray, x0: float) -> float | None:
        """The posterior mean of the log concentration over candidates ``xs`` (prior
        log-normal around ``x0``) given the users' summed evidence, shrunk toward ``x0`` by
        ``n_min`` pseudo-users as informative as the average user (None: no user has
        evidence)."""
        evs = [v[3] for v in self._snapshot() if v[3] is not None and v[3].shape == xs.shape]
        if not evs:
            return None
        # A prior over the candidates centred on the default (sd: a factor STRENGTH_PRIOR_SD):
        # with flat evidence (users' first events) the fit stays at the default instead of at
        # the middle of the candidates, which sits below it.
        total = np.stack(evs).sum(axis=0) - 0.5 * ((xs - x0) / math.log(STRENGTH_PRIOR_SD)) ** 2
        probs = np.exp(total - total.max())
        n = len(evs)
        return (n * float(probs @ xs) / float(probs.sum()) + self.n_min * x0) / (n + self.n_min)

    def prior(
        self,
        default_alpha: FloatArray,
        grid: NoiseGrid,
        lapses: tuple[float, ...] | None = None,
    ) -> PopulationPrior:
        """The population prior, shrunk toward ``default_alpha`` and the grid's own probabilities.

        ``lapses``: candidate lapse rates to learn the population's over (:meth:`lapse_fit`);
        the prior's grid then sits at their mean. None: the grid's own lapse.
        """
        a0 = np.maximum(np.asarray(default_alpha, dtype=np.float64), 1e-2)
        s, p, n = self.statistics(a0, grid)
        alpha = dirichlet_from_mean_log(s, a0) if n else a0
        strengths = np.asarray(strength_candidates(float(a0.sum())))
        log_s = self._strength_fit(np.log(strengths), math.log(float(a0.sum())))
        # The evidence never makes the prior narrower than both the mean-log fit's and the
        # default's (see the module docstring).
        total = float(alpha.sum())
        if log_s is not None:
            total = min(math.exp(log_s), max(total, float(a0.sum())))
        total = min(total, self.max_strength * float(a0.sum()))
        if n and total != float(alpha.sum()):
            # The mean at that concentration: the EM step's over the mean alone (Minka's joint
            # fit rescaled kept the mean of its own concentration, which with thumbs stays near
            # the default's for tens of refits, and the evidence's concentration absorbed it).
            alpha = dirichlet_at_total(s, total, alpha)
        elif total != float(alpha.sum()):
            alpha = alpha * total / alpha.sum()
        noise = grid.with_probs(p)
        lapse_probs: tuple[float, ...] = ()
        if lapses is not None and len(lapses) > 1 and len(grid.lapses) == 1:
            pi = self.lapse_fit(tuple(lapses))
            lapse_probs = tuple(float(x) for x in pi)
            noise = NoiseGrid(grid.betas, (float(pi @ np.asarray(lapses)),), noise.probs)
        return PopulationPrior(alpha=alpha, noise=noise, n_users=n, lapse_probs=lapse_probs)


def _same(a: _Stats, b: _Stats) -> bool:
    for x, y in zip(a[2:], b[2:]):
        if x is None or y is None:
            if (x is None) != (y is None):
                return False
        elif not np.array_equal(x, y):
            return False
    return np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def _evidence(ev: Any) -> FloatArray | None:
    """A user's log evidence over candidates, relative to its best, clipped to the span (None:
    missing, or flat, as before any feedback: such a user says nothing about the candidates)."""
    if ev is None:
        return None
    try:
        e = np.asarray(ev, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if e.ndim != 1 or e.size < 2 or not np.all(np.isfinite(e)) or np.ptp(e) <= 0:
        return None
    out: FloatArray = np.maximum(e - e.max(), -EVIDENCE_SPAN)
    return out


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


def dirichlet_at_total(s: FloatArray, total: float, init: FloatArray) -> FloatArray:
    """The Dirichlet α of concentration ``total`` that best matches the mean-log statistic
    ``s``: the maximizer of Σ_j (α_j − 1)·s_j − log B(α) over α with Σα = total, where
    ψ(α_j) = s_j + λ for one λ (Newton on λ from ψ(Σ init): with ``init`` the joint fit
    (:func:`dirichlet_from_mean_log`) and ``total`` its own concentration, that fit again)."""
    from scipy.special import zeta

    a = np.asarray(init, dtype=np.float64)
    lam = float(_digamma(np.array([a.sum()]))[0])
    for _ in range(50):
        alpha = _inv_digamma(s + lam)
        gap = float(alpha.sum()) - total
        if abs(gap) < 1e-10 * total:
            break
        lam -= gap / float(np.sum(1.0 / zeta(2, alpha)))  # d alpha_j / d lam = 1 / ψ'(alpha_j)
    alpha = np.clip(_inv_digamma(s + lam), 1e-2, 1e4)
    out: FloatArray = alpha * total / alpha.sum()
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
