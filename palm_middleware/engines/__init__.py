"""Engines that run portfolio members; ``OnnxEngine`` runs ONNX exports on ONNX Runtime,
``GenaiEngine`` runs GenAI model-builder folders on ONNX Runtime GenAI's loop.

Names are imported on first use, so importing this package does not import onnxruntime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._lazy import load as _load

if TYPE_CHECKING:
    from ._runtime import RuntimeOptions
    from .base import Chunk, Engine, Generation, GenerationParams, Usage
    from .genai import GenaiEngine, GenaiModel
    from .grammar import Grammar
    from .model import OnnxModel
    from .onnx import OnnxEngine
    from .registry import SessionRegistry

_LAZY = {
    "Chunk": "base",
    "Engine": "base",
    "GenaiEngine": "genai",
    "GenaiModel": "genai",
    "Generation": "base",
    "GenerationParams": "base",
    "Grammar": "grammar",
    "OnnxEngine": "onnx",
    "OnnxModel": "model",
    "RuntimeOptions": "_runtime",
    "SessionRegistry": "registry",
    "Usage": "base",
}

__all__ = [
    "Chunk",
    "Engine",
    "GenaiEngine",
    "GenaiModel",
    "Generation",
    "GenerationParams",
    "Grammar",
    "OnnxEngine",
    "OnnxModel",
    "RuntimeOptions",
    "SessionRegistry",
    "Usage",
]


def __getattr__(name: str) -> Any:
    return _load(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return sorted(__all__)
