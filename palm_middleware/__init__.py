"""palm-middleware: give every user a model aligned to their preferences, within bounds.

Per request: identify the user, infer their weights over traits from feedback, clamp them by the
deployment's bounds policy, and route to the portfolio member with the best scalarized reward.

This top level is the serving API and the errors callers catch. Everything else is public in
its own module (``palm_middleware.routing.Router``, ``palm_middleware.preferences.model``,
``palm_middleware.engines.registry.SessionRegistry`` ...); ARCHITECTURE.md maps the rooms.
Names are imported on first use, so ``import palm_middleware`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._lazy import load as _load
from .exceptions import (
    ComparisonUnavailable,
    ConfigError,
    DecisionBlocked,
    EngineError,
    GenerationError,
    IdentityError,
    InvalidEventError,
    InvalidParameterError,
    InvalidRequestError,
    InvalidWeightsError,
    ManifestError,
    ModelLoadError,
    PalmError,
    PolicyError,
    PolicyInfeasibleError,
    PolicyValidationError,
    PolicyWarning,
    RequestTooLargeError,
    StoreError,
    StoreUnavailable,
    TopicLabelError,
)

if TYPE_CHECKING:
    from .decision import Decision, Profile
    from .engines.base import GenerationParams
    from .engines.onnx import OnnxEngine
    from .pipeline import Palm
    from .policy import BoundsPolicy, load_policy
    from .portfolio.manifest import Portfolio, load_portfolio
    from .preferences.events import ExplicitWeights, Pairwise, Regenerate, TextCue, Thumb
    from .stores.memory import MemoryStore
    from .stores.sqlite import SQLiteStore
    from .traits import TraitSpace, WeightVector

#: The one version source: pyproject.toml reads it (``[tool.setuptools.dynamic]``).
__version__ = "0.1.0"

_LAZY = {
    "BoundsPolicy": "policy",
    "Decision": "decision",
    "ExplicitWeights": "preferences.events",
    "GenerationParams": "engines.base",
    "MemoryStore": "stores.memory",
    "OnnxEngine": "engines.onnx",
    "Pairwise": "preferences.events",
    "Palm": "pipeline",
    "Portfolio": "portfolio.manifest",
    "Profile": "decision",
    "Regenerate": "preferences.events",
    "SQLiteStore": "stores.sqlite",
    "TextCue": "preferences.events",
    "Thumb": "preferences.events",
    "TraitSpace": "traits",
    "WeightVector": "traits",
    "load_policy": "policy",
    "load_portfolio": "portfolio.manifest",
}

__all__ = [
    "BoundsPolicy",
    "ComparisonUnavailable",
    "ConfigError",
    "Decision",
    "DecisionBlocked",
    "EngineError",
    "ExplicitWeights",
    "GenerationError",
    "GenerationParams",
    "IdentityError",
    "InvalidEventError",
    "InvalidParameterError",
    "InvalidRequestError",
    "InvalidWeightsError",
    "ManifestError",
    "MemoryStore",
    "ModelLoadError",
    "OnnxEngine",
    "Pairwise",
    "Palm",
    "PalmError",
    "PolicyError",
    "PolicyInfeasibleError",
    "PolicyValidationError",
    "PolicyWarning",
    "Portfolio",
    "Profile",
    "Regenerate",
    "RequestTooLargeError",
    "SQLiteStore",
    "StoreError",
    "StoreUnavailable",
    "TextCue",
    "Thumb",
    "TopicLabelError",
    "TraitSpace",
    "WeightVector",
    "__version__",
    "load_policy",
    "load_portfolio",
]


def __getattr__(name: str) -> Any:
    return _load(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return sorted(__all__)
