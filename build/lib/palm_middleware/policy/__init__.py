"""Bounds policies: how far personalization may go in a deployment.

Load a YAML policy with :func:`load_policy` (errors are located ``file:line:col``), then call
:meth:`BoundsPolicy.clamp` on every decision to get the closest weights that satisfy every bound.
"""

from __future__ import annotations

from .bounds import (
    GLOBAL_EXPLORATION,
    GLOBAL_PERSONALIZATION,
    BoundSources,
    BoundsPolicy,
    ClampResult,
)
from .loader import load_policy, parse_policy, policy_from_data
from .models import BoundRule, DefaultsSpec, Layer, PolicySpec
from .projection import l1_distance_to_feasible, project

__all__ = [
    "BoundRule",
    "BoundSources",
    "BoundsPolicy",
    "ClampResult",
    "DefaultsSpec",
    "GLOBAL_EXPLORATION",
    "GLOBAL_PERSONALIZATION",
    "l1_distance_to_feasible",
    "Layer",
    "load_policy",
    "parse_policy",
    "policy_from_data",
    "PolicySpec",
    "project",
]
