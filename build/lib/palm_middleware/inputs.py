"""Everything a member will read, as plain chat messages the policy can check.

Adapters receive requests in several shapes (OpenAI chat, text completion, Responses, Anthropic
messages). :func:`request_messages` turns each into ``[{"role": ..., "content": str}, ...]``
covering every text the member reads: every role, every content part. Content it cannot read is
refused with :class:`~palm_middleware.exceptions.InvalidRequestError` naming the field, never
passed on stringified.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from .exceptions import InvalidRequestError

__all__ = ["RequestKind", "request_messages"]

RequestKind = Literal["chat", "text_completion", "responses", "anthropic_messages"]


def request_messages(kind: RequestKind, body: Mapping[str, Any]) -> list[dict[str, str]]:
    """The texts of ``body`` as chat messages (role lower-cased, content a string).

    Raises:
        InvalidRequestError: content that cannot be read as text; ``param`` names the field.
    """
    if kind != "chat":  # skeleton: the other shapes land with the request normalizer
        raise InvalidRequestError(f"palm: {kind} requests are not supported", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("palm: `messages` must be a non-empty list", param="messages")
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise InvalidRequestError(
                f"palm: messages[{i}] must be an object with a `role`", param=f"messages[{i}]"
            )
        content = m.get("content")
        out.append({"role": str(m["role"]), "content": content if isinstance(content, str) else ""})
    return out
