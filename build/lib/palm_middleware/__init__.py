"""palm-middleware: give every user a model aligned to their preferences, within bounds.

Per request: identify the user, infer their weights over traits from feedback, clamp them by the
deployment's bounds policy, and route to the portfolio member with the best scalarized reward.
Names are imported on first use, so ``import palm_middleware`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._lazy import load as _load
from .exceptions import (
    ConfigError,
    DecisionBlocked,
    EngineError,
    GenerationError,
    IdentityError,
    InvalidEventError,
    InvalidParameterError,
    InvalidWeightsError,
    ManifestError,
    ModelLoadError,
    NotFittedError,
    PalmError,
    PolicyError,
    StoreError,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from .engines.base import GenerationParams
    from .engines.onnx import OnnxEngine
    from .engines.registry import SessionRegistry
    from .pipeline import Decision, Palm, Profile
    from .policy import BoundsPolicy, ClampResult, load_policy
    from .portfolio.manifest import Portfolio, load_portfolio
    from .preferences.cues import CueLexicon
    from .preferences.events import ExplicitWeights, Pairwise, Regenerate, TextCue, Thumb
    from .preferences.model import PosteriorSummary, PreferenceModel
    from .routing import Route, Router
    from .stores.memory import MemoryStore
    from .stores.sqlite import SQLiteStore
    from .traits import TraitSpace, WeightVector

__version__ = "0.1.0"

_LAZY = {
    "BoundsPolicy": "policy",
    "ClampResult": "policy",
    "CueLexicon": "preferences.cues",
    "Decision": "pipeline",
    "ExplicitWeights": "preferences.events",
    "GenerationParams": "engines.base",
    "MemoryStore": "stores.memory",
    "OnnxEngine": "engines.onnx",
    "Pairwise": "preferences.events",
    "Palm": "pipeline",
    "Portfolio": "portfolio.manifest",
    "PosteriorSummary": "preferences.model",
    "PreferenceModel": "preferences.model",
    "Profile": "pipeline",
    "Regenerate": "preferences.events",
    "Route": "routing",
    "Router": "routing",
    "SQLiteStore": "stores.sqlite",
    "SessionRegistry": "engines.registry",
    "TextCue": "preferences.events",
    "Thumb": "preferences.events",
    "TraitSpace": "traits",
    "WeightVector": "traits",
    "load_policy": "policy",
    "load_portfolio": "portfolio.manifest",
}

__all__ = [
    "BoundsPolicy",
    "ClampResult",
    "ConfigError",
    "CueLexicon",
    "Decision",
    "DecisionBlocked",
    "EngineError",
    "ExplicitWeights",
    "GenerationError",
    "GenerationParams",
    "IdentityError",
    "InvalidEventError",
    "InvalidParameterError",
    "InvalidWeightsError",
    "ManifestError",
    "MemoryStore",
    "ModelLoadError",
    "NotFittedError",
    "OnnxEngine",
    "Pairwise",
    "Palm",
    "PalmError",
    "PolicyError",
    "Portfolio",
    "PosteriorSummary",
    "PreferenceModel",
    "Profile",
    "Regenerate",
    "Route",
    "Router",
    "SQLiteStore",
    "SessionRegistry",
    "StoreError",
    "StoreUnavailable",
    "TextCue",
    "Thumb",
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
