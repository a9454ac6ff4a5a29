"""Building a portfolio offline: grid, lazy search, pruning, certificate, report.

The served result is a manifest (:mod:`palm_middleware.portfolio.manifest`); nothing here runs
at inference.
"""

from __future__ import annotations

from .baselines import evaluate_weights, gpi_greedy, random_weights, uniform_weights
from .builder import BuildResult, build_portfolio, build_with_oracle
from .candidates import CandidateSet, align_pool, load_candidates
from .certify import GapCertificate, WorstCase, certified_delta, certified_eps, certify_gaps
from .grid import default_tau, grid, grid_levels, grid_size, round_to_grid
from .metrics import SampledGaps, route, sampled_gaps, usage_perplexity, usage_shares
from .oracle import (
    CallableOracle,
    Candidate,
    NearestWeightOracle,
    Oracle,
    PoolOracle,
    stack_rewards,
    stack_stderrs,
)
from .pruning import (
    BudgetedCover,
    budgeted_cover,
    coverage_matrix,
    exact_set_cover,
    greedy_set_cover,
    max_coverage,
    required_slack,
    set_cover,
)
from .search import LazySearchResult, lazy_search, search_order
from .simplex import lattice_size, simplex_lattice, simplex_sample
from .synthetic import lp_front_optimum, lp_front_oracle, lp_front_pool

__all__ = [
    "BudgetedCover",
    "BuildResult",
    "CallableOracle",
    "Candidate",
    "CandidateSet",
    "GapCertificate",
    "LazySearchResult",
    "NearestWeightOracle",
    "Oracle",
    "PoolOracle",
    "SampledGaps",
    "WorstCase",
    "align_pool",
    "budgeted_cover",
    "build_portfolio",
    "build_with_oracle",
    "certified_delta",
    "certified_eps",
    "certify_gaps",
    "coverage_matrix",
    "default_tau",
    "evaluate_weights",
    "exact_set_cover",
    "gpi_greedy",
    "greedy_set_cover",
    "grid",
    "grid_levels",
    "grid_size",
    "lattice_size",
    "lazy_search",
    "load_candidates",
    "lp_front_optimum",
    "lp_front_oracle",
    "lp_front_pool",
    "max_coverage",
    "random_weights",
    "required_slack",
    "round_to_grid",
    "route",
    "sampled_gaps",
    "search_order",
    "set_cover",
    "simplex_lattice",
    "simplex_sample",
    "stack_rewards",
    "stack_stderrs",
    "uniform_weights",
    "usage_perplexity",
    "usage_shares",
]
