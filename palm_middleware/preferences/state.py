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
from typing import TYPE_CHECKING, Any

import numpy as np

from ..types import FloatArray
from .events import Observation
from .model import PosteriorSummary, PreferenceModel, forgetting

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
        beta, lapse, half_life, n_particles: see :class:`PreferenceModel`.
    """

    def __init__(
        self,
        *,
        beta: float = 10.0,
        lapse: float = 0.05,
        half_life: float | None = None,
        n_particles: int = 1024,
    ) -> None:
        self.beta = beta
        self.lapse = lapse
        self.half_life = half_life
        self.n_particles = n_particles
        self._priors: dict[str, PosteriorSummary] = {}

    def model(self, policy: BoundsPolicy) -> PreferenceModel:
        """A fresh particle model under the policy's prior (fixed seed: rebuilds reproduce)."""
        return PreferenceModel(
            prior_mean=policy.default.values,
            prior_strength=policy.prior_strength,
            beta=self.beta,
            lapse=self.lapse,
            half_life=self.half_life,
            n_particles=self.n_particles,
            random_state=0,
        )

    def prior(self, policy: BoundsPolicy) -> PosteriorSummary:
        """The policy's prior, summarized exactly (cached per policy version)."""
        prior = self._priors.get(policy.version)
        if prior is None:
            prior = prior_summary(policy.default.values, float(policy.prior_strength))
            self._priors[policy.version] = prior
        return prior

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
