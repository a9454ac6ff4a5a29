"""Bayesian inference of a user's weight vector over traits, from feedback.

The posterior over the simplex is represented by weighted particles and updated by sequential
Monte Carlo: each observation is tempered in (so a sharp event never collapses the particle set),
and when the effective sample size drops the particles are resampled and moved by a Metropolis
random walk in additive-log-ratio coordinates that targets the exact current posterior. Old
observations fade with a half-life, which is itself a tempering step. Identical observations
share one likelihood term (their exponents add up), so an update costs the same after ten events
or ten thousand: :meth:`PreferenceModel.partial_fit` updates in place, and moves particles only
when the effective sample size collapses. Everything is reproducible from ``random_state`` and
the observations, so a profile can be rebuilt from the event log.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .._rng import check_random_state
from ..exceptions import InvalidParameterError, NotFittedError
from ..types import FloatArray
from .events import Observation
from .noise import NoiseGrid

__all__ = ["PosteriorSummary", "PreferenceModel", "forgetting"]

_TINY = 1e-300


def forgetting(age: float, half_life: float | None) -> float:
    """The weight left to evidence ``age`` seconds old: it halves every ``half_life`` seconds.

    The one forgetting rule: the particle model, the stored evidence groups and the faded summary
    served between events all use it. ``half_life=None`` forgets nothing; a future time (negative
    age) counts in full.
    """
    if half_life is None or age <= 0:
        return 1.0
    return float(0.5 ** (age / float(half_life)))


@dataclass(frozen=True)
class PosteriorSummary:
    """What the decision path needs of a posterior: compact, JSON-serializable.

    Attributes:
        mean: posterior mean weight vector, shape (n_traits,).
        lower, upper: per-trait equal-tailed credible interval at ``level``.
        concentration: total concentration of the moment-matched Dirichlet (for fast sampling).
        evidence: effective number of events (decayed, strength-weighted).
        n_events: events seen.
        level: credibility level of ``lower``/``upper``.
    """

    mean: FloatArray
    lower: FloatArray
    upper: FloatArray
    concentration: float
    evidence: float
    n_events: int
    level: float = 0.9

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (about 30 numbers for 4 traits)."""
        return {
            "mean": [round(float(x), 9) for x in self.mean],
            "lower": [round(float(x), 6) for x in self.lower],
            "upper": [round(float(x), 6) for x in self.upper],
            "concentration": round(float(self.concentration), 4),
            "evidence": round(float(self.evidence), 6),
            "n_events": int(self.n_events),
            "level": self.level,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PosteriorSummary:
        """Inverse of :meth:`to_dict`."""
        mean = np.asarray(d["mean"], dtype=np.float64)
        return cls(
            mean=mean / mean.sum(),  # undo rounding drift from storage
            lower=np.asarray(d["lower"], dtype=np.float64),
            upper=np.asarray(d["upper"], dtype=np.float64),
            concentration=float(d["concentration"]),
            evidence=float(d["evidence"]),
            n_events=int(d["n_events"]),
            level=float(d.get("level", 0.9)),
        )

    def sample(self, n: int, rng: np.random.Generator) -> FloatArray:
        """Draws from the moment-matched Dirichlet, shape (n, n_traits)."""
        alpha = np.maximum(self.mean * self.concentration, 1e-3)
        out: FloatArray = rng.dirichlet(alpha, size=n)
        return out


class PreferenceModel:
    """Posterior over a user's weight vector w on the simplex.

    Prior: Dirichlet(prior_strength · prior_mean). Likelihoods: see
    :mod:`palm_middleware.preferences.events`.

    Parameters:
        prior_mean: the deployment default weights, shape (n_traits,).
        prior_strength: Dirichlet concentration of the prior (higher = slower to leave the default).
        beta: Bradley-Terry / logistic temperature on value differences.
        lapse: probability that a label is random (robustness to mis-clicks and label noise).
        noise: a prior over (β, lapse) points (:class:`NoiseGrid`) to learn the noise instead;
            every particle carries a grid point, so the user's own noise level is inferred
            with w and the intervals account for not knowing it. None: ``beta`` and ``lapse``
            are known (ignored when ``noise`` is given).
        half_life: seconds after which an event counts half; None = no forgetting.
        n_particles: particles in the posterior.
        max_observations: distinct observations kept (identical ones share a term); the
            weakest are dropped beyond it.
        random_state: seed for reproducible particles.
        ess_threshold: particles are resampled and moved when the effective sample size falls
            below this fraction of ``n_particles`` (and one observation is tempered in stages
            that keep it above). Lower: fewer, costlier-to-skip moves; cheaper updates.
        move_steps: Metropolis steps per rejuvenation.

    Attributes (set by ``fit``/``partial_fit``):
        particles_: (n_particles, n_traits) points on the simplex.
        weights_: (n_particles,) normalized importance weights.
        evidence_: effective number of events after forgetting.
        n_events_: number of observations seen.

    >>> m = PreferenceModel(prior_mean=[0.5, 0.5], random_state=0)
    >>> m = m.fit([Observation.compare([0.6, -0.6], +1)])
    >>> bool(m.predict()[0] > 0.5)
    True
    """

    def __init__(
        self,
        *,
        prior_mean: Sequence[float] | FloatArray,
        prior_strength: float = 10.0,
        beta: float = 10.0,
        lapse: float = 0.05,
        noise: NoiseGrid | None = None,
        half_life: float | None = None,
        n_particles: int = 2048,
        max_observations: int = 256,
        random_state: int | np.random.Generator | None = 0,
        ess_threshold: float = 0.5,
        move_steps: int = 4,
    ) -> None:
        self.prior_mean = prior_mean
        self.prior_strength = prior_strength
        self.beta = beta
        self.lapse = lapse
        self.noise = noise
        self.half_life = half_life
        self.n_particles = n_particles
        self.max_observations = max_observations
        self.random_state = random_state
        self.ess_threshold = ess_threshold
        self.move_steps = move_steps

    # -- scikit-learn style parameter handling ---------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor parameters."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def set_params(self, **params: Any) -> PreferenceModel:
        """Set constructor parameters; unknown names raise."""
        valid = self.get_params()
        for k, v in params.items():
            if k not in valid:
                raise InvalidParameterError(f"unknown parameter {k!r}; valid: {sorted(valid)}")
            setattr(self, k, v)
        return self

    def _validate(self) -> FloatArray:
        mean = np.asarray(self.prior_mean, dtype=np.float64).reshape(-1)
        if (
            mean.size < 2
            or not np.all(np.isfinite(mean))
            or mean.min() < 0
            or not math.isclose(float(mean.sum()), 1.0, abs_tol=1e-6)
        ):
            raise InvalidParameterError(
                f"prior_mean must be a point of the simplex with >= 2 traits; got {mean.tolist()}"
            )
        for name, val, lo, hi in (
            ("prior_strength", self.prior_strength, 0.0, math.inf),
            ("beta", self.beta, 0.0, math.inf),
            ("lapse", self.lapse, -1e-12, 0.5),
        ):
            if (
                isinstance(val, bool)
                or not isinstance(val, (int, float))
                or not (lo < float(val) < hi)
            ):
                raise InvalidParameterError(
                    f"The {name!r} parameter of PreferenceModel must be in ({lo:g}, {hi:g}); "
                    f"got {val!r}"
                )
        if self.noise is not None and not isinstance(self.noise, NoiseGrid):
            raise InvalidParameterError(f"noise must be a NoiseGrid or None; got {self.noise!r}")
        if self.half_life is not None and not (
            isinstance(self.half_life, (int, float)) and self.half_life > 0
        ):
            raise InvalidParameterError(f"half_life must be > 0 or None; got {self.half_life!r}")
        if not isinstance(self.n_particles, int) or self.n_particles < 64:
            raise InvalidParameterError(
                f"n_particles must be an int >= 64; got {self.n_particles!r}"
            )
        if not (
            isinstance(self.ess_threshold, (int, float)) and 0 < self.ess_threshold < 1
        ) or isinstance(self.ess_threshold, bool):
            raise InvalidParameterError(
                f"ess_threshold must be in (0, 1); got {self.ess_threshold!r}"
            )
        if (
            isinstance(self.move_steps, bool)
            or not isinstance(self.move_steps, int)
            or (self.move_steps < 1)
        ):
            raise InvalidParameterError(f"move_steps must be an int >= 1; got {self.move_steps!r}")
        if not isinstance(self.max_observations, int) or self.max_observations < 1:
            raise InvalidParameterError(
                f"max_observations must be an int >= 1; got {self.max_observations!r}"
            )
        out: FloatArray = mean / mean.sum()
        return out

    # -- fitting ----------------------------------------------------------------------------
    def fit(
        self, observations: Iterable[Observation], *, now: float | None = None
    ) -> PreferenceModel:
        """Reset to the prior and assimilate ``observations`` (in order). Returns self."""
        mean = self._validate()
        self._rng = check_random_state(self.random_state)
        d = mean.size
        self._alpha = np.maximum(mean * float(self.prior_strength), 1e-2)
        self.particles_ = self._rng.dirichlet(self._alpha, size=self.n_particles)
        self.particles_ = np.clip(self.particles_, 1e-12, None)
        self.particles_ /= self.particles_.sum(axis=1, keepdims=True)
        grid = self.noise if self.noise is not None else NoiseGrid.fixed(self.beta, self.lapse)
        self.noise_grid_ = grid
        self._gb, self._gl = grid.points
        self._logpi = np.log(np.maximum(grid.p, 1e-300))
        # Each particle's (β, lapse) grid point; one point draws nothing (seeded runs unchanged).
        self._g = (
            self._rng.choice(grid.size, size=self.n_particles, p=grid.p)
            if grid.size > 1
            else np.zeros(self.n_particles, dtype=np.intp)
        )
        self._logw = np.zeros(self.n_particles)
        self._obs: list[Observation] = []
        self._cols: dict[tuple[Any, ...], int] = {}  # Observation.key -> column
        self._exps = np.zeros(0)
        self._ll = np.zeros((self.n_particles, 0))
        self._t_ref: float | None = None
        self.__dict__["_lapse_ev"] = None
        self.n_events_ = 0
        self.n_traits_ = d
        obs = list(observations)
        if obs:
            self._add(obs, now)
        return self

    def partial_fit(
        self, observations: Iterable[Observation], *, now: float | None = None
    ) -> PreferenceModel:
        """Assimilate more observations into the current posterior. Returns self."""
        if "_p" not in self.__dict__:
            return self.fit(observations, now=now)
        obs = list(observations)
        if obs:
            self._add(obs, now)
        return self

    def _add(self, obs: list[Observation], now: float | None) -> None:
        for o in obs:
            if o.vector.shape != (self.n_traits_,):
                raise InvalidParameterError(
                    f"observation has {o.vector.size} entries; "
                    f"the model has {self.n_traits_} traits"
                )
        t_new = max(o.ts for o in obs) if now is None else float(now)
        t_ref = self._decay_to(t_new)
        # Ages count from the latest time seen, so a late batch of old events fades too. An
        # observation seen before raises the exponent of its column instead of adding one.
        raise_by: dict[int, float] = {}
        fresh: list[Observation] = []
        for o in obs:
            j = self._cols.get(o.key)
            if j is None:
                j = self._cols[o.key] = len(self._obs) + len(fresh)
                fresh.append(o)
            raise_by[j] = raise_by.get(j, 0.0) + o.strength * forgetting(
                t_ref - o.ts, self.half_life
            )
        if fresh:
            self._obs.extend(fresh)
            self._exps = np.concatenate([self._exps, np.zeros(len(fresh))])
            self._ll = np.hstack([self._ll, self._loglik(self.particles_, fresh)])
        self.n_events_ += len(obs)
        idx = np.fromiter(raise_by, dtype=np.intp, count=len(raise_by))
        self._temper_in(idx, np.fromiter(raise_by.values(), dtype=np.float64, count=len(idx)))
        if len(self._obs) > self.max_observations:
            # Drop the weakest (with forgetting: the oldest) terms: tempering them down to zero.
            drop = np.argsort(self._exps, kind="stable")[: len(self._obs) - self.max_observations]
            self._logw -= self._ll[:, drop] @ self._exps[drop]
            self._lapse_raise(drop, -self._exps[drop])
            keep = np.setdiff1d(np.arange(len(self._obs)), drop)
            self._obs = [self._obs[i] for i in keep]
            self._cols = {o.key: i for i, o in enumerate(self._obs)}
            self._exps = self._exps[keep]
            self._ll = self._ll[:, keep]
            self._maybe_rejuvenate()

    @property
    def n_moves_(self) -> int:
        """Rejuvenations (resample and move) so far: the costly part of an update."""
        return int(self.__dict__.get("_n_moves", 0))

    def fade_to(self, now: float) -> PreferenceModel:
        """Let the evidence held fade to time ``now`` (no new observation). Returns self."""
        self._check_fitted()
        self._decay_to(float(now))
        return self

    def copy(self) -> PreferenceModel:
        """An independent copy: particles, weights, evidence and the generator's state."""
        self._check_fitted()
        new = copy.copy(self)
        for name in ("particles_", "_logw", "_exps", "_ll", "_g", "_gb", "_gl", "_logpi", "_alpha"):
            setattr(new, name, getattr(self, name).copy())
        new.__dict__["_sort"] = self.__dict__.get("_sort")  # same values, never written to
        new._obs = list(self._obs)
        new._cols = dict(self._cols)
        bits = self._rng.bit_generator
        twin = type(bits)()
        twin.state = bits.state
        new._rng = np.random.Generator(twin)
        return new

    def preview_mean(self, observations: Sequence[Observation]) -> Callable[[float], FloatArray]:
        """``mean(f)``: the posterior mean if ``observations`` came in now at ``f`` times their
        strength.

        Importance reweighting of the current particles: no move, nothing changes. Cheap enough
        to bisect on (the ``max_step`` bound).
        """
        self._check_fitted()
        t_ref = self._t_ref if self._t_ref is not None else max(o.ts for o in observations)
        f = np.array([o.strength * forgetting(t_ref - o.ts, self.half_life) for o in observations])
        inc = self._loglik(self.particles_, observations) @ f
        logw, particles = self._logw.copy(), self.particles_.copy()

        def mean(factor: float = 1.0) -> FloatArray:
            m: FloatArray = _normalize(logw + factor * inc) @ particles
            out: FloatArray = m / m.sum()
            return out

        return mean

    def _decay_to(self, t: float) -> float:
        """Fade the evidence held so far to time ``t``; returns the new reference time."""
        if self._t_ref is None:
            self._t_ref = t
            return t
        if self.half_life is not None and t > self._t_ref and self._exps.size:
            g = forgetting(t - self._t_ref, self.half_life)
            self._logw += (g - 1.0) * (self._ll @ self._exps)
            self._exps = self._exps * g
            lev = self.__dict__.get("_lapse_ev")
            if lev is not None:
                self.__dict__["_lapse_ev"] = (lev[0], lev[1] * g)
            self._maybe_rejuvenate()
        self._t_ref = max(self._t_ref, t)
        return self._t_ref

    def _temper_in(self, idx: npt.NDArray[np.intp], factors: FloatArray) -> None:
        """Raise the exponents of observations ``idx`` by ``factors``, in ESS-safe stages."""
        n = self.n_particles
        remaining = 1.0
        for _ in range(64):
            if remaining <= 1e-12:
                break
            inc = self._ll[:, idx] @ factors
            phi = remaining
            floor = float(self.ess_threshold) * n
            if _ess(self._logw + phi * inc) < floor:
                lo, hi = 0.0, remaining
                for _ in range(30):
                    mid = 0.5 * (lo + hi)
                    if _ess(self._logw + mid * inc) >= floor:
                        lo = mid
                    else:
                        hi = mid
                phi = max(lo, 1e-4 * remaining)
            self._logw += phi * inc
            self._exps[idx] += phi * factors
            self._lapse_raise(idx, phi * factors)
            remaining -= phi
            self._maybe_rejuvenate()
        if remaining > 1e-12:  # pragma: no cover - only for pathological likelihoods
            self._logw += remaining * (self._ll[:, idx] @ factors)
            self._exps[idx] += remaining * factors
            self._lapse_raise(idx, remaining * factors)

    def _maybe_rejuvenate(self) -> None:
        w = self.weights_  # cached: summaries and the next check reuse it
        if 1.0 / float(np.dot(w, w)) >= float(self.ess_threshold) * self.n_particles:
            return
        # Systematic resampling: low variance and deterministic given the generator.
        u = (self._rng.random() + np.arange(self.n_particles)) / self.n_particles
        idx = np.minimum(np.searchsorted(np.cumsum(w), u), self.n_particles - 1)
        self.particles_ = self.particles_[idx]
        self._g = self._g[idx]
        self._ll = self._ll[idx]
        self._logw = np.zeros(self.n_particles)
        self._move(n_steps=int(self.move_steps))
        self.__dict__["_n_moves"] = self.n_moves_ + 1
        self.__dict__["_lapse_ev"] = None  # particles moved: recomputed when next asked

    def _log_target(self, p: FloatArray, ll: FloatArray) -> FloatArray:
        lp = np.log(p)
        # Dirichlet prior + tempered likelihood + log|Jacobian| of the log-ratio map.
        out: FloatArray = lp @ self._alpha + ll @ self._exps
        return out

    def _move(self, n_steps: int) -> None:
        p = self.particles_
        z = np.log(p[:, :-1]) - np.log(p[:, -1:])
        scale = 2.38 / math.sqrt(max(z.shape[1], 1)) * np.maximum(z.std(axis=0), 1e-3) * 0.7
        cur = self._log_target(p, self._ll)
        g = self._g
        size = self._gb.size
        for _ in range(n_steps):
            zp = z + self._rng.standard_normal(z.shape) * scale
            pp = _alr_inv(zp)
            gp = g
            if size > 1:
                # Half the particles also propose a grid point from the prior: the prior and
                # the proposal cancel in the Metropolis-Hastings ratio.
                fresh = self._rng.random(len(z)) < 0.5
                pi = np.exp(self._logpi)
                gp = np.where(fresh, self._rng.choice(size, size=len(z), p=pi / pi.sum()), g)
            llp = self._loglik(pp, self._obs, gp)
            prop = self._log_target(pp, llp)
            acc = np.log(self._rng.random(len(z))) < prop - cur
            z[acc] = zp[acc]
            p = np.where(acc[:, None], pp, p)
            g = np.where(acc, gp, g)
            self._ll = np.where(acc[:, None], llp, self._ll)
            cur = np.where(acc, prop, cur)
        self.particles_ = p
        self._g = g

    def _loglik(
        self,
        p: FloatArray,
        obs: Sequence[Observation],
        g: npt.NDArray[np.intp] | None = None,
        lapse: float | None = None,
    ) -> FloatArray:
        """Per-particle, per-observation log-likelihood, shape (n_particles, len(obs)).

        ``g``: each particle's (β, lapse) grid point (default: the particles' own); ``lapse``
        overrides the grid's lapse.
        """
        out = np.zeros((p.shape[0], len(obs)))
        if not obs:
            return out
        comp = [i for i, o in enumerate(obs) if o.kind == "compare"]
        if comp:
            deltas = np.stack([obs[i].vector for i in comp])
            g = self._g if g is None else g
            coef = np.array([obs[i].y * obs[i].scale for i in comp])
            z = (p @ deltas.T) * coef * self._gb[g][:, None]
            lp = self._gl[g][:, None] if lapse is None else np.full((len(g), 1), float(lapse))
            prob = lp + (1.0 - 2.0 * lp) * _sigmoid(z)
            out[:, comp] = np.log(np.maximum(prob, _TINY))
        for i, o in enumerate(obs):
            if o.kind == "anchor":
                assert o.mask is not None
                diff = (p - o.vector) * o.mask
                out[:, i] = -0.5 * o.precision * np.einsum("ij,ij->i", diff, diff)
        return out

    # -- prediction ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if "_p" not in self.__dict__:
            raise NotFittedError("This PreferenceModel is not fitted yet; call fit() first.")

    @property
    def particles_(self) -> FloatArray:
        """Particles, shape (n_particles, n_traits) (setting them resets the sorted cache)."""
        self._check_fitted()
        out: FloatArray = self.__dict__["_p"]
        return out

    @particles_.setter
    def particles_(self, value: FloatArray) -> None:
        self.__dict__["_p"] = value
        self.__dict__["_sort"] = None

    def _sorted(self) -> tuple[npt.NDArray[np.intp], FloatArray]:
        """Per-trait sort order of the particles and the sorted values (cached: particles only
        change when they move, weights change on every event)."""
        cached = self.__dict__.get("_sort")
        if cached is None:
            order = np.argsort(self.particles_, axis=0)
            cached = self.__dict__["_sort"] = (
                order,
                np.take_along_axis(self.particles_, order, axis=0),
            )
        return cached

    @property
    def _logw(self) -> FloatArray:
        """Log importance weights (setting them, even in place with ``+=``, resets the cache)."""
        out: FloatArray = self.__dict__["_lw"]
        return out

    @_logw.setter
    def _logw(self, value: FloatArray) -> None:
        self.__dict__["_lw"] = value
        self.__dict__["_w"] = None

    @property
    def weights_(self) -> FloatArray:
        """Normalized particle weights (computed once per change of the log weights)."""
        self._check_fitted()
        w: FloatArray | None = self.__dict__.get("_w")
        if w is None:
            w = self.__dict__["_w"] = _normalize(self._logw)
        return w

    @property
    def evidence_(self) -> float:
        """Effective number of events (decayed and strength-weighted)."""
        self._check_fitted()
        return float(self._exps.sum())

    def noise_posterior(self) -> FloatArray:
        """Posterior probability of each (β, lapse) point of :attr:`noise_grid_`."""
        self._check_fitted()
        counts = np.bincount(self._g, weights=self.weights_, minlength=self._gb.size)
        out: FloatArray = counts.astype(np.float64)
        return out

    def mean_log_weights(self) -> FloatArray:
        """Posterior mean of log w (the Dirichlet sufficient statistic a population fit needs)."""
        self._check_fitted()
        out: FloatArray = self.weights_ @ np.log(self.particles_)
        return out

    def lapse_evidence(self, lapses: Sequence[float]) -> FloatArray:
        """Log marginal likelihood of the user's observations at each lapse in ``lapses``,
        relative to the current one (importance estimate over the posterior particles).

        What a population fit of the lapse rate needs from a user: a few numbers, no events.
        """
        self._check_fitted()
        out = np.zeros(len(lapses))
        if not self._obs:
            return out
        diffs = self._lapse_diffs(tuple(float(x) for x in lapses))
        logw = np.log(np.maximum(self.weights_, _TINY))
        for k in range(len(lapses)):
            x = logw + diffs[k]
            out[k] = float(x.max() + np.log(np.exp(x - x.max()).sum()))
        return out

    def strength_evidence(self, strengths: Sequence[float]) -> FloatArray:
        """Log marginal likelihood of the user's observations if the prior were the Dirichlet
        of total concentration ``strengths[k]`` (same mean as the current prior), relative to
        the current prior: log E_post[Dir(w; s·m) / Dir(w; α)] over the posterior particles.

        What a population fit of the prior's concentration needs from a user: a few numbers,
        no events (the mean-log statistic alone learns it only slowly: with little feedback
        per user, a posterior's mean log w mostly repeats its prior's). For a candidate with
        some α_i below half the current one the estimate has infinite variance and is biased
        toward the current prior, so a fit on it moves down by about 2× per refresh at most.
        """
        from scipy.special import gammaln, logsumexp

        self._check_fitted()
        if not self._obs:
            return np.zeros(len(strengths))
        a = self._alpha
        cand = np.maximum(np.outer(np.asarray(strengths, dtype=np.float64), a / a.sum()), 1e-2)
        log_norm = gammaln(cand.sum(axis=1)) - gammaln(cand).sum(axis=1)
        log_norm -= float(gammaln(a.sum()) - gammaln(a).sum())
        ratio = np.log(self.particles_) @ (cand - a).T + log_norm  # (n_particles, k)
        x = np.log(np.maximum(self.weights_, _TINY))[:, None] + ratio
        out: FloatArray = logsumexp(x, axis=0)
        return out

    def _lapse_diffs(self, lapses: tuple[float, ...]) -> FloatArray:
        """Per particle and lapse: Σ_j exps_j · (loglik_j at the lapse − loglik_j), shape
        (len(lapses), n_particles).

        Kept between calls and raised with each observation's exponent (:meth:`_lapse_raise`),
        so an event costs the likelihood of its own columns only; recomputed from every
        observation after particles move (rare once the posterior settles) or a refit.
        """
        lev = self.__dict__.get("_lapse_ev")
        if lev is not None and lev[0] == lapses:
            out: FloatArray = lev[1]
            return out
        p, ll, exps = self.particles_, self._ll, self._exps
        out = np.stack([(self._loglik(p, self._obs, lapse=x) - ll) @ exps for x in lapses])
        self.__dict__["_lapse_ev"] = (lapses, out)
        return out

    def _lapse_raise(self, idx: npt.NDArray[np.intp], by: FloatArray) -> None:
        """Keep the lapse sums of :meth:`_lapse_diffs` current: exponents of ``idx`` rose by
        ``by``."""
        lev = self.__dict__.get("_lapse_ev")
        if lev is None or len(idx) == 0:
            return
        obs = [self._obs[i] for i in idx]
        if all(o.kind != "compare" for o in obs):
            return  # an anchor's likelihood does not depend on the lapse
        ll = self._ll[:, idx]
        inc = np.stack([(self._loglik(self.particles_, obs, lapse=x) - ll) @ by for x in lev[0]])
        self.__dict__["_lapse_ev"] = (lev[0], lev[1] + inc)

    def relapse(self, lapse: float) -> PreferenceModel:
        """Set every particle's lapse rate to ``lapse`` in place (reweighting by the new
        likelihood; rejuvenates if needed)."""
        self._check_fitted()
        if not 0 <= lapse < 0.5:
            raise InvalidParameterError(f"lapse must be in [0, 0.5); got {lapse!r}")
        grid = self.noise_grid_
        if len(grid.lapses) != 1:
            raise InvalidParameterError("relapse needs a noise grid with a single lapse rate")
        self.noise_grid_ = NoiseGrid(grid.betas, (float(lapse),), grid.probs)
        if self._obs:
            new = self._loglik(self.particles_, self._obs, lapse=lapse)
            self._logw += (new - self._ll) @ self._exps
            self._ll = new
        self._gl = np.full_like(self._gl, float(lapse))
        self.__dict__["_lapse_ev"] = None
        self._maybe_rejuvenate()
        return self

    def reprior(
        self, alpha: FloatArray | None = None, noise_probs: FloatArray | None = None
    ) -> PreferenceModel:
        """Swap the prior in place (Dirichlet ``alpha``, grid probabilities) by reweighting.

        The posterior then equals a refit under the new prior, without replaying the
        observations (importance reweighting by the prior ratio; rejuvenates if needed).
        """
        self._check_fitted()
        if alpha is not None:
            a = np.maximum(np.asarray(alpha, dtype=np.float64), 1e-2)
            self._logw += np.log(self.particles_) @ (a - self._alpha)
            self._alpha = a
        if noise_probs is not None:
            new = np.log(np.maximum(np.asarray(noise_probs, dtype=np.float64), 1e-300))
            self._logw += (new - self._logpi)[self._g]
            self._logpi = new
        self._maybe_rejuvenate()
        return self

    def predict(self) -> FloatArray:
        """Posterior mean weight vector."""
        self._check_fitted()
        m: FloatArray = self.weights_ @ self.particles_
        out: FloatArray = m / m.sum()
        return out

    def sample(
        self, n: int = 1, random_state: int | np.random.Generator | None = None
    ) -> FloatArray:
        """``n`` posterior draws, shape (n, n_traits)."""
        self._check_fitted()
        rng = check_random_state(random_state)
        idx = rng.choice(self.n_particles, size=n, p=self.weights_)
        out: FloatArray = self.particles_[idx]
        return out

    def credible_interval(self, level: float = 0.9) -> tuple[FloatArray, FloatArray]:
        """Per-trait equal-tailed credible interval (lower, upper) at ``level``."""
        self._check_fitted()
        if not 0 < level < 1:
            raise InvalidParameterError(f"level must be in (0, 1); got {level!r}")
        w = self.weights_
        a = (1 - level) / 2
        order, xs = self._sorted()
        cdf = np.cumsum(w[order], axis=0)
        cols = np.arange(xs.shape[1])
        last = len(w) - 1
        # The first sorted particle whose cumulative weight reaches each tail (searchsorted).
        lo: FloatArray = xs[np.minimum((cdf < a).sum(axis=0), last), cols]
        hi: FloatArray = xs[np.minimum((cdf < 1 - a).sum(axis=0), last), cols]
        return lo, hi

    def summary(self, level: float = 0.9) -> PosteriorSummary:
        """Compact summary for storage and routing."""
        mean = self.predict()
        var = self.weights_ @ (self.particles_ - mean) ** 2  # the weights are computed once
        tv = float(var.sum())
        conc = float(np.sum(mean * (1 - mean)) / tv - 1.0) if tv > 1e-12 else 1e6
        lo, hi = self.credible_interval(level)
        return PosteriorSummary(
            mean=mean,
            lower=lo,
            upper=hi,
            concentration=max(conc, 1e-3),
            evidence=self.evidence_,
            n_events=self.n_events_,
            level=level,
        )

    # -- active queries -------------------------------------------------------------------------
    def information_gain(self, deltas: FloatArray, rewards: FloatArray | None = None) -> FloatArray:
        """Expected information gain (nats) of observing y for each row of ``deltas``.

        Without ``rewards`` the gain is about w itself. With ``rewards`` (members' profiles,
        shape (n_members, n_traits)) it is about which member is best for the user: the only
        thing routing needs, so queries do not spend effort on directions that change nothing.
        """
        self._check_fitted()
        z = (self.particles_ @ np.atleast_2d(deltas).T) * self._gb[self._g][:, None]
        lapse = self._gl[self._g][:, None]
        p = lapse + (1 - 2 * lapse) * _sigmoid(z)
        w = self.weights_
        marginal = w @ p
        if rewards is None:
            out: FloatArray = _entropy(marginal) - w @ _entropy(p)
            return out
        best = np.argmax(self.particles_ @ np.asarray(rewards, dtype=np.float64).T, axis=1)
        n_best = int(best.max()) + 1
        mass = np.bincount(best, weights=w, minlength=n_best)  # P(b)
        joint = np.zeros((n_best, p.shape[1]))
        np.add.at(joint, best, w[:, None] * p)  # P(b, y=1)
        keep = mass > 0
        cond = joint[keep] / mass[keep, None]  # P(y=1 | b)
        out = _entropy(marginal) - mass[keep] @ _entropy(cond)
        return out

    def query_pair(self, rewards: FloatArray) -> tuple[int, int]:
        """The pair of members whose comparison tells most about which member is best."""
        r = np.asarray(rewards, dtype=np.float64)
        i, j = np.triu_indices(r.shape[0], k=1)
        if i.size == 0:
            raise InvalidParameterError("query_pair needs at least two members")
        gains = self.information_gain(r[i] - r[j], r)
        k = int(np.argmax(gains))
        return int(i[k]), int(j[k])

    def query_second(self, rewards: FloatArray, served: int) -> int:
        """The member to show next to ``served`` in an A/B pair: information-directed sampling.

        Minimizes (expected regret of the pair)² / information gain about the best member, so
        a member that would teach a little more but cost much more is not shown.
        """
        r = np.asarray(rewards, dtype=np.float64)
        k = r.shape[0]
        if k < 2 or not 0 <= served < k:
            raise InvalidParameterError(f"query_second needs >= 2 members and served in [0, {k})")
        others = np.array([j for j in range(k) if j != served])
        gains = self.information_gain(r[served] - r[others], r)
        best = float(self.weights_ @ (self.particles_ @ r.T).max(axis=1))
        cost = best - r @ self.predict()  # expected regret of each member, >= 0
        ratio = (cost[served] + cost[others]) ** 2 / np.maximum(gains, 1e-12)
        return int(others[int(np.argmin(ratio))])

    def query_member(self, rewards: FloatArray, reference: FloatArray) -> int:
        """The member whose thumbs up/down tells most about which member is best."""
        r = np.asarray(rewards, dtype=np.float64)
        return int(np.argmax(self.information_gain(r - np.asarray(reference), r)))


def _sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def _entropy(p: FloatArray) -> FloatArray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    out: FloatArray = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    return out


def _normalize(logw: FloatArray) -> FloatArray:
    w = np.exp(logw - logw.max())
    out: FloatArray = w / w.sum()
    return out


def _ess(logw: FloatArray) -> float:
    w = _normalize(logw)
    return float(1.0 / np.dot(w, w))


def _alr_inv(z: FloatArray) -> FloatArray:
    zz = np.hstack([z, np.zeros((z.shape[0], 1))])
    zz -= zz.max(axis=1, keepdims=True)
    e = np.exp(zz)
    p = e / e.sum(axis=1, keepdims=True)
    out: FloatArray = np.clip(p, 1e-300, None)
    return out
