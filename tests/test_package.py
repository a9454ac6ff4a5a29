"""Public API and import weight."""

from __future__ import annotations

import subprocess
import sys

import palm_middleware


def test_all_is_sorted_and_importable() -> None:
    assert palm_middleware.__all__ == sorted(palm_middleware.__all__)
    for name in palm_middleware.__all__:
        assert getattr(palm_middleware, name) is not None


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
