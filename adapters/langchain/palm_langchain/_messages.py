"""LangChain messages <-> the OpenAI-style dicts palm-middleware and the engines read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_openai_messages

__all__ = ["to_dicts", "user_id_from"]


#: Content blocks of LangChain's v1 format that repeat the message's ``tool_calls``.
_TOOL_CALL_BLOCKS = frozenset({"tool_call", "tool_call_chunk", "invalid_tool_call"})


def to_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """OpenAI chat dicts (``role``/``content``) of LangChain messages.

    Tool-call blocks in a v1 ``content`` list are dropped: the same calls are in ``tool_calls``,
    and they are not text the policy reads.
    """
    out = convert_to_openai_messages(list(messages))
    dicts = out if isinstance(out, list) else [out]
    for d in dicts:
        content = d.get("content")
        if isinstance(content, list):
            kept = [
                p
                for p in content
                if not (isinstance(p, dict) and p.get("type") in _TOOL_CALL_BLOCKS)
            ]
            d["content"] = kept if kept else ""
    return dicts


def user_id_from(config: Any, key: str) -> Any:
    """``config["configurable"][key]`` or None."""
    if not isinstance(config, dict):
        return None
    configurable = config.get("configurable")
    return configurable.get(key) if isinstance(configurable, dict) else None
