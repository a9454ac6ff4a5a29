"""``OnnxChatModel``: a portfolio member run by an :class:`~palm_middleware.OnnxEngine`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from palm_middleware.engines.base import Chunk, Generation, Usage
from palm_middleware.engines.onnx import OnnxEngine

from ._messages import to_dicts

__all__ = ["OnnxChatModel"]


class OnnxChatModel(BaseChatModel):
    """A local ONNX member as a LangChain chat model (no tool calling: tiny local models).

    Example (not run here: it needs a model folder)::

        member = OnnxChatModel(engine=OnnxEngine("models/terse"), max_tokens=64)
        member.invoke("Capital of France?")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: OnnxEngine
    """The engine that runs the member."""
    max_tokens: int | None = None
    """Most new tokens (None: the engine's default)."""
    temperature: float | None = None
    """Sampling temperature (None: the engine's default; 0 is greedy)."""
    top_p: float | None = None
    """Nucleus sampling mass."""
    seed: int | None = None
    """Sampler seed."""
    stop: list[str] | None = Field(default=None)
    """Stop sequences."""

    @property
    def _llm_type(self) -> str:
        return "palm-onnx-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "member": self.engine.name,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }

    def _params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: v
            for k, v in (
                ("max_tokens", self.max_tokens),
                ("temperature", self.temperature),
                ("top_p", self.top_p),
                ("seed", self.seed),
            )
            if v is not None
        }
        out.update(
            {
                k: kwargs[k]
                for k in ("max_tokens", "temperature", "top_p", "seed")
                if kwargs.get(k) is not None
            }
        )
        stops = [*(self.stop or []), *(stop or [])]
        if stops:
            out["stop"] = stops
        return out

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        out = self.engine.generate(to_dicts(messages), self._params(stop, kwargs))
        return _result(out)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        out = await self.engine.agenerate(to_dicts(messages), self._params(stop, kwargs))
        return _result(out)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self.engine.stream(to_dicts(messages), self._params(stop, kwargs)):
            yield _chunk(chunk)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in self.engine.astream(to_dicts(messages), self._params(stop, kwargs)):
            yield _chunk(chunk)


def _usage(u: Usage) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=u.prompt_tokens, output_tokens=u.completion_tokens, total_tokens=u.total_tokens
    )


def _result(out: Generation) -> ChatResult:
    msg = AIMessage(
        content=out.text,
        usage_metadata=_usage(out.usage),
        response_metadata={"finish_reason": out.finish_reason, "model_name": out.model},
    )
    return ChatResult(generations=[ChatGeneration(message=msg)])


def _chunk(c: Chunk) -> ChatGenerationChunk:
    meta: dict[str, Any] = {"finish_reason": c.finish_reason} if c.finish_reason else {}
    msg = AIMessageChunk(
        content=c.text, response_metadata=meta, usage_metadata=_usage(c.usage) if c.usage else None
    )
    return ChatGenerationChunk(message=msg)
