"""Portfolios: manifests, and offline building (grid, lazy search, pruning, certificate)."""

from __future__ import annotations

from .baselines import evaluate_weights, gpi_greedy, random_weights, uniform_weights
from .builder import BuildResult, build_portfolio, build_with_oracle
from .candidates import CandidateSet, align_pool, load_candidates
from .certify import GapCertificate, WorstCase, certified_delta, certified_eps, certify_gaps
from .grid import default_tau, grid, grid_levels, grid_size, round_to_grid
from .manifest import (
    AdapterBackend,
    Certificate,
    LiteLLMBackend,
    Member,
    OnnxBackend,
    Portfolio,
    PromptedBackend,
    Provenance,
    load_portfolio,
    parse_portfolio,
)
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
    "AdapterBackend",
    "BudgetedCover",
    "BuildResult",
    "CallableOracle",
    "Candidate",
    "CandidateSet",
    "Certificate",
    "GapCertificate",
    "LazySearchResult",
    "LiteLLMBackend",
    "Member",
    "NearestWeightOracle",
    "OnnxBackend",
    "Oracle",
    "PoolOracle",
    "Portfolio",
    "PromptedBackend",
    "Provenance",
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
    "load_portfolio",
    "lp_front_optimum",
    "lp_front_oracle",
    "lp_front_pool",
    "max_coverage",
    "parse_portfolio",
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
