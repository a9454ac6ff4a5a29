"""End-to-end offline build: grid universe, (lazy search), set-cover pruning, exact certificate.

The cover is computed on a finite universe (the grid plus a dense sample); the exact LP
certificate (:mod:`.certify`) then checks the whole simplex. Where it finds a weight vector the
portfolio does not serve within (eps, delta), that vector joins the universe and the cover is
solved again (a cutting-plane loop), so the stored certificate holds for every w, not only for
the sampled ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ..._rng import RandomState, check_random_state
from ...exceptions import InvalidParameterError
from ...portfolio.manifest import Certificate, Member, Portfolio, Provenance
from ...traits import TraitSpace
from ...types import FloatArray
from .certify import GapCertificate, certified_eps, certify_gaps
from .grid import grid, grid_size
from .oracle import Candidate, Oracle
from .pruning import budgeted_cover, coverage_matrix, set_cover
from .search import LazySearchResult, lazy_search
from .simplex import simplex_sample

__all__ = ["BuildResult", "build_portfolio", "build_with_oracle"]

IntArray = npt.NDArray[np.int64]

#: Above this many grid points the universe falls back to a dense sample (the LP loop keeps
#: the certificate exact either way).
MAX_GRID_POINTS = 100_000


@dataclass(frozen=True)
class BuildResult:
    """Outcome of a build.

    Attributes:
        portfolio: The pruned portfolio with its certificate.
        selected: Indices of the members in the candidate list.
        gaps: Exact additive and multiplicative gaps against the candidates.
        certified_eps: Exact smallest eps that holds with the build's delta over the simplex.
        universe_size: Points in the final cover universe (grid + sample + cuts).
        n_rounds: Cover/certify rounds of the cutting-plane loop.
        search: The lazy search, when the build called an oracle.
    """

    portfolio: Portfolio
    selected: IntArray
    gaps: GapCertificate
    certified_eps: float
    universe_size: int
    n_rounds: int
    search: LazySearchResult | None = None


def _universe(
    d: int, eps: float, delta: float, tau: float | None, n_sample: int, rng: np.random.Generator
) -> FloatArray:
    parts = [simplex_sample(d, n_sample, rng)]
    # eps = 0 or delta = 0 would need infinitely many levels: the sample and cuts suffice then.
    if eps > 0 and delta > 0 and grid_size(d, eps, delta, tau) <= MAX_GRID_POINTS:
        parts.insert(0, grid(d, eps, delta, tau))
    return np.concatenate(parts, axis=0)


def build_portfolio(
    space: TraitSpace | Sequence[str],
    candidates: Sequence[Candidate],
    eps: float,
    delta: float,
    *,
    method: Literal["greedy", "exact"] = "greedy",
    max_size: int | None = None,
    tau: float | None = None,
    n_sample: int = 2000,
    noise_z: float = 0.0,
    reference: str | None = None,
    max_rounds: int = 30,
    time_limit: float | None = 20.0,
    random_state: RandomState = 0,
    name: str | None = None,
) -> BuildResult:
    """Prune a pool of measured candidates to a small certified portfolio.

    Args:
        space: Trait names (reward coordinates).
        candidates: The pool; OPT(w) is the best pool value at w.
        eps: Target multiplicative slack of the cover.
        delta: Additive slack (also sets the grid universe).
        method: Set cover by ``"greedy"`` or ``"exact"`` ILP.
        max_size: Budget; when the cover needs more members, the smallest eps reachable with
            ``max_size`` members (at fixed delta) is used instead.
        tau: Grid parameter (see :func:`~.grid.default_tau`).
        n_sample: Size of the dense sample added to the universe.
        noise_z: Confidence width in standard errors for the noise-aware cover (0: off).
        reference: Text stored as the certificate's reference set.
        max_rounds: Limit of the cutting-plane loop.
        time_limit: Seconds per set-cover ILP (``method="exact"``); a stop before optimality
            warns and keeps the best cover found.
        random_state: Seed or Generator for the dense sample.
        name: Portfolio name.

    Returns:
        The portfolio, with a certificate whose ``eps`` is exact for ``delta`` over the simplex.
    """
    sp = space if isinstance(space, TraitSpace) else TraitSpace(space)
    if not candidates:
        raise InvalidParameterError("the candidate pool is empty; pass at least one candidate")
    if max_size is not None and max_size < 1:
        raise InvalidParameterError(f"max_size must be >= 1; got {max_size}")
    if not (0 <= eps < 1 and delta >= 0):
        raise InvalidParameterError(
            f"need 0 <= eps < 1 and delta >= 0; got eps={eps}, delta={delta}"
        )
    cands = list(candidates)
    rewards = np.vstack([c.reward for c in cands])
    if rewards.shape[1] != sp.dim:
        raise InvalidParameterError(
            f"candidates have {rewards.shape[1]} rewards; the trait space has {sp.dim}"
        )
    stderr = np.vstack([np.zeros(sp.dim) if c.stderr is None else c.stderr for c in cands])
    rng = check_random_state(random_state)
    universe = _universe(sp.dim, eps, delta, tau, n_sample, rng)
    priority = universe.mean(axis=0) @ rewards.T  # tie-break: higher mean value
    target = eps
    rounds = 0
    while True:
        rounds += 1
        cover = coverage_matrix(universe, rewards, eps, delta, stderr=stderr, z=noise_z)
        sel = set_cover(cover, method, priority=priority, time_limit=time_limit)
        target = eps
        if max_size is not None and len(sel) > max_size:
            budget = budgeted_cover(
                universe,
                rewards,
                max_size,
                delta=delta,
                method=method,
                time_limit=time_limit,
            )
            sel, target = budget.indices, max(eps, budget.gap)
        sel = np.sort(sel)
        cert = certified_eps(rewards[sel], rewards, delta, collect_above=target + 1e-9)
        if cert.value <= target + 1e-9 or rounds >= max_rounds:
            break
        assert cert.violators is not None
        universe = np.concatenate([universe, cert.violators], axis=0)
    gaps = certify_gaps(rewards[sel], rewards)
    how = f"{method} set cover" + (f", budget {max_size}" if max_size is not None else "")
    if noise_z:
        how += f", noise-aware z={noise_z:g}"
    certificate = Certificate(
        eps=_round_up(max(0.0, cert.value)),
        delta=float(delta),
        method=how + "; exact LP certificate over the simplex",
        multiplicative_gap=_round_up(gaps.multiplicative_gap),
        additive_gap=_round_up(gaps.additive_gap),
        pool_size=len(cands),
        reference=reference or f"best of the {len(cands)} candidates",
    )
    members = tuple(_member(cands[i], sp) for i in sel)
    port = Portfolio(space=sp, members=members, certificate=certificate, name=name)
    return BuildResult(
        portfolio=port,
        selected=sel.astype(np.int64),
        gaps=gaps,
        certified_eps=cert.value,
        universe_size=len(universe),
        n_rounds=rounds,
    )


def build_with_oracle(
    space: TraitSpace | Sequence[str],
    oracle: Oracle,
    eps: float,
    delta: float,
    *,
    tau: float | None = None,
    rmax: Literal["candidates", "trivial"] | npt.ArrayLike = "candidates",
    prune_eps: float | None = None,
    prune_delta: float | None = None,
    progress: bool = False,
    **kwargs: object,
) -> BuildResult:
    """Lazy search over GRID(d, eps, delta) with ``oracle``, then prune the candidates found.

    Args:
        space: Trait names.
        oracle: ``w -> Candidate``.
        eps: Grid and lazy-search multiplicative slack.
        delta: Grid and lazy-search additive slack.
        tau: Grid parameter.
        rmax: Upper-bound mode of the lazy search.
        prune_eps: Cover slack eps' (default ``eps``).
        prune_delta: Cover slack delta' (default ``delta``).
        progress: Show a progress bar during the search.
        **kwargs: Passed on to :func:`build_portfolio`.

    Returns:
        The build, with ``search`` set; gaps are relative to the candidates the search found.
    """
    sp = space if isinstance(space, TraitSpace) else TraitSpace(space)
    points = grid(sp.dim, eps, delta, tau)
    found = lazy_search(points, oracle, eps, delta, rmax=rmax, progress=progress)
    res = build_portfolio(
        sp,
        found.candidates,
        eps if prune_eps is None else prune_eps,
        delta if prune_delta is None else prune_delta,
        tau=tau,
        **kwargs,  # type: ignore[arg-type]
    )
    return BuildResult(
        portfolio=res.portfolio,
        selected=res.selected,
        gaps=res.gaps,
        certified_eps=res.certified_eps,
        universe_size=res.universe_size,
        n_rounds=res.n_rounds,
        search=found,
    )


def _member(c: Candidate, space: TraitSpace) -> Member:
    prov = None
    if c.stderr is not None and np.any(c.stderr > 0):
        prov = Provenance(stderr={n: float(v) for n, v in zip(space.names, c.stderr, strict=True)})
    stderr = np.zeros(space.dim) if c.stderr is None else c.stderr
    return Member(id=c.id, reward=c.reward, stderr=stderr, provenance=prov)


def _round_up(x: float) -> float:
    # Stored with 6 decimals; rounding up keeps a stored gap a valid bound.
    return float(np.ceil(x * 1e6 - 1e-6) / 1e6)
