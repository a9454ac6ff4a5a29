"""Bounds policies: how far personalization may go in a deployment.

Load a YAML policy with :func:`load_policy` (errors are located ``file:line:col``), then call
:meth:`BoundsPolicy.evaluate` (or :meth:`BoundsPolicy.clamp`) on every decision to get the
closest weights that satisfy every bound.

Rooms: :mod:`.models` (the file schema), :mod:`.loader` (YAML -> spec, located errors),
:mod:`.compiler` (spec -> compiled policy, feasibility, content hash), :mod:`.merge` (the
stricter-wins merge of rules), :mod:`.bounds` (the immutable evaluator), :mod:`.conditions`,
:mod:`.projection`, :mod:`.topics`, :mod:`.context`, :mod:`.reload`.
"""

from __future__ import annotations

from .bounds import BoundsPolicy, ClampResult, Evaluation
from .compiler import default_policy
from .loader import load_policy, parse_policy, policy_from_data
from .merge import GLOBAL_EXPLORATION, GLOBAL_PERSONALIZATION, BoundSources
from .models import BoundRule, DefaultsSpec, Layer, PolicySpec
from .projection import l1_distance_to_feasible, project

__all__ = [
    "BoundRule",
    "BoundSources",
    "BoundsPolicy",
    "ClampResult",
    "default_policy",
    "DefaultsSpec",
    "Evaluation",
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
