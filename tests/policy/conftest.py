"""Shared fixtures for the policy tests."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

EXAMPLE = """\
version: 1
name: default
traits: [safety, helpfulness, humor, brevity]
defaults:
  weights: {safety: 0.3, helpfulness: 0.4, humor: 0.1, brevity: 0.2}
  prior_strength: 10
personalization: true
exploration: true
bounds:
  - id: safety-floor
    layer: law
    min: {safety: 0.2}
  - id: humor-cap
    max: {humor: 0.3}
  - id: max-drift
    max_l1_from_default: 0.8
  - id: min-evidence
    min_events: 3
  - id: no-personalization
    personalization: false
  - id: no-explore
    exploration: false
"""

HEADER = """\
version: 1
traits: [safety, helpfulness, humor, brevity]
defaults:
  weights: {safety: 0.3, helpfulness: 0.4, humor: 0.1, brevity: 0.2}
bounds:
"""


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write dedented YAML text to ``tmp_path / name`` and return the path."""

    def _write(text: str, name: str = "bad.yaml") -> Path:
        p = tmp_path / name
        p.write_text(textwrap.dedent(text), encoding="utf-8")
        return p

    return _write
