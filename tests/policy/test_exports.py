"""The public names of palm_middleware.policy."""

from __future__ import annotations

import palm_middleware.policy as policy

EXPECTED_ALL = [
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


def test_all() -> None:
    assert policy.__all__ == EXPECTED_ALL
    assert policy.__all__ == sorted(policy.__all__, key=str.casefold)
    for name in policy.__all__:
        assert hasattr(policy, name)
