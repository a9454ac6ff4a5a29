"""From a manifest member's backend to the engine that runs it.

``onnx`` members run their own folder; ``prompted`` and ``adapter`` members run a shared base
folder (one session in the registry for all of them) with a system prompt / few-shot examples /
decoding defaults, or a LoRA adapter activated per request.

The backend's ``engine`` picks the loop: :class:`OnnxEngine` (the raw ONNX Runtime loop) or
:class:`~palm_middleware.engines.genai.GenaiEngine` (ONNX Runtime GenAI); ``auto`` takes GenAI
for a folder built by its model builder when the runtime is installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..exceptions import EngineError
from ..portfolio.manifest import (
    AdapterBackend,
    EngineChoice,
    LiteLLMBackend,
    Member,
    OnnxBackend,
    PromptedBackend,
)
from .onnx import OnnxEngine
from .registry import SessionRegistry

__all__ = ["engine_class", "engine_for_member"]

BackendSpec = OnnxBackend | AdapterBackend | PromptedBackend | LiteLLMBackend


def engine_class(folder: str | Path, choice: EngineChoice = "auto") -> type[OnnxEngine]:
    """The engine class that serves model ``folder`` under the manifest's ``engine`` choice."""
    from .genai import GenaiEngine, is_genai_folder

    if choice == "onnx":
        return OnnxEngine
    if choice == "genai":
        if not is_genai_folder(folder):
            raise EngineError(
                f"engine: genai needs a folder built by the GenAI model builder "
                f"(`palm prepare-genai`); {folder} has no genai_config.json"
            )
        return GenaiEngine
    if is_genai_folder(folder) and importlib.util.find_spec("onnxruntime_genai") is not None:
        return GenaiEngine
    return OnnxEngine


def engine_for_member(
    member: Member | BackendSpec,
    registry: SessionRegistry,
    *,
    bases: Mapping[str, str | Path] | None = None,
    root: str | Path = ".",
) -> OnnxEngine:
    """The engine of one member (models load lazily, on its first request).

    Args:
        member: A manifest member, or just its backend.
        registry: Shares base sessions between members.
        bases: Names of shared base models (``base: smollm2``) to folders; a base not named
            here is a folder path.
        root: Folder that relative paths are resolved against (the manifest's folder).
    """
    backend = member.backend if isinstance(member, Member) else member
    name = member.id if isinstance(member, Member) else None
    root = Path(root)
    if backend is None:
        raise EngineError(f"member {name!r} has no backend; add `backend:` to the manifest")
    if isinstance(backend, LiteLLMBackend):
        raise EngineError(
            f"member {name or backend.model!r} is a LiteLLM backend; it is served through "
            "LiteLLM, not an ONNX engine"
        )
    if isinstance(backend, OnnxBackend):
        folder = root / backend.path
        return engine_class(folder, backend.engine)(folder, registry=registry, name=name)
    base = root / Path((bases or {}).get(backend.base, backend.base))
    cls = engine_class(base, backend.engine)
    if isinstance(backend, AdapterBackend):
        return cls(base, registry=registry, adapter=root / backend.adapter, name=name)
    kwargs: dict[str, Any] = {
        "system_prompt": backend.system_prompt,
        "few_shot": backend.few_shot,
        "defaults": dict(backend.generation),
    }
    return cls(base, registry=registry, name=name, **kwargs)
