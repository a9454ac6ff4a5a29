"""From a manifest member's backend to the engine that runs it.

``onnx`` members run their own folder; ``prompted`` and ``adapter`` members run a shared base
folder (one session in the registry for all of them) with a system prompt / few-shot examples /
decoding defaults, or a LoRA adapter activated per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..exceptions import EngineError
from ..portfolio.manifest import (
    AdapterBackend,
    LiteLLMBackend,
    Member,
    OnnxBackend,
    PromptedBackend,
)
from .onnx import OnnxEngine
from .registry import SessionRegistry

__all__ = ["engine_for_member"]

BackendSpec = OnnxBackend | AdapterBackend | PromptedBackend | LiteLLMBackend


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
        return OnnxEngine(root / backend.path, registry=registry, name=name)
    base = Path((bases or {}).get(backend.base, backend.base))
    if isinstance(backend, AdapterBackend):
        return OnnxEngine(root / base, registry=registry, adapter=root / backend.adapter, name=name)
    return OnnxEngine(
        root / base,
        registry=registry,
        system_prompt=backend.system_prompt,
        few_shot=backend.few_shot,
        defaults=dict(backend.generation),
        name=name,
    )
