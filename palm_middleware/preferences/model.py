"""Bayesian inference of a user's weight vector over traits, from feedback.

The posterior over the simplex is represented by weighted particles and updated by sequential
Monte Carlo: each observation is tempered in (so a sharp event never collapses the particle set),
and when the effective sample size drops the particles are resampled and moved by
Metropolis-Hastings steps that target the exact current posterior (per particle, a random walk in
additive-log-ratio coordinates or an independence draw from a logistic-normal fitted to the
particles: one vectorized step refreshes most duplicates left by resampling). Old
observations fade with a half-life, which is itself a tempering step. Identical observations
share one likelihood term (their exponents add up), so an update costs the same after ten events
or ten thousand: :meth:`PreferenceModel.partial_fit` updates in place, and moves particles only
when the effective sample size collapses. Everything is reproducible from ``random_state`` and
the observations, so a profile can be rebuilt from the event log.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
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
        move_steps: Metropolis-Hastings steps per rejuvenation (each costs one likelihood
            evaluation of every distinct observation for every particle).

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
        self._llsum = np.zeros(self.n_particles)  # Σ_j exps_j · ll[:, j], kept current
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
            self._ll = self._append(self._ll, self._fresh_loglik(fresh), "_ll_buf")
        self.n_events_ += len(obs)
        idx = np.fromiter(raise_by, dtype=np.intp, count=len(raise_by))
        self._temper_in(idx, np.fromiter(raise_by.values(), dtype=np.float64, count=len(idx)))
        if len(self._obs) > self.max_observations:
            # Drop the weakest (with forgetting: the oldest) terms: tempering them down to zero.
            drop = np.argsort(self._exps, kind="stable")[: len(self._obs) - self.max_observations]
            gone = self._ll[:, drop] @ self._exps[drop]
            self._logw -= gone
            self._llsum -= gone
            self._lapse_raise(drop, -self._exps[drop])
            keep = np.setdiff1d(np.arange(len(self._obs)), drop)
            self._obs = [self._obs[i] for i in keep]
            self._cols = {o.key: i for i, o in enumerate(self._obs)}
            self.__dict__["_sig_fresh"] = {}  # (a dropped key may come back as another object)
            self._exps = self._exps[keep]
            self._ll = self._ll[:, keep]
            self._maybe_rejuvenate()

    def temper(self, observations: Sequence[Observation], factor: float) -> PreferenceModel:
        """Raise the exponent of each of ``observations`` (already assimilated) by ``factor``
        times its faded strength; a negative factor takes part of them back (never below
        zero). Returns self.

        What the ``max_step`` bound needs: an event that moved the mean too far is taken back
        in part by reweighting, not by a refit.
        """
        self._check_fitted()
        t_ref = self._t_ref if self._t_ref is not None else 0.0
        by: dict[int, float] = {}
        for o in observations:
            j = self._cols.get(o.key)
            if j is None:
                raise InvalidParameterError("temper: an observation the model has not seen")
            by[j] = by.get(j, 0.0) + factor * o.strength * forgetting(t_ref - o.ts, self.half_life)
        idx = np.fromiter(by, dtype=np.intp, count=len(by))
        raise_by = np.maximum(
            np.fromiter(by.values(), dtype=np.float64, count=len(idx)), -self._exps[idx]
        )
        self._temper_in(idx, raise_by)
        np.maximum(self._exps, 0.0, out=self._exps)  # rounding never leaves a negative exponent
        return self

    @property
    def ess_fraction_(self) -> float:
        """Effective sample size of the weighted particles, as a fraction of their number."""
        w = self.weights_
        return float(1.0 / np.dot(w, w)) / self.n_particles

    @property
    def evidence_draws_pending_(self) -> int:
        """Draws of the concentration evidence still to make: a budgeted first drawing
        (:meth:`strength_evidence`) not yet complete; 0 if complete or not started."""
        d: _Draws | None = self.__dict__.get("_ev_draws")
        return 0 if d is None else max(_EVIDENCE_DRAWS - int(d.logy.shape[0]), 0)

    @property
    def evidence_draws_stale_(self) -> bool:
        """Whether the concentration evidence's draws, complete, were placed when the user had
        at most half the observations held now (and 4 fewer): the mixture then sits where an
        early posterior was, and the importance weights of the draws near today's posterior
        grow uneven (the log of the noisier estimate is biased low)."""
        d: _Draws | None = self.__dict__.get("_ev_draws")
        if d is None or self.evidence_draws_pending_:
            return False
        n = len(self._obs)
        return n >= max(2 * d.placed, d.placed + 4)

    def renew_evidence(self) -> PreferenceModel:
        """Draw the concentration evidence's draws anew (all of them), placed at the current
        posterior, for the candidates it was last asked for. Returns self."""
        d: _Draws | None = self.__dict__.get("_ev_draws")
        if d is not None:
            del self.__dict__["_ev_draws"]
            self.strength_evidence(d.key[0][0])
        return self

    def retarget_evidence(self) -> PreferenceModel:
        """Put the concentration evidence's draws under the current prior after :meth:`reprior`
        (a tenth of :meth:`renew_evidence`'s cost): the same draws and likelihood columns, their
        log densities recomputed under the new targets, and each draw's importance weight
        multiplied by the ratio of the new grid probability of its grid point to the old one
        (its grid point was drawn from the old). Unbiased as a fresh draw is (the mixture's
        density is known wherever it sits), for the candidates it was last asked for.

        After :meth:`relapse` the comparisons' likelihood columns are recomputed at the new
        lapse rate from the old (the logistic term is recovered from them; no draw moves).
        Renews instead (all draws anew, as :meth:`renew_evidence`) when the draws cannot be
        re-targeted (drawing still pending, another grid, a grid of several lapse rates whose
        rates changed), when they were placed at fewer than 1 / :data:`RETARGET_FRESH` of the
        observations held (each estimate stays unbiased, but a mixture placed at an older
        posterior is noisier where today's posterior is, and the log of a noisier estimate is
        biased low: kept until the observations doubled, 100 users' rows fitted Σα 0.5 below
        brute force, against 0.1 with fresh draws), or when the prior moved so far that
        re-targeted weights would be much noisier than fresh ones: the χ² inflation of a
        candidate's weights (the factor ∫ Dir_new² / Dir_old, times Σ π_new² / π_old over the
        grid) above :data:`RETARGET_INFLATION`. The choice depends on the two priors and the
        observation counts alone, never on the draws, so either way the estimate stays
        unbiased. Returns self.
        """
        d: _Draws | None = self.__dict__.get("_ev_draws")
        if d is None:
            return self
        (strengths, a_bytes), pi_bytes, gl_bytes = d.key
        a = self._alpha
        new_key = ((strengths, a.tobytes()), self._logpi.tobytes(), self._gl.tobytes())
        if d.key == new_key:
            return self
        a_old = np.frombuffer(a_bytes, dtype=np.float64)
        logpi_old = np.frombuffer(pi_bytes, dtype=np.float64)
        gl_old = np.frombuffer(gl_bytes, dtype=np.float64)
        if (
            self.evidence_draws_pending_
            or len(self._obs) > RETARGET_FRESH * d.placed
            or a_old.shape != a.shape
            or logpi_old.shape != self._logpi.shape
            or gl_old.shape != self._gl.shape
            or (gl_bytes != new_key[2] and (np.ptp(gl_old) > 0 or np.ptp(self._gl) > 0))
        ):
            return self.renew_evidence()
        targets = _evidence_targets(strengths, a)
        shift = logpi_old - self._logpi  # log π_old − log π_new per grid point
        grid_inflation = float(np.exp(np.minimum(self._logpi - shift, 700.0)).sum())
        worst = _chi2_inflation(targets, _evidence_targets(strengths, a_old)).max()
        if not worst * grid_inflation <= RETARGET_INFLATION:
            return self.renew_evidence()
        dens = _log_dirichlet(d.logy, targets)
        q = d.q + shift[d.g] if np.any(shift) else d.q
        lr = dens - q[:, None]
        top = lr.max(axis=0)
        cols = d.cols
        if gl_bytes != new_key[2]:  # relapsed: the comparisons' columns at the new lapse rate
            comp = [j for j, o in enumerate(d.seen[: cols.shape[1]]) if o.kind == "compare"]
            cols = cols.copy()
            cols[:, comp] = _relapsed(cols[:, comp], float(gl_old[0]), float(self._gl[0]))
        self.__dict__["_ev_draws"] = dataclasses.replace(
            d, key=new_key, dens=dens, q=q, ratio=np.exp(lr - top), top=top, cols=cols
        )
        return self

    def complete_evidence(self) -> PreferenceModel:
        """Make the concentration evidence's pending draws now (all of them), for the
        candidates it was last asked for. Returns self."""
        d: _Draws | None = self.__dict__.get("_ev_draws")
        if d is not None and self.evidence_draws_pending_:
            self.strength_evidence(d.key[0][0])
        return self

    def rejuvenate(self) -> PreferenceModel:
        """Resample and move the particles now. Returns self.

        Valid at any time (the move leaves the posterior invariant): a caller may move a
        posterior whose particles are thinning before the next event would have to.
        """
        self._check_fitted()
        self._rejuvenate()
        return self

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
        """An independent copy: particles, weights, evidence and the generator's state.

        Arrays the model only ever replaces (particles, likelihood columns, grid points,
        prior) are shared until one side replaces them; those updated in place (log weights,
        running sums, exponents) are copied.
        """
        self._check_fitted()
        new = copy.copy(self)
        for name in ("_logw", "_llsum", "_exps"):
            setattr(new, name, getattr(self, name).copy())
        new.__dict__["_w"] = self.__dict__.get("_w")  # same weights (reset by the setter)
        new.__dict__["_dvec"] = dict(self.__dict__.get("_dvec") or {})
        new.__dict__["_sig_fresh"] = {}
        new.__dict__["_cols_ahead"] = {}
        new.__dict__["_ll_buf"] = new.__dict__["_cols_buf"] = None  # (room only its own)
        new._obs = list(self._obs)
        new._cols = dict(self._cols)
        new._rng = _twin(self._rng)
        ev_rng = self.__dict__.get("_ev_rng")
        if ev_rng is not None:  # (a copy drawing evidence must not advance this one's)
            new.__dict__["_ev_rng"] = _twin(ev_rng)
        return new

    def _append(self, cur: FloatArray, new: FloatArray, buf_name: str) -> FloatArray:
        """``cur`` with the columns ``new`` after it: written into the room after ``cur`` when
        ``cur`` is the start of this model's buffer ``buf_name`` (else a new buffer, twice
        the size, at most ``max_observations + 1`` columns). An event then costs one column,
        not a copy of every column held (1024 × up to 128 per array). Copies share arrays but
        not the room (:meth:`copy`)."""
        n, k = cur.shape[1], new.shape[1]
        room: FloatArray | None = self.__dict__.get(buf_name)
        buf: FloatArray
        if (
            room is not None
            and n + k <= room.shape[1]
            and cur.shape[0] == room.shape[0]
            and cur.ctypes.data == room.ctypes.data
            and cur.base is self.__dict__[buf_name]
        ):
            buf = room
        else:
            room_for = min(max(2 * (n + k), 16), self.max_observations + 1)
            buf = np.empty((cur.shape[0], max(room_for, n + k)))
            buf[:, :n] = cur
            self.__dict__[buf_name] = buf
        buf[:, n : n + k] = new
        return buf[:, : n + k]

    def preview_mean(self, observations: Sequence[Observation]) -> Callable[[float], FloatArray]:
        """``mean(f)``: the posterior mean if ``observations`` came in now at ``f`` times their
        strength.

        Importance reweighting of the current particles: no move, nothing changes. Cheap enough
        to bisect on (the ``max_step`` bound).
        """
        self._check_fitted()
        t_ref = self._t_ref if self._t_ref is not None else max(o.ts for o in observations)
        f = np.array([o.strength * forgetting(t_ref - o.ts, self.half_life) for o in observations])
        have = [self._cols.get(o.key) for o in observations]
        if all(j is not None for j in have):  # assimilated already: their columns are kept
            cols = self._ll[:, np.asarray(have, dtype=np.intp)]
        else:
            cols = self._loglik(self.particles_, observations)
            # Kept for partial_fit of the same observations while the particles stay put.
            ahead = self.__dict__["_cols_ahead"] = {}
            for k, o in enumerate(observations):
                ahead[o.key] = cols[:, k]
        inc = cols @ f
        logw, particles = self._logw.copy(), self.particles_

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
            self._logw += (g - 1.0) * self._llsum
            self._llsum *= g
            self._exps = self._exps * g
            lev = self.__dict__.get("_lapse_ev")
            if lev is not None:
                self.__dict__["_lapse_ev"] = (lev[0], lev[1] * g)
            self._maybe_rejuvenate()
        self._t_ref = max(self._t_ref, t)
        return self._t_ref

    def _temper_in(self, idx: npt.NDArray[np.intp], factors: FloatArray) -> None:
        """Raise the exponents of observations ``idx`` by ``factors``, in ESS-safe stages.

        A stage that would take the effective sample size below the floor stops at the floor
        and is followed by a move at once (the rest of the event would collapse it anyway).
        """
        floor = float(self.ess_threshold) * self.n_particles
        # (one column, the usual event: the same products without a matrix product)
        inc = self._ll[:, idx[0]] * factors[0] if len(idx) == 1 else self._ll[:, idx] @ factors
        remaining = 1.0
        for _ in range(64):
            if remaining <= 1e-12:
                break
            phi = remaining
            logw = self._logw + phi * inc
            w = _normalize(logw)
            collapse = 1.0 / float(w @ w) < floor
            if collapse:
                phi = max(_ess_stage(self._logw, inc, remaining, floor), 1e-4 * remaining)
                logw = self._logw + phi * inc
            self._logw = logw
            if not collapse:
                self.__dict__["_w"] = w  # the weights just checked: computed once
            self._llsum += phi * inc
            self._exps[idx] += phi * factors
            self._lapse_raise(idx, phi * factors)
            remaining -= phi
            if collapse:  # (else the effective sample size just checked is above the floor)
                self._rejuvenate()
                inc = self._ll[:, idx] @ factors  # the particles moved
        if remaining > 1e-12:  # pragma: no cover - only for pathological likelihoods
            inc = self._ll[:, idx] @ factors
            self._logw += remaining * inc
            self._llsum += remaining * inc
            self._exps[idx] += remaining * factors
            self._lapse_raise(idx, remaining * factors)

    def _maybe_rejuvenate(self) -> None:
        w = self.weights_  # cached: summaries and the next check reuse it
        if 1.0 / float(np.dot(w, w)) >= float(self.ess_threshold) * self.n_particles:
            return
        self._rejuvenate()

    def _rejuvenate(self) -> None:
        """Resample, then move the particles by ``move_steps`` Metropolis-Hastings steps."""
        w = self.weights_
        # The independence proposal is fitted before resampling: the weighted particles hold
        # more distinct points than the resampled ones.
        proposal, z = self._proposal(w)
        # Systematic resampling: low variance and deterministic given the generator.
        u = (self._rng.random() + np.arange(self.n_particles)) / self.n_particles
        idx = np.minimum(np.searchsorted(np.cumsum(w), u), self.n_particles - 1)
        logp = self._log_particles()[idx]
        self.particles_ = self.particles_[idx]
        self.__dict__["_logp"] = logp
        self._g = self._g[idx]
        self._ll = self._ll[idx]
        self._llsum = self._ll @ self._exps  # exact again (the running sum drifts by rounding)
        self._logw = np.zeros(self.n_particles)
        lev = self.__dict__.get("_lapse_ev")
        if lev is not None:  # resampled particles keep their lapse sums
            self.__dict__["_lapse_ev"] = (lev[0], lev[1][:, idx])
        self._move(int(self.move_steps), proposal, z[idx])
        self.__dict__["_n_moves"] = self.n_moves_ + 1

    def _proposal(self, w: FloatArray) -> tuple[_Proposal, FloatArray]:
        """A logistic-normal fitted to the weighted particles (in additive-log-ratio
        coordinates, covariance inflated so its tails cover the posterior's) and a grid-point
        law halfway between the posterior's and the prior's; also the particles' additive log
        ratios (the move's coordinates)."""
        logp = self._log_particles()
        z = logp[:, :-1] - logp[:, -1:]
        mean = w @ z
        dev = z - mean
        cov = (dev * w[:, None]).T @ dev
        # The random walk's scale: the weighted spread, as the resampled particles' spread
        # estimates it (without a pass over them).
        sd = np.sqrt(np.maximum(np.diagonal(cov), 0.0))
        cov = cov * _INFLATE + 1e-6 * np.eye(z.shape[1])
        chol = np.asarray(np.linalg.cholesky(cov), dtype=np.float64)
        size = self._gb.size
        q_g = 0.5 * np.bincount(self._g, weights=w, minlength=size) + 0.5 * np.exp(self._logpi)
        q_g /= q_g.sum()
        inv_chol = np.asarray(np.linalg.inv(chol), dtype=np.float64)
        return _Proposal(mean, chol, inv_chol, q_g, sd), z

    def _move(
        self, n_steps: int, proposal: _Proposal, z: FloatArray | None = None
    ) -> npt.NDArray[np.bool_]:
        """Metropolis-Hastings steps that leave the current posterior invariant, vectorized
        over the particles.

        Each particle, each step, draws its kernel: with probability 1/2 a Gaussian random
        walk in additive-log-ratio coordinates (half of those also draw a new grid point from
        the prior), else an independence proposal from ``proposal`` (w and the grid point
        together). Either kernel alone keeps the posterior, so the mixture does; the
        independence draws replace duplicates left by resampling with fresh points in one step,
        the random walk keeps the tails the fitted proposal under-covers within reach.

        The particle arrays are updated in place on the rows that accept (resampling has just
        made them this model's own); ``z``: the particles' additive log ratios if known.
        Returns which particles moved.
        """
        n = self.n_particles
        logp = self._log_particles()
        if z is None:
            z = logp[:, :-1] - logp[:, -1:]
        d = z.shape[1]
        scale = 2.38 / math.sqrt(max(d, 1)) * np.maximum(proposal.sd, 1e-3) * 0.7
        cur = logp @ self._alpha + self._llsum
        g = self._g
        size = self._gb.size
        # log prior / proposal of each grid point (the independence kernel's correction) and
        # the cumulative laws the grid points are drawn from by inverse CDF.
        g_corr = self._logpi - np.log(np.maximum(proposal.q_g, _TINY))
        prior = np.exp(self._logpi)
        cdf_prior = np.cumsum(prior / prior.sum())
        cdf_q = np.cumsum(proposal.q_g)
        p, ll, llsum = self.particles_, self._ll, self._llsum
        # The lapse sums (:meth:`_lapse_diffs`), if kept: resampling gathered them (a copy this
        # move owns), accepted proposals get theirs here.
        lev = self.__dict__.get("_lapse_ev")
        comp = self._compare_cols(range(len(self._obs))) if lev is not None else None
        changed = np.zeros(n, dtype=bool)
        exps_c = self._exps if comp is None or len(comp) == len(self._obs) else self._exps[comp]
        hq = None  # ½‖L⁻¹(z − mean)‖² of the current points
        for _ in range(n_steps):
            u = self._rng.random((5, n))
            eps = self._rng.standard_normal(z.shape)
            ind = u[0] < 0.5
            zp = np.where(ind[:, None], proposal.mean + eps @ proposal.chol.T, z + eps * scale)
            gp = g
            if size > 1:
                g_prior = np.minimum(np.searchsorted(cdf_prior, u[2]), size - 1)
                g_q = np.minimum(np.searchsorted(cdf_q, u[3]), size - 1)
                gp = np.where(ind, g_q, np.where(u[1] < 0.5, g_prior, g))
            # log q(z) − log q(z') of the independence proposal, where it was used: both
            # points' quadratic forms in one product.
            if hq is None:
                both = proposal.half_sq(np.vstack([zp, z]))
                hqp, hq = both[:n], both[n:]
            else:
                hqp = proposal.half_sq(zp)
            corr = hqp - hq
            if size > 1:
                corr += g_corr[gp] - g_corr[g]
            corr *= ind
            # The proposed points on the simplex: a softmax of [zp, 0].
            top = np.maximum(_row_max(zp), 0.0)
            zz = np.empty((n, d + 1))
            np.subtract(zp, top, out=zz[:, :d])
            np.negative(top[:, 0], out=zz[:, d])
            e = np.exp(zz)
            tot = _row_sum(e)
            pp = np.maximum(e / tot, 1e-300)
            logpp = np.maximum(zz - np.log(tot), -690.0)
            sig: list[npt.NDArray[np.float32]] | None = [] if lev is not None else None
            llp = self._loglik(pp, self._obs, gp, sig=sig)
            sump = llp @ self._exps
            prop = logpp @ self._alpha + sump
            acc = np.log(u[4]) < prop - cur + corr
            rows = np.flatnonzero(acc)
            if not rows.size:
                continue
            changed[rows] = True
            if sig and lev is not None and comp is not None:
                # The lapse sums of the particles that moved, from this step's logistic terms.
                # Σ_j exps_j·ll_j of those rows is sump when every term is a comparison.
                ll_c = sump[rows] if len(comp) == len(self._obs) else llp[rows][:, comp]
                lev[1][:, rows] = _lapse_terms(sig[0][rows], ll_c, exps_c, lev[0])
            z[rows] = zp[rows]
            p[rows] = pp[rows]
            logp[rows] = logpp[rows]
            hq[rows] = hqp[rows]
            if size > 1:
                g[rows] = gp[rows]
            ll[rows] = llp[rows]
            llsum[rows] = sump[rows]
            cur[rows] = prop[rows]
        self.particles_ = p  # (resets what was cached of the old points)
        self.__dict__["_logp"] = logp
        self._g, self._ll, self._llsum = g, ll, llsum
        return changed

    def _noise32(
        self, g: npt.NDArray[np.intp] | None = None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Each particle's β and lapse as float32 columns (cached for the particles' own grid
        points until they change)."""
        if g is not None:
            grid = self.__dict__.get("_grid32")
            if grid is None or grid[0] is not self._gb or grid[1] is not self._gl:
                b32, l32 = self._gb.astype(np.float32), self._gl.astype(np.float32)
                grid = self.__dict__["_grid32"] = (self._gb, self._gl, b32, l32)
            hit = self.__dict__.get("_g32")  # (the evidence draws' columns, asked per event)
            if hit is None or hit[0] is not g or hit[1] is not grid:
                hit = self.__dict__["_g32"] = (g, grid, grid[2][g][:, None], grid[3][g][:, None])
            return hit[2], hit[3]
        hit = self.__dict__.get("_n32")
        if hit is None or hit[0] is not self._g or hit[1] is not self._gl:
            b, lp = self._noise32(self._g)
            hit = self.__dict__["_n32"] = (self._g, self._gl, b, lp)
        return hit[2], hit[3]

    def _fresh_loglik(self, fresh: Sequence[Observation]) -> FloatArray:
        """Columns of new observations: those :meth:`preview_mean` just computed for the same
        particles, else computed now."""
        ahead: dict[tuple[Any, ...], FloatArray] = self.__dict__.get("_cols_ahead") or {}
        if all(o.key in ahead for o in fresh):
            return np.stack([ahead[o.key] for o in fresh], axis=1)
        sig: list[npt.NDArray[np.float32]] = []
        out = self._loglik(self.particles_, fresh, sig=sig)
        if sig and all(o.kind == "compare" for o in fresh):
            # Their logistic terms, for the lapse sums of this same event (_lapse_raise).
            for k, o in enumerate(fresh):
                self._keep_sig(o.key, sig[0][:, k])
        return out

    def _keep_sig(self, key: tuple[Any, ...], col: npt.NDArray[np.float32]) -> None:
        """Keep the logistic terms of observation ``key`` at the current particles (the
        ``_SIG_KEEP`` most recently used; dropped when the particles move)."""
        kept: dict[tuple[Any, ...], npt.NDArray[np.float32]] = self.__dict__.setdefault(
            "_sig_fresh", {}
        )
        kept.pop(key, None)
        kept[key] = col
        while len(kept) > _SIG_KEEP:
            kept.pop(next(iter(kept)))

    def _sig_cols(self, obs: Sequence[Observation]) -> npt.NDArray[np.float32]:
        """:meth:`_sig32` of the current particles for comparisons ``obs``, from the kept
        columns where possible (an event usually repeats a recent observation)."""
        kept: dict[tuple[Any, ...], npt.NDArray[np.float32]] = self.__dict__.setdefault(
            "_sig_fresh", {}
        )
        missing = [o for o in obs if o.key not in kept]
        if missing:
            s = self._sig32(self.particles_, missing)
            for k, o in enumerate(missing):
                self._keep_sig(o.key, s[:, k])
        cols = []
        for o in obs:
            col = kept[o.key]
            self._keep_sig(o.key, col)  # most recently used
            cols.append(col)
        return cols[0][:, None] if len(cols) == 1 else np.stack(cols, axis=1)

    def _sig32(
        self,
        p: FloatArray | npt.NDArray[np.float32],
        obs: Sequence[Observation],
        g: npt.NDArray[np.intp] | None = None,
    ) -> npt.NDArray[np.float32]:
        """σ(β·⟨p, δ⟩) per particle and comparison in ``obs`` (float32, (n, len(obs))): the
        logistic part of their likelihoods, shared by every lapse rate."""
        beta32 = self._noise32()[0] if g is None else self._noise32(g)[0]
        # Signed, scaled comparison directions, one column per observation (each kept as
        # float32 by its exact vector, sign and scale: a move evaluates every observation).
        kept: dict[tuple[Any, ...], npt.NDArray[np.float32]] = self.__dict__.setdefault("_dvec", {})
        if len(kept) > 4 * self.max_observations:
            kept.clear()
        rows = []
        for o in obs:
            exact = (o.vector.tobytes(), o.y, o.scale)
            row = kept.get(exact)
            if row is None:
                row = kept[exact] = (o.vector * (o.y * o.scale)).astype(np.float32)
            rows.append(row)
        deltas = np.array(rows).T
        if p is self.particles_:
            p32 = self.__dict__.get("_p32")
            if p32 is None:
                p32 = self.__dict__["_p32"] = p.astype(np.float32)
        else:
            p32 = np.asarray(p, dtype=np.float32)
        z = p32 @ deltas
        z *= beta32
        return _sigmoid32(z)

    def _loglik(
        self,
        p: FloatArray | npt.NDArray[np.float32],
        obs: Sequence[Observation],
        g: npt.NDArray[np.intp] | None = None,
        lapse: float | None = None,
        sig: list[npt.NDArray[np.float32]] | None = None,
    ) -> FloatArray:
        """Per-particle, per-observation log-likelihood, shape (n_particles, len(obs)).

        ``g``: each particle's (β, lapse) grid point (default: the particles' own); ``lapse``
        overrides the grid's lapse; ``sig``: if given, the logistic terms of the comparisons
        (:meth:`_sig32`) are appended to it. The logistic terms are computed in single
        precision (relative error ~1e-7, far below the Monte Carlo error): exp and log in
        float32 are 3-4x faster than in float64 here, and they are most of a particle move.
        """
        out = np.zeros((p.shape[0], len(obs)))
        comp = [i for i, o in enumerate(obs) if o.kind == "compare"]
        if comp:
            lapse32 = self._noise32()[1] if g is None else self._noise32(g)[1]
            if lapse is not None:
                lapse32 = np.full_like(lapse32, float(lapse))
            s = self._sig32(p, obs if len(comp) == len(obs) else [obs[i] for i in comp], g)
            if sig is not None:
                sig.append(s.copy())
            floor = float(self._gl.min() if lapse is None else lapse) < 1e-30
            logprob = _log_lapsed(s, lapse32, floor)
            if len(comp) == len(obs):
                return logprob  # (the zeros above are never touched: allocation is lazy)
            out[:, comp] = logprob
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
        self.__dict__["_logp"] = None
        self.__dict__["_sq"] = None
        self.__dict__["_p32"] = None
        self.__dict__["_cols_ahead"] = {}
        self.__dict__["_sig_fresh"] = {}

    def _sorted(self) -> tuple[npt.NDArray[np.intp], FloatArray]:
        """Per-trait sort order of the particles (flat: trait after trait) and the sorted
        values, one row per trait (cached: particles only change when they move, weights
        change on every event)."""
        cached = self.__dict__.get("_sort")
        if cached is None:
            cols = np.ascontiguousarray(self.particles_.T)
            order = np.argsort(cols, axis=1)
            # The order as flat indices into the weights, trait after trait (one take).
            cached = self.__dict__["_sort"] = (
                order.ravel(),
                np.take_along_axis(cols, order, axis=1),
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
        out: FloatArray = self.weights_ @ self._log_particles()
        return out

    def _log_particles(self) -> FloatArray:
        """log of the particles (cached until they move)."""
        out: FloatArray | None = self.__dict__.get("_logp")
        if out is None:
            out = self.__dict__["_logp"] = np.log(self.particles_)
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
        x = diffs + np.log(np.maximum(self.weights_, _TINY))
        top = x.max(axis=1)
        x -= top[:, None]
        np.exp(x, out=x)
        out = top + np.log(x.sum(axis=1))
        return np.asarray(out, dtype=np.float64)

    def strength_evidence(
        self, strengths: Sequence[float], budget: int | None = None
    ) -> FloatArray:
        """Log marginal likelihood of the user's observations if the prior were the Dirichlet
        of total concentration ``strengths[k]`` (same mean as the current prior), relative to
        the current prior.

        What a population fit of the prior's concentration needs from a user: a few numbers,
        no events (the mean-log statistic alone learns it only slowly: with little feedback
        per user, a posterior's mean log w mostly repeats its prior's).

        Importance sampling from a defensive mixture of Dirichlets with known density
        (:meth:`_evidence_draws`): Z_k ≈ mean over draws of lik · Dir_k / q. The posterior
        particles are used only to place the mixture, not as samples: the plain ratio over
        them, E_post[Dir(w; s·m) / Dir(w; α)], has infinite variance for a candidate with some
        α_i below half the current one and is biased toward the current prior (it held a fit
        near its start: Σα ≈ 2.8 for a true 1.2); and after the prior is narrowed or widened in
        place the particles' tails lag (a mixture estimator that trusted them as posterior
        samples was off by ~0.4 nats per user at a quarter of the current concentration).

        ``budget``: at most this many new draws per call while a model's first draws are made
        (the feedback path's cap, so a new user's first events share the cost instead of one
        paying it all; until then the estimate rests on the draws made so far: unbiased,
        noisier). None: all at once. Renewals draw all at once either way.
        """
        self._check_fitted()
        if not self._obs:
            return np.zeros(len(strengths))
        draws = self._evidence_draws(*self._evidence_key(strengths), budget)
        ly = draws.cols @ self._exps  # the draws' log-likelihood of everything held
        top = float(ly.max())
        total = np.exp(ly - top) @ draws.ratio  # Σ lik · Dir_k / q, scaled per column
        if float(total.min()) > 1e-250:
            z = np.log(total) + draws.top
        else:  # the likelihood sits where a ratio underflowed: the same sum in log space
            z = _logsumexp((ly - top - draws.q)[:, None] + draws.dens, axis=0)
        out: FloatArray = z[:-1] - z[-1]
        return out

    def prepare_evidence(
        self, strengths: Sequence[float], seed: int | Sequence[int]
    ) -> PreferenceModel:
        """Make all the concentration evidence's draws now, before any observation: placed at
        the prior, from a generator seeded by ``seed`` (each prepared model needs its own:
        shared draws would correlate users' Monte Carlo errors, which the population sums).
        Returns self.

        What lets a new user's first event only extend draws made ahead, off the feedback
        path (:meth:`LearningState.prepare_ahead`); unbiased as any placement is, since the
        mixture's density is known. A model with observations draws at its posterior instead.
        """
        self._check_fitted()
        if "_ev_draws" not in self.__dict__:
            self.__dict__["_ev_rng"] = np.random.default_rng(seed)
            self._evidence_draws(*self._evidence_key(strengths))
        return self

    def _evidence_key(self, strengths: Sequence[float]) -> tuple[tuple[Any, ...], FloatArray]:
        """The draws' key (candidates, current prior) and the Dirichlets they are weighted to
        (:func:`_evidence_targets`)."""
        a = self._alpha
        key = (tuple(float(x) for x in strengths), a.tobytes())
        return key, _evidence_targets(key[0], a)

    def _evidence_draws(
        self, key: tuple[Any, ...], targets: FloatArray, budget: int | None = None
    ) -> _Draws:
        """The draws for :meth:`strength_evidence` and their log-likelihood columns, one per
        observation held.

        An equal-weight mixture of Dirichlets, stratified (as many draws from each): the
        candidates up to the current concentration (so every candidate's ratio to the mixture
        is bounded where the likelihood is flat), every candidate's concentration around the
        posterior mean (halfway to the prior's, so no trait's mean is near zero), and, with
        weight 4 each, the Dirichlet matched to the posterior's mean and variance and one of
        half its concentration (draws where the likelihood is). Each draw carries a grid
        point from the grid's prior. Drawn again when the prior or the noise grid changes, or
        when the particles have moved and the observations doubled since the last draw; else
        extended by new observations' columns only (the mixture's density is known wherever it
        sits, so stale draws stay unbiased).

        With a ``budget``, a model's first draws come in batches of at most that many, one per
        call, each from the mixture placed at the current posterior (a renewal draws all).
        Each draw keeps its own batch's mixture density (the mixture weighted by the batch's
        actual count of each component), so every batch is an unbiased estimate and so is
        their draw-weighted mean.
        """
        grid_key = (key, self._logpi.tobytes(), self._gl.tobytes())
        logp = self._log_particles()
        d: _Draws | None = self.__dict__.get("_ev_draws")
        if (
            d is None
            or d.key != grid_key
            or (d.logp is not logp and len(self._obs) >= max(2 * len(d.seen), len(d.seen) + 4))
            or (d.obs is not self._obs and not _extends(d, self._obs))
        ):
            # A renewal (the prior or grid changed, ...) draws all at once, as without a budget:
            # batches would put every user's row at fewer draws after each population refit.
            budget, d = None if d is not None else budget, None
        have = 0 if d is None else d.logy.shape[0]
        n = _EVIDENCE_DRAWS - have
        if budget is not None:
            n = min(n, max(int(budget), 1))
        if n > 0:
            logy, g, dens, q = self._evidence_batch(targets, n)
            if d is None:
                cols = np.zeros((n, 0))
                y32 = np.exp(logy).astype(np.float32)
                d = _Draws(
                    grid_key,
                    logy,
                    y32,
                    g,
                    dens,
                    q,
                    dens,
                    dens[0],
                    cols,
                    [],
                    None,
                    logp,
                    len(self._obs),
                )
            else:  # the new batch's columns now, so that every draw holds every observation's
                y32 = np.exp(logy).astype(np.float32)
                cols = self._loglik(y32, d.seen, g)
                d = dataclasses.replace(
                    d,
                    logy=np.vstack([d.logy, logy]),
                    y32=np.vstack([d.y32, y32]),
                    g=np.concatenate([d.g, g]),
                    dens=np.vstack([d.dens, dens]),
                    q=np.concatenate([d.q, q]),
                    cols=np.vstack([d.cols, cols]),
                )
            lr = d.dens - d.q[:, None]
            top = lr.max(axis=0)
            d = dataclasses.replace(d, ratio=np.exp(lr - top), top=top)
        assert d is not None
        if d.cols.shape[1] != len(self._obs) or d.obs is not self._obs:
            fresh = self._obs[d.cols.shape[1] :]
            cols = self._append(d.cols, self._loglik(d.y32, fresh, d.g), "_cols_buf")
            d = dataclasses.replace(d, cols=cols, obs=self._obs, seen=list(self._obs))
        self.__dict__["_ev_draws"] = d
        return d

    def _evidence_batch(
        self, targets: FloatArray, n: int
    ) -> tuple[FloatArray, npt.NDArray[np.intp], FloatArray, FloatArray]:
        """``n`` draws from the defensive mixture placed at the current posterior
        (:meth:`_evidence_draws`): their log points, grid points, log densities under
        ``targets`` and log density under the mixture as drawn (its components weighted by
        how many draws each gave)."""
        rng = self.__dict__.get("_ev_rng")
        if rng is None:
            # Seeded by the particles (set by the model's own seed), not drawn from the
            # model's generator: asking for the evidence changes none of its later draws.
            # (and by the user's likelihood: copies of one prior model share particles)
            raw = self.particles_[:4].tobytes() + self._llsum[:4].tobytes()
            bits = np.frombuffer(raw, dtype=np.uint32)
            rng = self.__dict__["_ev_rng"] = np.random.default_rng(bits)
        w, p = self.weights_, self.particles_
        mean = w @ p
        mean /= mean.sum()
        var = w @ (p - mean) ** 2
        ratios = sorted((mean * (1 - mean) / np.maximum(var, 1e-12) - 1.0).tolist())
        mid = len(ratios) // 2  # (the median: np.median costs more than the rest of this)
        conc = ratios[mid] if len(ratios) % 2 else 0.5 * (ratios[mid - 1] + ratios[mid])
        conc = min(max(conc, 0.1), 1e4)
        half = 0.5 * mean + 0.5 * targets[-1] / targets[-1].sum()
        mix = np.vstack(
            [targets[targets.sum(axis=1) <= targets[-1].sum() * (1 + 1e-9)]]
            + [np.maximum(np.outer(targets.sum(axis=1), half), 1e-2)]
            + [np.maximum(np.outer([conc, 0.5 * conc], mean), 1e-2)] * 4
        )
        c = mix[np.arange(n) % mix.shape[0]]
        # log Gamma(c) draws as log Gamma(c + 1) + log(U) / c: exact, no underflow at small c
        lg = np.log(rng.standard_gamma(c + 1.0)) + np.log(rng.random(c.shape)) / c
        lg -= lg.max(axis=1, keepdims=True)
        lg -= np.log(np.exp(lg).sum(axis=1, keepdims=True))
        logy = np.maximum(lg, -690.0)
        pi = np.exp(self._logpi)
        g = np.minimum(np.searchsorted(np.cumsum(pi / pi.sum()), rng.random(n)), pi.size - 1)
        counts = n // mix.shape[0] + (np.arange(mix.shape[0]) < n % mix.shape[0])
        return logy, g, _log_dirichlet(logy, targets), _log_mixture(logy, mix, counts)

    def _warm(
        self, lapses: Sequence[float] | None = None, strengths: Sequence[float] | None = None
    ) -> PreferenceModel:
        """Compute what stays valid until the particles move (sort order, log-particles,
        moments, noise columns; the lapse sums if given), so that copies
        (:meth:`copy`: a new user's prior draw) share them instead of each recomputing them.
        ``strengths`` is accepted and not warmed: the concentration evidence's draws are each
        user's own (shared draws would correlate users' Monte Carlo errors, which the
        population sums). Returns self."""
        self._check_fitted()
        self._sorted()
        self.summary()
        self._noise32()
        self.__dict__["_p32"] = self.particles_.astype(np.float32)
        if lapses is not None:
            self._lapse_diffs(tuple(float(x) for x in lapses))
        return self

    def _lapse_diffs(self, lapses: tuple[float, ...]) -> FloatArray:
        """Per particle and lapse: Σ_j exps_j · (loglik_j at the lapse − loglik_j), shape
        (len(lapses), n_particles).

        Kept between calls: raised with each observation's exponent (:meth:`_lapse_raise`),
        faded with it, gathered by resampling and recomputed for the particles a move changes
        (from the move's own logistic terms, :meth:`_move`), so an event costs the likelihood
        of its own columns only. Recomputed from every observation only after a refit.
        """
        lev = self.__dict__.get("_lapse_ev")
        if lev is not None and lev[0] == lapses:
            out: FloatArray = lev[1]
            return out
        comp = self._compare_cols(range(len(self._obs)))
        if comp is None:
            out = np.zeros((len(lapses), self.n_particles))
        else:
            sig = self._sig32(self.particles_, [self._obs[j] for j in comp])
            if len(comp) == len(self._obs):
                out = _lapse_terms(sig, self._ll, self._exps, lapses)
            else:
                out = _lapse_terms(sig, self._ll[:, comp], self._exps[comp], lapses)
        self.__dict__["_lapse_ev"] = (lapses, out)
        return out

    def _compare_cols(self, idx: Iterable[int]) -> list[int] | None:
        """The columns among ``idx`` whose likelihood depends on the lapse (comparisons; an
        anchor's does not), or None if there are none."""
        obs = self._obs
        comp = [int(j) for j in idx if obs[j].kind == "compare"]
        return comp or None

    def _lapse_raise(self, idx: npt.NDArray[np.intp], by: FloatArray) -> None:
        """Keep the lapse sums of :meth:`_lapse_diffs` current: exponents of ``idx`` rose by
        ``by``."""
        lev = self.__dict__.get("_lapse_ev")
        if lev is None or len(idx) == 0:
            return
        keep = [k for k, j in enumerate(idx) if self._obs[j].kind == "compare"]
        if not keep:
            return  # an anchor's likelihood does not depend on the lapse
        if len(keep) < len(idx):
            idx, by = idx[keep], by[keep]
        sig = self._sig_cols([self._obs[j] for j in idx])
        inc = _lapse_terms(sig, self._ll[:, idx], by, lev[0])
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
            self._llsum = new @ self._exps
        self._gl = np.full_like(self._gl, float(lapse))
        self.__dict__["_lapse_ev"] = None
        self.__dict__["_cols_ahead"] = {}
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
            self._logw += self._log_particles() @ (a - self._alpha)
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
        order, xs = self._sorted()
        d, n = xs.shape
        # One cumulative sum over every trait's sorted weights in a row: trait t's run starts
        # at t (each run sums to 1), so one search finds every trait's two tails.
        cdf = np.cumsum(self.weights_.take(order))
        targets, last = _tail_targets(d, n, level)
        at = np.minimum(np.searchsorted(cdf, targets), last)
        tails: FloatArray = xs.ravel()[at]
        return tails[:d], tails[d:]

    def summary(self, level: float = 0.9) -> PosteriorSummary:
        """Compact summary for storage and routing."""
        # Mean and E[p²] in one product: [p | p²] is cached with the particles (they change
        # only on a move).
        both = self.__dict__.get("_sq")
        if both is None:
            p = self.particles_
            both = self.__dict__["_sq"] = np.hstack([p, p * p])
        moments = self.weights_ @ both
        d = moments.size // 2
        mean = moments[:d] / moments[:d].sum()
        tv = max(float(moments[d:].sum() - mean @ mean), 0.0)
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
        # P(b, y=1), one bincount per column (np.add.at adds in the same order, slowly).
        wp = w[:, None] * p
        joint = np.stack(
            [np.bincount(best, weights=wp[:, j], minlength=n_best) for j in range(p.shape[1])],
            axis=1,
        )
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

    def query_second(
        self, rewards: FloatArray, served: int, candidates: Sequence[int] | None = None
    ) -> int:
        """The member to show next to ``served`` in an A/B pair: information-directed sampling.

        Minimizes (expected regret of the pair)² / information gain about the best member, so
        a member that would teach a little more but cost much more is not shown.
        ``candidates``: the members that may be shown (default: all but ``served``); the
        caller's cost bound lives there, while the gain stays about the best of all members.
        """
        r = np.asarray(rewards, dtype=np.float64)
        k = r.shape[0]
        if k < 2 or not 0 <= served < k:
            raise InvalidParameterError(f"query_second needs >= 2 members and served in [0, {k})")
        pool = range(k) if candidates is None else candidates
        others = np.array([int(j) for j in pool if j != served and 0 <= j < k], dtype=np.intp)
        if others.size == 0:
            raise InvalidParameterError("query_second needs a candidate other than served")
        gains = self.information_gain(r[served] - r[others], r)
        best = float(self.weights_ @ _row_max(self.particles_ @ r.T)[:, 0])
        cost = best - r @ self.predict()  # expected regret of each member, >= 0
        ratio = (cost[served] + cost[others]) ** 2 / np.maximum(gains, 1e-12)
        return int(others[int(np.argmin(ratio))])

    def query_member(self, rewards: FloatArray, reference: FloatArray) -> int:
        """The member whose thumbs up/down tells most about which member is best."""
        r = np.asarray(rewards, dtype=np.float64)
        return int(np.argmax(self.information_gain(r - np.asarray(reference), r)))


#: Covariance inflation of the independence proposal (its tails must cover the posterior's).
_INFLATE = 1.5
#: Draws behind :meth:`PreferenceModel.strength_evidence`. Against a brute-force marginal
#: likelihood (40 peaked users after 40 thumbs each; 30 users of the recovery test after
#: re-priors to Σα ≈ 1) the summed evidence's bias was within 0.01-0.03 nats per user at every
#: candidate.
_EVIDENCE_DRAWS = 1024
#: Largest χ² inflation of the importance weights (see
#: :meth:`PreferenceModel.retarget_evidence`) at which the concentration evidence's draws are
#: re-targeted to a new prior rather than drawn anew: at 2, a re-targeted estimate is at worst
#: about as noisy as one from half the draws.
RETARGET_INFLATION = 2.0
#: Re-targeted draws must have been placed when the user held at least 1 / this of the
#: observations held now (see :meth:`PreferenceModel.retarget_evidence`).
RETARGET_FRESH = 1.25


@dataclass(frozen=True)
class _Draws:
    """Defensive draws for the concentration evidence and their log-likelihood columns."""

    key: tuple[Any, ...]
    logy: FloatArray
    y32: npt.NDArray[np.float32]  # the points themselves, as the likelihood columns take them
    g: npt.NDArray[np.intp]
    dens: FloatArray  # log Dirichlet density under each target (candidates, current prior)
    q: FloatArray  # log density under the mixture drawn from
    ratio: FloatArray  # exp(dens - q - top): the importance weights but for the likelihood
    top: FloatArray
    cols: FloatArray
    seen: list[Observation]
    obs: list[Observation] | None
    logp: FloatArray  # the particles' logs when drawn
    placed: int  # observations held when the (first of the) draws were placed


def _twin(rng: np.random.Generator) -> np.random.Generator:
    """An independent generator in the same state."""
    bits = rng.bit_generator
    twin = type(bits)()
    twin.state = bits.state
    return np.random.Generator(twin)


def _extends(d: _Draws, obs: list[Observation]) -> bool:
    """Whether ``obs`` is the draws' observation list with more appended (same objects)."""
    n = len(d.seen)
    return len(obs) >= n and all(a is b for a, b in zip(d.seen, obs[:n]))


def _evidence_targets(strengths: Sequence[float], alpha: FloatArray) -> FloatArray:
    """The Dirichlets of :meth:`PreferenceModel.strength_evidence`: one per candidate
    concentration (the prior's mean), then the prior itself."""
    a = np.asarray(alpha, dtype=np.float64)
    out: FloatArray = np.vstack(
        [np.maximum(np.outer(np.asarray(strengths, dtype=np.float64), a / a.sum()), 1e-2), a]
    )
    return out


def _relapsed(cols: FloatArray, old: float, new: float) -> FloatArray:
    """Comparisons' log-likelihoods log(old + (1 − 2·old)·σ) at lapse ``new`` instead: σ
    recovered from them (where σ is tiny the result is the new lapse's floor either way)."""
    sig = np.clip((np.exp(cols) - old) / (1.0 - 2.0 * old), 0.0, 1.0)
    out: FloatArray = np.log(np.maximum(new + (1.0 - 2.0 * new) * sig, 1e-30))
    return out


def _chi2_inflation(new: FloatArray, old: FloatArray) -> FloatArray:
    """Per row: ∫ Dir(w; new)² / Dir(w; old) dw (1 + the χ² divergence; ∞ where it diverges),
    the factor by which reweighting draws from Dir(old) to Dir(new) inflates their weights'
    second moment."""
    from scipy.special import gammaln

    def log_beta(a: FloatArray) -> FloatArray:
        out: FloatArray = gammaln(a).sum(axis=1) - gammaln(a.sum(axis=1))
        return out

    twice = 2.0 * new - old
    ok = np.all(twice > 0, axis=1)
    safe = np.where(ok[:, None], twice, 1.0)
    logs = log_beta(old) + log_beta(safe) - 2.0 * log_beta(new)
    out: FloatArray = np.where(ok, np.exp(np.minimum(logs, 700.0)), np.inf)
    return out


def _log_dirichlet(logp: FloatArray, alphas: FloatArray) -> FloatArray:
    """log Dir(p; alphas[k]) for each row of ``logp`` (log points) and each k: (n, k)."""
    from scipy.special import gammaln

    out: FloatArray = logp @ (alphas - 1.0).T + (
        gammaln(alphas.sum(axis=1)) - gammaln(alphas).sum(axis=1)
    )
    return out


def _log_mixture(logp: FloatArray, mix: FloatArray, counts: npt.NDArray[np.intp]) -> FloatArray:
    """log of the mixture of Dir(mix[j]) weighted by ``counts[j]`` (the draws each component
    gave: exact for stratified draws whose number is not a multiple of the components') at
    each row of ``logp``: (n,). The exponentials in single precision (relative error ~1e-7,
    far below the Monte Carlo error).
    """
    keep = counts > 0
    mix, counts = mix[keep], counts[keep]
    x = _log_dirichlet(logp, mix) + np.log(counts / counts.sum())
    top = x.max(axis=1)
    out: FloatArray = top + np.log(np.exp((x - top[:, None]).astype(np.float32)).sum(axis=1))
    return out


def _logsumexp(x: FloatArray, axis: int | None = None) -> Any:
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    out = np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True)) + top
    return out.reshape(()) if axis is None else np.squeeze(out, axis=axis)


def _logmeanexp(x: FloatArray, axis: int | None = None) -> Any:
    n = x.size if axis is None else x.shape[axis]
    return _logsumexp(x, axis=axis) - math.log(n)


@dataclass(frozen=True)
class _Proposal:
    """The independence proposal of a move: N(mean, chol·cholᵀ) over additive log-ratios and
    a law ``q_g`` over grid points."""

    mean: FloatArray
    chol: FloatArray
    inv_chol: FloatArray
    q_g: FloatArray
    sd: FloatArray  # the weighted particles' spread per coordinate (the random walk's scale)

    def half_sq(self, z: FloatArray) -> FloatArray:
        """−log density up to a constant: ½‖L⁻¹(z − mean)‖²."""
        r = (z - self.mean) @ self.inv_chol.T
        out: FloatArray = 0.5 * np.einsum("ij,ij->i", r, r)
        return out


def _sigmoid32(z: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """σ(z) in place on ``z`` (float32)."""
    np.clip(z, -80.0, 80.0, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    z += 1.0
    np.reciprocal(z, out=z)
    return z


def _log_lapsed(
    s: npt.NDArray[np.float32], lapse: npt.NDArray[np.float32], floor: bool = True
) -> FloatArray:
    """log(lapse + (1 − 2·lapse)·s) for s = σ(z), in place on ``s``, as float64.

    ``floor``: keep the argument ≥ 1e-30 (only a lapse below that can take it lower)."""
    s *= 1.0 - 2.0 * lapse
    s += lapse
    if floor:
        np.maximum(s, 1e-30, out=s)
    np.log(s, out=s)
    out: FloatArray = s.astype(np.float64)
    return out


#: Observations whose logistic terms a model keeps between events (about 4 kB each at 1024
#: particles): those of a user's recent events, for their lapse sums.
_SIG_KEEP = 8


def _lapse_terms(
    sig: npt.NDArray[np.float32], ll: FloatArray, exps: FloatArray, lapses: Sequence[float]
) -> FloatArray:
    """Σ_j exps_j · (log(x + (1 − 2x)·sig_j) − ll_j) per lapse x and particle, shape
    (len(lapses), n): every lapse in one broadcast (the same float32 steps as
    :func:`_log_lapsed`, so the same numbers). ``ll`` may also be given as its sum
    Σ_j exps_j·ll_j, shape (n,) (subtracted after the product: a move has it)."""
    lap, scale, floor = _lapse_consts(tuple(lapses))
    if sig.shape[1] == 1:  # one column (an event's): a product, no stacked matrix product
        s = sig[:, 0] * scale
        s += lap
        if floor:
            np.maximum(s, 1e-30, out=s)
        np.log(s, out=s)
        one = s.astype(np.float64)
        if ll.ndim == 1:
            one *= float(exps[0])
            one -= ll
            return one
        one -= ll[:, 0]
        one *= float(exps[0])
        return one
    s = sig[None] * scale[:, :, None]
    s += lap[:, :, None]
    if floor:
        np.maximum(s, 1e-30, out=s)
    np.log(s, out=s)
    d = s.astype(np.float64)
    if ll.ndim == 1:
        out: FloatArray = d @ exps
        out -= ll
        return out
    d -= ll
    out = d @ exps
    return out


@functools.lru_cache(maxsize=32)
def _lapse_consts(
    lapses: tuple[float, ...],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], bool]:
    """Columns of the lapses and of 1 − 2·lapse in float32 (as :func:`_log_lapsed` computes
    them), and whether a lapse is low enough to need the 1e-30 floor."""
    lap = np.asarray(lapses, dtype=np.float32)[:, None]
    scale = 1.0 - 2.0 * lap
    lap.flags.writeable = scale.flags.writeable = False
    return lap, scale, min(lapses) < 1e-30


@functools.lru_cache(maxsize=32)
def _tail_targets(d: int, n: int, level: float) -> tuple[FloatArray, npt.NDArray[np.intp]]:
    """Search targets of :meth:`PreferenceModel.credible_interval` in the chained cumulative
    weights (trait t's tails at t + a and t + 1 − a) and each trait's last index."""
    rows = np.arange(d)
    a = (1 - level) / 2
    targets = np.concatenate([rows + a, rows + (1 - a)])
    last = np.concatenate([rows, rows]) * n + n - 1
    return targets, last


def _ess_stage(logw: FloatArray, inc: FloatArray, remaining: float, floor: float) -> float:
    """The largest share of ``remaining`` (to 1/256) that keeps the effective sample size of
    ``logw + share·inc`` at or above ``floor`` (bisection: ESS falls as the share grows)."""
    lo, hi = 0.0, remaining
    for _ in range(8):
        mid = 0.5 * (lo + hi)
        if _ess(logw + mid * inc) >= floor:
            lo = mid
        else:
            hi = mid
    return lo


def _row_max(a: FloatArray) -> FloatArray:
    """``a.max(axis=1, keepdims=True)``, column by column: the same numbers, and much faster
    for a few columns (numpy reduces short rows one row at a time)."""
    out = a[:, 0].copy()
    for k in range(1, a.shape[1]):
        np.maximum(out, a[:, k], out=out)
    return out[:, None]


def _row_sum(a: FloatArray) -> FloatArray:
    """``a.sum(axis=1, keepdims=True)``, column by column below 8 columns (numpy adds fewer
    than 8 numbers in order, so the same numbers; from 8 on it sums pairwise)."""
    if a.shape[1] >= 8:
        out: FloatArray = a.sum(axis=1, keepdims=True)
        return out
    acc = a[:, 0].copy()
    for k in range(1, a.shape[1]):
        acc += a[:, k]
    return acc[:, None]


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
