"""Portfolios: manifests, and offline building (grid, search, pruning, certificate)."""

from __future__ import annotations

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

__all__ = [
    "AdapterBackend",
    "Certificate",
    "LiteLLMBackend",
    "Member",
    "OnnxBackend",
    "Portfolio",
    "PromptedBackend",
    "Provenance",
    "load_portfolio",
    "parse_portfolio",
]
