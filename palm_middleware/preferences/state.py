"""One user's learning state: grouped evidence, forgetting, tempering and the ``max_step`` bound.

A stored profile holds the user's evidence as groups of identical observations (same pair and
outcome, same member rated the same way, same cue), each with its faded strength, plus the
posterior summary computed at the last event. :class:`LearningState` turns a stored profile
plus one new event into the next profile (:meth:`LearningState.rebuild`) and a stored profile
into the summary served between events (:meth:`LearningState.summary`). Forgetting is
:func:`~palm_middleware.preferences.model.forgetting` everywhere.

The store is the source of truth; values in, values out (the caller passes ``now`` and the
policy). To make an event cost microseconds rather than a refit, the particle posterior of each
recent user is cached in process, keyed by the profile's ``rev`` (a hash chain of the event ids
folded in) and the policy version: an event updates the cached posterior in place
(:meth:`PreferenceModel.partial_fit`). When the entry is missing or stale (another replica
wrote, the user was reset, the policy changed) the posterior is refit from the stored evidence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._daemon import reset_in_forked_child
from ..exceptions import InvalidParameterError
from ..types import FloatArray
from .events import Observation
from .model import PosteriorSummary, PreferenceModel, forgetting
from .noise import DEFAULT_LAPSES, NoiseGrid
from .population import Population, PopulationPrior, strength_candidates

if TYPE_CHECKING:
    from ..policy import BoundsPolicy
    from ..stores.base import EventRecord, ProfileRecord

__all__ = ["MAX_EVIDENCE_GROUPS", "LearningState", "event_digest", "prior_summary"]

#: Distinct observations kept per user (the weakest, i.e. oldest, go first beyond this).
MAX_EVIDENCE_GROUPS = 128
#: New concentration-evidence draws per feedback event (of 1024; see
#: ``PreferenceModel.strength_evidence``): a new user's first four events draw a quarter each
#: instead of the first drawing all (that draw set the feedback p99); renewals draw all.
EVIDENCE_BATCH = 256
#: Digests of folded event ids kept per user (privacy ``weights_only`` retry detection).
MAX_FOLDED_IDS = 512
#: How far the population prior must have moved (relative α, absolute grid probability) for a
#: known user's cached posterior to be put under it (a follow-up off the feedback path: a
#: reweighting, and the evidence draws re-targeted, or drawn anew after a large move).
REPRIOR_TOLERANCE = 0.05

#: New users' models prepared ahead, per prior: their concentration-evidence draws made between
#: events by a background thread (:meth:`LearningState.prepare_ahead`), so that a new user's
#: first event only extends them (~0.15 ms) instead of drawing a first batch (~0.5 ms; the
#: first events had set the pairwise feedback p99).
AHEAD = 16

#: What a learning state computes once per policy: the default prior, the lapse rates and the
#: prior concentrations of a population row.
_PerPolicy = tuple[PopulationPrior, tuple[float, ...] | None, tuple[float, ...] | None]

#: Evidence groups: key -> (the stored form without strength and time, faded strength). Kept as
#: JSON dicts, so an event costs no parsing of the evidence already held.
_Groups = dict[tuple[Any, ...], tuple[dict[str, Any], float]]


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
        population: the population aggregates new users' priors come from (this process's
            mirror of the store's population rows); None: every user starts from the policy
            default.
        refresh_every: population changes between synchronous refits of the population prior
            (:class:`~palm_middleware.population_feed.PopulationFeed`).
        cache_size: users whose particle posterior is kept in memory (least recently used go
            first; about 50-130 kB each at 1024 particles). 0 refits on every event.
        ess_threshold, move_steps: of the cached posterior's in-place updates (see
            :class:`PreferenceModel`): particles move only when the effective sample size
            collapses below this fraction (0.05: about 0.5-1% of events, each moved by one
            Metropolis-Hastings step; regret and interval coverage as with the earlier 0.1 and
            two steps, see BENCHMARKS.md). A refit uses the model's defaults (0.5, 4).
        move_ahead: an effective-sample-size fraction (above ``ess_threshold``): after an event
            leaves a cached posterior below it, :attr:`on_followup` is told, so that a
            background thread can move the particles before the next event collapses them on
            the feedback path (:class:`~palm_middleware.background_upkeep.BackgroundUpkeep`).
            None: particles move only on the feedback path.

    The policy's ``learning:`` section overrides ``beta``, ``lapse`` and ``half_life``.
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
        cache_size: int = 1024,
        ess_threshold: float = 0.05,
        move_steps: int = 1,
        move_ahead: float | None = None,
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
        self._fresh: dict[tuple[Any, ...], PreferenceModel] = {}  # fitted to no data, by prior
        self._pop: dict[str, tuple[int, PopulationPrior]] = {}
        self._policy_cache: dict[str, tuple[BoundsPolicy, Population | None, _PerPolicy]] = {}
        self.cache_size = cache_size
        self.ess_threshold = ess_threshold
        self.move_steps = move_steps
        self.move_ahead = move_ahead
        self.on_followup: Callable[[str], None] | None = None
        """Called with a user's key after an event left work for later on their cached
        posterior (particles thinner than ``move_ahead``, evidence draws pending); set by a
        background thread that then calls :meth:`follow_up`."""
        self.followed_up = 0
        """Cached posteriors replaced by :meth:`follow_up`."""
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._busy, self._last_busy = 0, 0.0
        self._busy_lock = threading.Lock()
        self._quiet = threading.Condition(self._busy_lock)  # notified as each update ends
        self._ahead: tuple[tuple[Any, ...], list[PreferenceModel]] | None = None
        self._ahead_policy: BoundsPolicy | None = None
        self._ahead_lock = threading.Lock()
        reset_in_forked_child(self)
        self.prepared = 0
        """New users whose first event found their model prepared ahead."""
        self.hits = 0
        """Updates and reads served by the cache (the rest refit from the stored evidence)."""
        self.misses = 0

    def population_prior(self, policy: BoundsPolicy) -> PopulationPrior:
        """Where a new user starts: the last population fit (see :meth:`refresh_population`),
        or the policy default (and the noise grid) without a population.

        Never refits on a request, except the first fit under a policy version, made wherever
        it is first needed. Refits run off the request path
        (:class:`~palm_middleware.population_feed.PopulationFeed`).
        """
        return self._served(policy)[1]

    def _served(self, policy: BoundsPolicy) -> tuple[int, PopulationPrior]:
        """(the population revision it was fitted from, -1 for the default; the prior), read
        together (a background refit swaps them as one)."""
        pop = self.population
        if pop is None or len(pop) == 0:  # nobody contributes (any more): the default at once
            return -1, self._default_prior(policy)
        cached = self._pop.get(policy.version)
        if cached is None:
            self.refresh_population(policy)
            cached = self._pop[policy.version]
        return cached if cached[1].n_users else (-1, cached[1])

    def _default_prior(self, policy: BoundsPolicy) -> PopulationPrior:
        return self._per_policy(policy)[0]

    def _per_policy(self, policy: BoundsPolicy) -> _PerPolicy:
        """What depends on the policy alone, computed once per policy object: the default
        prior, and the lapse rates and prior concentrations a population row is computed at
        (None without a population)."""
        hit = self._policy_cache.get(policy.version)
        if hit is not None and hit[0] is policy and hit[1] is self.population:
            return hit[2]
        alpha0 = np.maximum(policy.default.values * float(policy.prior_strength), 1e-2)
        noise, lapses = self.noise_of(policy)
        out: _PerPolicy = (
            PopulationPrior(alpha=alpha0, noise=noise, n_users=0),
            None if self.population is None else lapses,
            None if self.population is None else strength_candidates(float(alpha0.sum())),
        )
        if len(self._policy_cache) > 64:
            self._policy_cache.clear()
        self._policy_cache[policy.version] = (policy, self.population, out)
        return out

    def population_stale(self, policy: BoundsPolicy, min_changes: int) -> bool:
        """Whether the population changed by ``min_changes`` users since the last fit."""
        pop = self.population
        if pop is None:
            return False
        cached = self._pop.get(policy.version)
        return cached is None or pop.revision - cached[0] >= min_changes

    def fitted_revision(self, policy: BoundsPolicy) -> int | None:
        """The population revision the served fit was made from (None: none yet)."""
        cached = self._pop.get(policy.version)
        return None if cached is None else cached[0]

    def refresh_population(self, policy: BoundsPolicy, min_changes: int = 1) -> PopulationPrior:
        """Refit the population prior if it is ``min_changes`` changes old (0: always), and
        serve the new fit from now on (one assignment: readers see the old or the new one).

        A refit costs milliseconds: call it outside the store's transaction.
        """
        pop = self.population
        if pop is None:
            return self._default_prior(policy)
        if not self.population_stale(policy, min_changes):
            return self._pop[policy.version][1]
        revision = pop.revision
        if len(pop) == 0:
            fit = self._default_prior(policy)
        else:
            alpha0 = np.maximum(policy.default.values * float(policy.prior_strength), 1e-2)
            noise, lapses = self.noise_of(policy)
            fit = pop.prior(alpha0, noise, lapses)
        # Its exact summary too, before it is served: no request pays for either.
        self._prior_summary(policy.version, revision if fit.n_users else -1, fit)
        self._pop[policy.version] = (revision, fit)
        return fit

    def population_row(self, state: Mapping[str, Any]) -> dict[str, Any] | None:
        """What the store keeps of this user for the population fit: the aggregates in
        ``state`` (no events, no text), or None (no row) for an opted-out user."""
        agg = state.get("population")
        if state.get("opted_out") or not isinstance(agg, Mapping):
            return None
        return dict(agg)

    def settings(
        self, policy: BoundsPolicy
    ) -> tuple[float | Literal["learn"], float | Literal["learn"], float | None]:
        """``(beta, lapse, half_life)`` under ``policy``: what its ``learning:`` section states,
        else this state's (the ``Palm``'s) values; ``beta`` and ``lapse`` may be ``"learn"``."""
        spec = policy.spec.learning if policy.spec is not None else None
        if spec is None:
            return self.beta, self.lapse, self.half_life
        beta = spec.beta if spec.beta is not None else self.beta
        lapse = spec.lapse if spec.lapse is not None else self.lapse
        days = spec.half_life_days
        half_life = (
            self.half_life if days is None else None if days == "never" else float(days) * 86400.0
        )
        return beta, lapse, half_life

    def noise_of(self, policy: BoundsPolicy) -> tuple[NoiseGrid, tuple[float, ...] | None]:
        """The noise grid and the lapse rates a population fit weighs, under ``policy``."""
        beta, lapse, _ = self.settings(policy)
        if (beta, lapse) == (self.beta, self.lapse):
            return self.noise, self.lapses
        learn_lapse = lapse == "learn"
        lapse0 = 0.1 if learn_lapse else _number("lapse", lapse)
        grid = (
            NoiseGrid.centred(lapses=(lapse0,))
            if beta == "learn"
            else NoiseGrid.fixed(_number("beta", beta), lapse0)
        )
        return grid, (DEFAULT_LAPSES if learn_lapse else None)

    def model(self, policy: BoundsPolicy) -> PreferenceModel:
        """A fresh particle model under the current prior (fixed seed: rebuilds reproduce)."""
        return self._model_for(self.population_prior(policy), self.settings(policy)[2])

    def _model_for(self, prior: PopulationPrior, half_life: float | None) -> PreferenceModel:
        beta, lapse = prior.noise.mean()
        return PreferenceModel(
            prior_mean=prior.mean,
            prior_strength=prior.strength,
            beta=beta,
            lapse=lapse,
            noise=prior.noise,
            half_life=half_life,
            n_particles=self.n_particles,
            random_state=0,
        )

    def _prior_key(self, policy: BoundsPolicy, prior: PopulationPrior) -> tuple[Any, ...]:
        """What a new user's model under ``prior`` is built from (see :meth:`_model_for`).
        (Callers read the prior once: a refit on another thread may replace it meanwhile.)"""
        return (prior.alpha.tobytes(), prior.noise, self.settings(policy)[2], self.n_particles)

    def _prior_model(
        self, policy: BoundsPolicy, prior: PopulationPrior | None = None
    ) -> PreferenceModel:
        """``model(policy).fit([])``: a copy of the one drawn for the same prior (the draw is
        seeded, so the copy is the same model and costs a tenth of drawing it)."""
        prior = self.population_prior(policy) if prior is None else prior
        half_life = self.settings(policy)[2]
        key = self._prior_key(policy, prior)  # (no model is built on a hit)
        hit = self._fresh.get(key)
        if hit is None:
            if len(self._fresh) > 16:
                self._fresh.clear()
            # What every copy would compute at its first event, computed once and shared.
            lapses, strengths = self._aggregates(policy)
            model = self._model_for(prior, half_life).fit([])
            hit = self._fresh[key] = model._warm(lapses, strengths)
        return hit.copy()

    def _new_user_model(self, policy: BoundsPolicy) -> tuple[PreferenceModel, bool]:
        """A new user's model under the prior served now, and whether it was prepared ahead
        (:meth:`prepare_ahead`); else a copy of the prior draw, whose first event draws a
        first batch of the concentration evidence itself."""
        self._ahead_policy = policy
        prior = self.population_prior(policy)
        key = self._prior_key(policy, prior)
        with self._ahead_lock:
            ahead = self._ahead
            if ahead is not None and ahead[0] == key and ahead[1]:
                self.prepared += 1
                return ahead[1].pop(), True
        return self._prior_model(policy, prior), False

    def expect(self, policy: BoundsPolicy) -> None:
        """New users are expected under ``policy``: what :meth:`prepare_ahead` prepares for
        (else the policy of the latest new user)."""
        self._ahead_policy = policy

    def prepare_ahead(self, limit: int = AHEAD) -> bool:
        """Prepare one new user's model ahead, its concentration-evidence draws made (at the
        prior, each model from its own generator), for the policy of the latest new user, up
        to ``limit`` kept for the prior served now (those kept for an earlier prior are
        dropped). True if one was added (or the prior changed meanwhile): a background thread
        calls it again while True.

        Off the feedback path (:class:`~palm_middleware.background_upkeep.BackgroundUpkeep`,
        outside ``Palm``'s sync mode: the seeds here come from the OS, so same-seed runs would
        differ, and so do forked workers' draws)."""
        policy = self._ahead_policy
        if policy is None:
            return False
        strengths = self._aggregates(policy)[1]
        if strengths is None:
            return False  # no population fit: no concentration evidence to draw
        prior = self.population_prior(policy)
        key = self._prior_key(policy, prior)
        with self._ahead_lock:
            if self._ahead is None or self._ahead[0] != key:
                self._ahead = (key, [])
            if len(self._ahead[1]) >= limit:
                return False
        seed = secrets.randbits(128)  # (fresh OS entropy per model: no two alike, forks too)
        model = self._prior_model(policy, prior).prepare_evidence(strengths, seed=seed)
        with self._ahead_lock:
            if self._ahead is not None and self._ahead[0] == key:
                self._ahead[1].append(model)
        return True

    def _after_fork(self) -> None:
        """In a forked child: new locks (a parent thread may have held one at the fork), and
        the models prepared ahead dropped (the child would hand out the parent's draws)."""
        self._cache_lock = threading.Lock()
        self._busy_lock = threading.Lock()
        self._quiet = threading.Condition(self._busy_lock)
        self._busy = 0
        self._ahead_lock = threading.Lock()
        self._ahead = None

    def _aggregates(
        self, policy: BoundsPolicy
    ) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
        """The lapse rates and prior concentrations a user's population row is computed at
        (None: not computed, without a population)."""
        return self._per_policy(policy)[1:]

    def prior(self, policy: BoundsPolicy) -> PosteriorSummary:
        """The current prior, summarized exactly (cached per policy version and population fit)."""
        revision, pop = self._served(policy)
        return self._prior_summary(policy.version, revision, pop)

    def _prior_summary(self, version: str, revision: int, pop: PopulationPrior) -> PosteriorSummary:
        key = (version, revision)
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
        lapse, strength = agg.get("lapse"), agg.get("strength")
        self.population.observe(
            key,
            np.asarray(agg["mean_log"]),
            np.asarray(agg["noise"]),
            None if lapse is None else np.asarray(lapse),
            None if strength is None else np.asarray(strength),
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
        g = forgetting(now - float(record.state.get("evidence_ts", now)), self.settings(policy)[2])
        if g < 1.0:
            summary = faded(summary, g, prior)
        return summary, opted_out

    def posterior(
        self, state: Mapping[str, Any], now: float, policy: BoundsPolicy
    ) -> PreferenceModel:
        """The particle posterior over the user's grouped evidence, faded to ``now`` (a refit)."""
        return self._fit(self._groups(state, now, policy), now, policy)

    def current(
        self, key: str, record: ProfileRecord | None, now: float, policy: BoundsPolicy
    ) -> PreferenceModel:
        """The user's particle posterior faded to ``now``: a copy of the cached one when it is
        current for ``record``, else a refit from the stored evidence (which is then cached)."""
        state = record.state if record is not None else {}
        entry = self._take(key, state, policy, pop=False)
        if entry is not None:
            return entry.model.fade_to(now)
        ts = float(state.get("evidence_ts", now))
        groups = self._groups(state, ts, policy)
        model = self._fit(groups, ts, policy)
        if record is not None and "rev" in state:
            self._put(_Entry(key, str(state["rev"]), policy.version, model.copy(), groups), False)
        return model.fade_to(now)

    def forget_cache(self, key: str | None = None) -> None:
        """Drop the cached posterior of ``key`` (of everyone: None); the next event refits."""
        with self._cache_lock:
            if key is None:
                self._cache.clear()
            else:
                self._cache.pop(key, None)

    def _take(
        self, key: str, state: Mapping[str, Any], policy: BoundsPolicy, *, pop: bool
    ) -> _Entry | None:
        """The cache entry if it holds the posterior of ``state`` under ``policy``, else None.

        ``pop``: the caller updates the model in place, so the entry leaves the cache until put
        back (a retried or failed transaction then refits instead of applying an event twice).
        Otherwise the entry returned holds a copy of the model.
        """
        rev = state.get("rev")
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is None or rev is None or hit.rev != rev or hit.policy != policy.version:
                self.misses += 1
                return None
            self.hits += 1
            if pop:
                del self._cache[key]
                return hit
            self._cache.move_to_end(key)
            return dataclasses.replace(hit, model=hit.model.copy())

    def _put(self, entry: _Entry, replace: bool = True) -> None:
        if self.cache_size <= 0:
            return
        # From now on the model is updated in place: move particles only when ESS collapses.
        model = entry.model
        model.ess_threshold, model.move_steps = self.ess_threshold, self.move_steps
        key = entry.key
        with self._cache_lock:
            if not replace and key in self._cache:
                return
            self._cache[key] = entry
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

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
        The population prior is not refit in here (see :meth:`population_prior`).
        """
        with self.updating():
            return self._rebuild(profile, events, now=now, policy=policy, limit=limit, fold=fold)

    @contextlib.contextmanager
    def updating(self) -> Iterator[None]:
        """Marks a feedback update (what :meth:`wait_quiet` waits out)."""
        with self._busy_lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._busy_lock:
                self._busy -= 1
                self._last_busy = time.monotonic()
                if not self._busy:  # (a waiter only needs the end of the last one)
                    self._quiet.notify_all()

    def quiet_for(self) -> float:
        """Seconds since the last feedback update ended (0 while one runs)."""
        with self._busy_lock:
            return 0.0 if self._busy else time.monotonic() - self._last_busy

    def wait_quiet(self, quiet: float, timeout: float) -> bool:
        """Block until no feedback update has run for ``quiet`` seconds (True), or for at most
        ``timeout`` seconds (False). A background thread's follow-ups wait for such a moment
        rather than compete with feedback for the CPU and the GIL; woken as each update ends,
        so a quiet moment is seen when it comes (a polling loop missed most of them)."""
        deadline = time.monotonic() + timeout
        with self._quiet:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return False
                if self._busy:  # (woken as the last update ends)
                    self._quiet.wait(deadline - now)
                    continue
                left = quiet - (now - self._last_busy)
                if left <= 0:
                    return True
                self._quiet.wait(min(left, deadline - now))

    def _rebuild(
        self,
        profile: ProfileRecord | None,
        events: list[EventRecord],
        *,
        now: float,
        policy: BoundsPolicy,
        limit: float | None,
        fold: bool,
    ) -> dict[str, Any]:
        state = dict(profile.state) if profile is not None else {}
        event = events[-1]
        key = event.user_key
        prepared = False
        if profile is None:  # a new user starts from the prior
            fresh, prepared = self._new_user_model(policy)
            fresh.ess_threshold, fresh.move_steps = self.ess_threshold, self.move_steps
            cached: _Entry | None = _Entry(key, "", "", fresh, {})
        else:
            cached = self._take(key, state, policy, pop=True)
        # The revision names the history folded in: the cache is valid for this exact state.
        rev = hashlib.sha256(f"{state.get('rev', '')}\x00{event.event_id}".encode()).hexdigest()
        state["rev"] = rev[:24]
        if event.kind in ("opt_out", "opt_in"):
            state["opted_out"] = event.kind == "opt_out"
            if cached is not None:
                self._put(dataclasses.replace(cached, rev=state["rev"], policy=policy.version))
            return state
        if fold:
            digest = event_digest(event.event_id)
            if digest in state.get("folded", []):
                if cached is not None:
                    self._put(dataclasses.replace(cached, rev=state["rev"], policy=policy.version))
                return state  # a retried delivery of an event already folded in
            folded = [*state.get("folded", []), digest]
            state["folded"] = list(dict.fromkeys(folded))[-MAX_FOLDED_IDS:]
        if cached is not None and cached.groups is not None:
            # The stored evidence as parsed at the last event: fade it instead of parsing it.
            g = forgetting(now - float(state.get("evidence_ts", now)), self.settings(policy)[2])
            groups = {k: (d, s * g) for k, (d, s) in cached.groups.items()}
        else:
            groups = self._groups(state, now, policy)
        new = [Observation.from_dict(d) for d in event.payload.get("obs", [])]
        if cached is not None:
            model, new = self._step(cached.model, new, state, profile, now, policy, limit)
        else:
            model = self._fit(self._added(groups, new, 1.0, now, policy), now, policy)
            if limit is not None:
                model, new = self._temper(groups, new, model, profile, now, policy, limit)
        groups = self._added(groups, new, 1.0, now, policy)
        live = sorted((kv for kv in groups.items() if kv[1][1] >= 1e-6), key=lambda kv: -kv[1][1])
        kept_items = live[:MAX_EVIDENCE_GROUPS]
        kept = [g for _, g in kept_items]
        state["evidence"] = [_stored(d, s, now) for d, s in kept]
        state["evidence_ts"] = now
        state["n_events"] = int(state.get("n_events", 0)) + 1
        state["posterior"] = model.summary().to_dict()
        state["posterior"]["n_events"] = state["n_events"]
        # What the population fit may read of this user: two small aggregates, no events.
        state["population"] = {
            "mean_log": [round(float(x), 6) for x in model.mean_log_weights()],
            "noise": [round(float(x), 6) for x in model.noise_posterior()],
        }
        lapses, strengths = self._aggregates(policy)  # as the population fit's
        if lapses is not None:
            ev = model.lapse_evidence(lapses)
            state["population"]["lapse"] = [round(float(x), 6) for x in ev]
        if strengths is not None:
            # A batch of draws per event: a new user's first events share the drawing
            ev = model.strength_evidence(strengths, budget=EVIDENCE_BATCH)
            state["population"]["strength"] = [round(float(x), 6) for x in ev]
        if len(live) <= MAX_EVIDENCE_GROUPS:  # else the stored evidence lost terms: refit next
            self._put(_Entry(key, state["rev"], policy.version, model, dict(kept_items)))
            ahead, hook = self.move_ahead, self.on_followup
            if hook is not None and (
                prepared  # (the background then prepares another)
                or (ahead is not None and model.ess_fraction_ < ahead)
                or model.evidence_draws_pending_
                or model.evidence_draws_stale_
                or self._prior_differs(model, policy)
            ):
                hook(key)
        return state

    def _prior_differs(self, model: PreferenceModel, policy: BoundsPolicy) -> bool:
        """Whether ``model`` sits under a materially different prior than the one served now
        (a population refit since the user's posterior was built): some α off by more than
        :data:`REPRIOR_TOLERANCE` relatively, a grid probability by more than it absolutely, or
        another lapse rate. (A converging population's small refits move no one.)"""
        prior = self.population_prior(policy)
        alpha = np.maximum(prior.alpha, 1e-2)
        if float(np.max(np.abs(np.log(alpha / model._alpha)))) > REPRIOR_TOLERANCE:
            return True
        p = prior.noise.p
        if model._logpi.shape != p.shape:
            return True
        if float(np.max(np.abs(np.exp(model._logpi) - p))) > REPRIOR_TOLERANCE:
            return True
        lapses = model.noise_grid_.lapses
        return len(lapses) == 1 and abs(lapses[0] - prior.noise.lapses[0]) > 1e-3

    def _reprior(self, model: PreferenceModel, policy: BoundsPolicy) -> None:
        """Put a cached posterior under the prior served now, as a refit from the stored
        evidence would be: importance reweighting by the prior ratio, no replay."""
        prior = self.population_prior(policy)
        alpha = np.maximum(prior.alpha, 1e-2)
        logpi = np.log(np.maximum(prior.noise.p, 1e-300))
        same_alpha = np.array_equal(model._alpha, alpha)
        same_noise = model._logpi.shape == logpi.shape and np.array_equal(model._logpi, logpi)
        if not (same_alpha and same_noise):
            model.reprior(None if same_alpha else alpha, None if same_noise else prior.noise.p)
        lapse = prior.noise.lapses[0]
        if len(model.noise_grid_.lapses) == 1 and model.noise_grid_.lapses[0] != lapse:
            model.relapse(lapse)

    def follow_up(self, key: str) -> bool:
        """Finish what an event left for later on the cached posterior of ``key``: put it
        under the population prior served now if a refit changed it (as a refit from the
        stored evidence would be; before, a user already cached kept the prior of their first
        event), move its particles if their effective sample size is below ``move_ahead``,
        make its pending
        concentration-evidence draws (a new user's first events draw a batch each), or draw
        them anew once the user's observations doubled since they were placed (draws placed
        at an early posterior bias the row low). True if the result replaced the cached
        posterior.

        Called off the feedback path (a background thread): the work is done on a copy taken
        under the cache lock, and the copy replaces the entry only if no event (or refit) took
        or replaced it meanwhile; else the work is dropped. The posterior is the same (a move
        leaves it invariant; the draws are unbiased wherever they sit); the next events then
        reweight fresh particles and extend complete draws instead of doing either
        themselves.
        """
        ahead = self.move_ahead
        with self._cache_lock:
            entry = self._cache.get(key)
            if entry is None:
                return False
            known = self._policy_cache.get(entry.policy)
            policy = known[0] if known is not None else None
            reprior = policy is not None and self._prior_differs(entry.model, policy)
            thin = ahead is not None and entry.model.ess_fraction_ < ahead
            draws = entry.model.evidence_draws_pending_ > 0
            stale = entry.model.evidence_draws_stale_
            if not (reprior or thin or draws or stale):
                return False
            model = entry.model.copy()
        if reprior:
            assert policy is not None
            self._reprior(model, policy)  # (the evidence draws are then re-targeted below)
        if thin:
            model.rejuvenate()
        if draws:
            model.complete_evidence()
        elif stale:
            model.renew_evidence()
        elif reprior:
            model.retarget_evidence()  # (drawn anew if the prior moved far, or the lapse)
        with self._cache_lock:
            if self._cache.get(key) is not entry:
                return False
            self._cache[key] = dataclasses.replace(entry, model=model)
            self.followed_up += 1
        return True

    def _step(
        self,
        model: PreferenceModel,
        new: list[Observation],
        state: Mapping[str, Any],
        profile: ProfileRecord | None,
        now: float,
        policy: BoundsPolicy,
        limit: float | None,
    ) -> tuple[PreferenceModel, list[Observation]]:
        """The event added to the cached posterior in place (tempered to fit ``limit``)."""
        model.fade_to(now)
        if limit is None:
            return model.partial_fit(new, now=now), new
        # The move is measured as in _temper: from the faded posterior without this event, and
        # from the weights being served.
        bases = [model.predict()]
        if profile is not None:
            bases.append(self._served_mean(profile, now, policy))

        def moved(mean: FloatArray) -> float:
            return max(float(np.abs(mean - b).sum()) for b in bases)

        # The event goes in whole (almost always within the bound); if the mean moved too far,
        # part of it is taken back by reweighting: bisection on the share kept.
        model.partial_fit(new, now=now)
        if moved(model.predict()) <= limit:
            return model, new
        back = model.preview_mean(new)  # back(f - 1): the posterior with a share f of the event
        lo, hi = 0.0, 1.0
        if moved(back(-1.0)) <= limit:
            for _ in range(12):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if moved(back(mid - 1.0)) <= limit else (lo, mid)
        # lo = 0: held back entirely (the served weights are already limit away).
        moves = model.n_moves_
        model.temper(new, lo - 1.0)
        if model.n_moves_ == moves or moved(model.predict()) <= limit:
            return model, _scaled(new, lo)
        # Taking back collapsed the particles and their move shifted the mean past the bound
        # (rare): the exact refit path.
        groups = self._groups(state, now, policy)
        model = self._fit(self._added(groups, new, 1.0, now, policy), now, policy)
        return self._temper(groups, new, model, profile, now, policy, limit)

    def _served_mean(self, profile: ProfileRecord, now: float, policy: BoundsPolicy) -> FloatArray:
        """``self.summary(profile, now, policy)[0].mean``, without the rest of the summary."""
        post = profile.state.get("posterior")
        if post is None:
            return self.prior(policy).mean
        mean = np.asarray(post["mean"], dtype=np.float64)
        mean = mean / mean.sum()
        evidence = float(post["evidence"])
        ts = float(profile.state.get("evidence_ts", now))
        g = forgetting(now - ts, self.settings(policy)[2])
        if g < 1.0 and evidence > 0:
            mean = _faded_mean(mean, evidence, g, self.prior(policy))
            mean = mean / mean.sum()
        out: FloatArray = mean
        return out

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
            cand = self._fit(self._added(groups, new, mid, now, policy), now, policy)
            if moved(cand) <= limit:
                lo, best = mid, cand
            else:
                hi = mid
        return best, [dataclasses.replace(o, strength=o.strength * lo) for o in new]

    def _groups(self, state: Mapping[str, Any], now: float, policy: BoundsPolicy) -> _Groups:
        """The stored evidence groups, faded from the last event to ``now``."""
        g = forgetting(now - float(state.get("evidence_ts", now)), self.settings(policy)[2])
        out: _Groups = {}
        for d in state.get("evidence", []):
            base = {k: v for k, v in d.items() if k not in ("s", "t")}
            out[_dict_key(base)] = (base, float(d.get("s", 1.0)) * g)
        return out

    def _added(
        self,
        groups: _Groups,
        new: Sequence[Observation],
        factor: float,
        now: float,
        policy: BoundsPolicy,
    ) -> _Groups:
        """A copy of ``groups`` with ``new`` added at ``factor`` times their strength."""
        out = dict(groups)
        half_life = self.settings(policy)[2]
        for o in new:
            base = {k: v for k, v in o.to_dict().items() if k not in ("s", "t")}
            key = _dict_key(base)
            have = out.get(key)
            add = factor * o.strength * forgetting(now - o.ts, half_life)
            out[key] = (base, add + (have[1] if have is not None else 0.0))
        return out

    def _fit(self, groups: _Groups, now: float, policy: BoundsPolicy) -> PreferenceModel:
        obs = [Observation.from_dict(_stored(d, s, now)) for d, s in groups.values() if s > 0]
        return self.model(policy).fit(obs, now=now)


@dataclasses.dataclass(frozen=True)
class _Entry:
    """A cached posterior: valid for the profile whose ``rev`` and policy version it names."""

    key: str
    rev: str
    policy: str
    model: PreferenceModel
    groups: _Groups | None
    """The stored evidence as of the event that produced ``rev`` (strengths at that time)."""


def _number(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidParameterError(f"{name} must be a number or 'learn'; got {v!r}")
    return float(v)


def _dict_key(d: Mapping[str, Any]) -> tuple[Any, ...]:
    """The group of a stored observation (identical likelihood terms share one)."""
    m = d.get("m")
    return (
        d["k"],
        tuple(d["v"]),
        d.get("y"),
        d.get("sc"),
        None if m is None else tuple(m),
        d.get("p"),
    )


def _stored(base: Mapping[str, Any], strength: float, ts: float) -> dict[str, Any]:
    out = {**base, "t": ts}
    if strength != 1.0:
        out["s"] = strength
    return out


def _scaled(obs: list[Observation], factor: float) -> list[Observation]:
    if factor == 1.0:
        return obs
    return [dataclasses.replace(o, strength=o.strength * factor) for o in obs]


def prior_summary(mean: FloatArray, strength: float, level: float = 0.9) -> PosteriorSummary:
    """The Dirichlet(strength · mean) prior, summarized exactly (Beta marginals)."""
    # The Beta quantile as scipy.special's inverse incomplete beta (what scipy.stats.beta.ppf
    # computes): scipy.stats took ~1 s to import, on the first returning user's feedback.
    from scipy.special import betaincinv

    a = np.maximum(mean * strength, 1e-2)
    total = float(a.sum())
    tail = (1 - level) / 2
    return PosteriorSummary(
        mean=a / total,
        lower=np.asarray(betaincinv(a, total - a, tail), dtype=np.float64),
        upper=np.asarray(betaincinv(a, total - a, 1 - tail), dtype=np.float64),
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
    widen = float(np.sqrt((s + e) / (s + g * e)))
    mean = _faded_mean(summary.mean, e, g, prior)
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


def _faded_mean(mean: FloatArray, e: float, g: float, prior: PosteriorSummary) -> FloatArray:
    """The mean of :func:`faded` (before normalizing): evidence ``e > 0`` faded by ``g``."""
    s = prior.concentration
    keep = (g * e / (s + g * e)) / (e / (s + e))
    out: FloatArray = prior.mean + keep * (mean - prior.mean)
    return out
