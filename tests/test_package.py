"""Public API and import weight."""

from __future__ import annotations

import subprocess
import sys

import palm_middleware


def test_all_is_sorted_and_importable() -> None:
    assert palm_middleware.__all__ == sorted(palm_middleware.__all__)
    for name in palm_middleware.__all__:
        assert getattr(palm_middleware, name) is not None


EXPECTED_ALL = [
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


def test_all_is_the_serving_api_and_its_errors() -> None:
    """A name joins the top level on purpose: this list changes with the CHANGELOG."""
    assert palm_middleware.__all__ == EXPECTED_ALL
    assert dir(palm_middleware) == sorted(EXPECTED_ALL)


def test_internals_live_in_their_own_modules() -> None:
    from palm_middleware.engines.registry import SessionRegistry
    from palm_middleware.preferences.model import PreferenceModel
    from palm_middleware.routing import Router

    for cls in (PreferenceModel, Router, SessionRegistry):
        assert cls.__name__ not in palm_middleware.__all__
        assert not hasattr(palm_middleware, cls.__name__)


def test_version_has_one_source() -> None:
    """pyproject.toml reads ``__version__``; the installed metadata agrees with it."""
    from importlib.metadata import version

    assert palm_middleware.__version__ == version("palm-middleware")


def test_import_is_light() -> None:
    code = (
        "import sys, palm_middleware; "
        "heavy = ['onnxruntime', 'litellm', 'langchain_core', 'matplotlib', 'torch', 'redis', "
        "'psycopg', 'scipy', 'pydantic', 'yaml']; "
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys; from palm_middleware.cli.__main__ import build_parser; build_parser(); "
        "print(','.join(m for m in ['matplotlib', 'scipy', 'onnxruntime'] if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_engines_import_lazily() -> None:
    code = (
        "import sys, palm_middleware.engines, palm_middleware.engines.base; "
        "from palm_middleware import OnnxEngine, GenerationParams; "
        "heavy = ['onnxruntime', 'tokenizers', 'jinja2', 'onnx', 'torch']; "
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
