"""palm-middleware for LangChain.

- :class:`PalmChatModel`: a ``BaseChatModel`` that answers each user with their member.
- :class:`OnnxChatModel`: a local ONNX member as a chat model.
- :class:`PalmAgentMiddleware`: per-user model swap and blocking for ``create_agent``
  (needs ``langchain``; imported on first use).
- :class:`PalmFeedback`, :func:`decision_of`: feedback on replies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from palm_middleware._lazy import load as _load

if TYPE_CHECKING:
    from .chat_models import PalmChatModel, decision_metadata
    from .feedback import PalmFeedback, decision_of
    from .middleware import PalmAgentMiddleware
    from .onnx import OnnxChatModel

_LAZY = {
    "OnnxChatModel": "onnx",
    "PalmAgentMiddleware": "middleware",
    "PalmChatModel": "chat_models",
    "PalmFeedback": "feedback",
    "decision_metadata": "chat_models",
    "decision_of": "feedback",
}

__all__ = [
    "OnnxChatModel",
    "PalmAgentMiddleware",
    "PalmChatModel",
    "PalmFeedback",
    "decision_metadata",
    "decision_of",
]


def __getattr__(name: str) -> Any:
    return _load(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return sorted(__all__)
