"""LangChain messages <-> the OpenAI-style dicts palm-middleware and the engines read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_openai_messages

__all__ = ["to_dicts", "user_id_from"]


def to_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """OpenAI chat dicts (``role``/``content``) of LangChain messages."""
    out = convert_to_openai_messages(list(messages))
    return out if isinstance(out, list) else [out]


def user_id_from(config: Any, key: str) -> Any:
    """``config["configurable"][key]`` or None."""
    if not isinstance(config, dict):
        return None
    configurable = config.get("configurable")
    return configurable.get(key) if isinstance(configurable, dict) else None
