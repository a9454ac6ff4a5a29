"""One user's learning state: grouped evidence, forgetting, tempering and the ``max_step`` bound.

A stored profile holds the user's evidence as groups of identical observations (same pair and
outcome, same member rated the same way, same cue), each with its faded strength, plus the
exact posterior summary computed at the last event. :class:`LearningState` turns a stored
profile plus one new event into the next profile (:meth:`LearningState.rebuild`) and a stored
profile into the summary served between events (:meth:`LearningState.summary`). Forgetting is
:func:`~palm_middleware.preferences.model.forgetting` everywhere. Pure: values in, values out
(the caller passes ``now`` and the policy).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..exceptions import InvalidParameterError
from ..types import FloatArray
from .events import Observation
from .model import PosteriorSummary, PreferenceModel, forgetting
from .noise import DEFAULT_LAPSES, NoiseGrid
from .population import Population, PopulationPrior

if TYPE_CHECKING:
    from ..policy import BoundsPolicy
    from ..stores.base import EventRecord, ProfileRecord

__all__ = ["MAX_EVIDENCE_GROUPS", "LearningState", "event_digest", "prior_summary"]

#: Distinct observations kept per user (the weakest, i.e. oldest, go first beyond this).
MAX_EVIDENCE_GROUPS = 128
#: Digests of folded event ids kept per user (privacy ``weights_only`` retry detection).
MAX_FOLDED_IDS = 512

_Groups = dict[tuple[Any, ...], tuple[Observation, float]]


def event_digest(event_id: str) -> str:
    """A short digest of a stored event id (what an audit record or a folded profile keeps)."""
    return hashlib.sha256(event_id.encode()).hexdigest()[:16]


class LearningState:
    """How a user's stored evidence becomes a posterior, and how one event updates it.

    Args:
        beta, lapse: the feedback temperature and lapse rate, or ``"learn"``. A learned β is
            inferred per user over a grid (:class:`NoiseGrid`) whose probabilities the
            population refits; a learned lapse is the population's (see
            :mod:`~palm_middleware.preferences.population`), starting at 0.1.
        half_life, n_particles: see :class:`PreferenceModel`.
        population: the running population aggregates new users' priors come from; None: every
            user starts from the policy default.
        refresh_every: population changes between refits of the population prior.
    """

    def __init__(
        self,
        *,
        beta: float | Literal["learn"] = "learn",
        lapse: float | Literal["learn"] = "learn",
        half_life: float | None = None,
        n_particles: int = 1024,
        population: Population | None = None,
        refresh_every: int = 25,
    ) -> None:
        self.beta = beta
        self.lapse = lapse
        self.half_life = half_life
        self.n_particles = n_particles
        learn_lapse = lapse == "learn"
        lapse0 = 0.1 if learn_lapse else _number("lapse", lapse)
        self.noise = (
            NoiseGrid.centred(lapses=(lapse0,))
            if beta == "learn"
            else NoiseGrid.fixed(_number("beta", beta), lapse0)
        )
        self.lapses: tuple[float, ...] | None = DEFAULT_LAPSES if learn_lapse else None
        self.population = population
        self.refresh_every = refresh_every
        self._priors: dict[tuple[str, int], PosteriorSummary] = {}
        self._pop: dict[str, tuple[int, PopulationPrior]] = {}

    def population_prior(self, policy: BoundsPolicy) -> PopulationPrior:
        """Where a new user starts: the population's fit, refreshed every ``refresh_every``
        population changes, or the policy default (and the noise grid) without a population."""
        alpha0 = np.maximum(policy.default.values * float(policy.prior_strength), 1e-2)
        pop = self.population
        if pop is None or len(pop) == 0:
            return PopulationPrior(alpha=alpha0, noise=self.noise, n_users=0)
        cached = self._pop.get(policy.version)
        if cached is None or pop.revision - cached[0] >= self.refresh_every:
            cached = (pop.revision, pop.prior(alpha0, self.noise, self.lapses))
            self._pop[policy.version] = cached
        return cached[1]

    def model(self, policy: BoundsPolicy) -> PreferenceModel:
        """A fresh particle model under the current prior (fixed seed: rebuilds reproduce)."""
        prior = self.population_prior(policy)
        beta, lapse = prior.noise.mean()
        return PreferenceModel(
            prior_mean=prior.mean,
            prior_strength=prior.strength,
            beta=beta,
            lapse=lapse,
            noise=prior.noise,
            half_life=self.half_life,
            n_particles=self.n_particles,
            random_state=0,
        )

    def prior(self, policy: BoundsPolicy) -> PosteriorSummary:
        """The current prior, summarized exactly (cached per policy version and population fit)."""
        pop = self.population_prior(policy)
        key = (policy.version, -1 if pop.n_users == 0 else self._pop[policy.version][0])
        prior = self._priors.get(key)
        if prior is None:
            if len(self._priors) > 64:
                self._priors.clear()
            prior = prior_summary(pop.mean, pop.strength)
            self._priors[key] = prior
        return prior

    def observe(self, key: str, state: Mapping[str, Any]) -> None:
        """Count the user's stored aggregates in the population (never an opted-out user)."""
        if self.population is None:
            return
        agg = state.get("population")
        if state.get("opted_out") or agg is None:
            self.population.remove(key)
            return
        lapse = agg.get("lapse")
        self.population.observe(
            key,
            np.asarray(agg["mean_log"]),
            np.asarray(agg["noise"]),
            None if lapse is None else np.asarray(lapse),
        )

    def forget(self, key: str) -> None:
        """Drop the user from the population (opt-out, reset, erasure)."""
        if self.population is not None:
            self.population.remove(key)

    def summary(
        self, record: ProfileRecord | None, now: float, policy: BoundsPolicy
    ) -> tuple[PosteriorSummary, bool]:
        """The summary served at ``now`` (faded since the last event) and the opt-out flag."""
        prior = self.prior(policy)
        if record is None:
            return prior, False
        opted_out = bool(record.state.get("opted_out", False))
        post = record.state.get("posterior")
        if post is None:
            return prior, opted_out
        summary = PosteriorSummary.from_dict(post)
        g = forgetting(now - float(record.state.get("evidence_ts", now)), self.half_life)
        if g < 1.0:
            summary = faded(summary, g, prior)
        return summary, opted_out

    def posterior(
        self, state: Mapping[str, Any], now: float, policy: BoundsPolicy
    ) -> PreferenceModel:
        """The particle posterior over the user's grouped evidence, faded to ``now``."""
        return self._fit(self._groups(state, now), now, policy)

    def rebuild(
        self,
        profile: ProfileRecord | None,
        events: list[EventRecord],
        *,
        now: float,
        policy: BoundsPolicy,
        limit: float | None = None,
        fold: bool = False,
    ) -> dict[str, Any]:
        """New profile state: the stored evidence plus the event just appended (``events[-1]``).

        Identical observations multiply into one likelihood term whose exponent is their faded
        count, so replaying the state costs the same after ten events or ten thousand, and the
        posterior is exactly the one over the whole history.

        ``limit`` (the policy's ``max_step``): if the event would move the posterior mean
        further than this (L1), its strength is tempered by bisection until the move fits; the
        tempered strength is what enters the evidence. ``fold`` (privacy ``weights_only``): the
        event row is deleted after this update, so retries are recognized by a hashed event id.
        """
        state = dict(profile.state) if profile is not None else {}
        event = events[-1]
        if event.kind in ("opt_out", "opt_in"):
            state["opted_out"] = event.kind == "opt_out"
            return state
        if fold:
            digest = event_digest(event.event_id)
            if digest in state.get("folded", []):
                return state  # a retried delivery of an event already folded in
            folded = [*state.get("folded", []), digest]
            state["folded"] = list(dict.fromkeys(folded))[-MAX_FOLDED_IDS:]
        groups = self._groups(state, now)
        new = [Observation.from_dict(d) for d in event.payload.get("obs", [])]
        model = self._fit(self._added(groups, new, 1.0, now), now, policy)
        if limit is not None:
            model, new = self._temper(groups, new, model, profile, now, policy, limit)
        groups = self._added(groups, new, 1.0, now)
        kept = sorted(groups.values(), key=lambda g: -g[1])[:MAX_EVIDENCE_GROUPS]
        state["evidence"] = [_with_strength(o, s, now).to_dict() for o, s in kept if s >= 1e-6]
        state["evidence_ts"] = now
        state["n_events"] = int(state.get("n_events", 0)) + 1
        summary = model.summary()
        state["posterior"] = dataclasses.replace(summary, n_events=state["n_events"]).to_dict()
        # What the population fit may read of this user: two small aggregates, no events.
        state["population"] = {
            "mean_log": [round(float(x), 6) for x in model.mean_log_weights()],
            "noise": [round(float(x), 6) for x in model.noise_posterior()],
        }
        if self.lapses is not None and self.population is not None:
            ev = model.lapse_evidence(self.lapses)
            state["population"]["lapse"] = [round(float(x), 6) for x in ev]
        return state

    def _temper(
        self,
        groups: _Groups,
        new: list[Observation],
        model: PreferenceModel,
        profile: ProfileRecord | None,
        now: float,
        policy: BoundsPolicy,
        limit: float,
    ) -> tuple[PreferenceModel, list[Observation]]:
        """The model and the event's observations, tempered so the mean moves at most ``limit``."""
        # The move is measured from where the faded evidence stands now, without this event:
        # forgetting is not the event's doing.
        best = self._fit(groups, now, policy)
        # Bound the move from the exact posterior and from the weights being served (the
        # faded summary served between events): neither may jump by more than limit. If those
        # two already differ by more (long idle), the event is held back entirely:
        # conservative, and the next event starts from the refit.
        bases = [best.predict()]
        if profile is not None:
            bases.append(self.summary(profile, now, policy)[0].mean)

        def moved(m: PreferenceModel) -> float:
            return max(float(np.abs(m.predict() - b).sum()) for b in bases)

        if moved(model) <= limit:
            return model, new
        lo, hi = 0.0, 1.0  # bisection on the event's strength factor
        for _ in range(12):
            mid = (lo + hi) / 2
            cand = self._fit(self._added(groups, new, mid, now), now, policy)
            if moved(cand) <= limit:
                lo, best = mid, cand
            else:
                hi = mid
        return best, [dataclasses.replace(o, strength=o.strength * lo) for o in new]

    def _groups(self, state: Mapping[str, Any], now: float) -> _Groups:
        """The stored evidence groups, faded from the last event to ``now``."""
        g = forgetting(now - float(state.get("evidence_ts", now)), self.half_life)
        out: _Groups = {}
        for d in state.get("evidence", []):
            o = Observation.from_dict(d)
            out[_group_key(o)] = (o, o.strength * g)
        return out

    def _added(
        self,
        groups: Mapping[tuple[Any, ...], tuple[Observation, float]],
        new: Sequence[Observation],
        factor: float,
        now: float,
    ) -> _Groups:
        """A copy of ``groups`` with ``new`` added at ``factor`` times their strength."""
        out = dict(groups)
        for o in new:
            key = _group_key(o)
            have = out.get(key)
            add = factor * o.strength * forgetting(now - o.ts, self.half_life)
            out[key] = (o, add + (have[1] if have is not None else 0.0))
        return out

    def _fit(
        self,
        groups: Mapping[tuple[Any, ...], tuple[Observation, float]],
        now: float,
        policy: BoundsPolicy,
    ) -> PreferenceModel:
        obs = [_with_strength(o, s, now) for o, s in groups.values() if s > 0]
        return self.model(policy).fit(obs, now=now)


def _number(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidParameterError(f"{name} must be a number or 'learn'; got {v!r}")
    return float(v)


def _group_key(o: Observation) -> tuple[Any, ...]:
    mask = None if o.mask is None else tuple(int(x) for x in o.mask)
    return (o.kind, tuple(round(float(x), 6) for x in o.vector), o.y, o.scale, mask, o.precision)


def _with_strength(o: Observation, strength: float, ts: float) -> Observation:
    return dataclasses.replace(o, strength=strength, ts=ts)


def prior_summary(mean: FloatArray, strength: float, level: float = 0.9) -> PosteriorSummary:
    """The Dirichlet(strength · mean) prior, summarized exactly (Beta marginals)."""
    from scipy.stats import beta

    a = np.maximum(mean * strength, 1e-2)
    total = float(a.sum())
    tail = (1 - level) / 2
    return PosteriorSummary(
        mean=a / total,
        lower=np.asarray(beta.ppf(tail, a, total - a), dtype=np.float64),
        upper=np.asarray(beta.ppf(1 - tail, a, total - a), dtype=np.float64),
        concentration=total,
        evidence=0.0,
        n_events=0,
        level=level,
    )


def faded(summary: PosteriorSummary, g: float, prior: PosteriorSummary) -> PosteriorSummary:
    """``summary`` after its evidence has faded by the factor ``g`` since it was computed.

    Conjugate-style approximation between feedback events (each event rebuilds the exact
    posterior): with prior strength s and evidence E, the data pulled the mean from the prior
    with weight E / (s + E); fading leaves g·E.
    """
    s, e = prior.concentration, summary.evidence
    if e <= 0:
        return summary
    keep = (g * e / (s + g * e)) / (e / (s + e))
    widen = float(np.sqrt((s + e) / (s + g * e)))
    mean = prior.mean + keep * (summary.mean - prior.mean)
    half_lo = (summary.mean - summary.lower) * widen
    half_hi = (summary.upper - summary.mean) * widen
    return PosteriorSummary(
        mean=mean / mean.sum(),
        lower=np.clip(mean - half_lo, 0.0, 1.0),
        upper=np.clip(mean + half_hi, 0.0, 1.0),
        concentration=summary.concentration * (s + g * e) / (s + e),
        evidence=g * e,
        n_events=summary.n_events,
        level=summary.level,
    )
