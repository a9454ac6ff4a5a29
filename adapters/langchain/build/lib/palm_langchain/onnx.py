"""``OnnxChatModel``: a portfolio member run by an :class:`~palm_middleware.OnnxEngine`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, NoReturn

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from palm_middleware.engines.base import Chunk, Generation, Usage
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.exceptions import InvalidParameterError

from ._messages import to_dicts

__all__ = ["OnnxChatModel"]

#: Per-call parameters the engine reads (besides ``stop``, which LangChain passes apart).
CALL_PARAMS = ("max_tokens", "temperature", "top_p", "top_k", "seed")


class OnnxChatModel(BaseChatModel):
    """A local ONNX member as a LangChain chat model.

    Per-call ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``seed`` and ``stop`` reach
    the engine; any other call parameter (``tools``, ``response_format``, another ``model``) is
    refused with an error naming it, never ignored. Tool calling and structured output are not
    supported (small local decoders cannot follow a tool schema): :meth:`bind_tools` and
    :meth:`with_structured_output` say so. Unknown constructor arguments (``timeout``,
    ``api_key``: there is no network client) are refused too.

    Example (not run here: it needs a model folder)::

        member = OnnxChatModel(engine=OnnxEngine("models/terse"), max_tokens=64)
        member.invoke("Capital of France?")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    engine: OnnxEngine
    """The engine that runs the member (loads its model on the first call)."""
    max_tokens: int | None = None
    """Most new tokens (None: the engine's default)."""
    temperature: float | None = None
    """Sampling temperature (None: the engine's default; 0 is greedy)."""
    top_p: float | None = None
    """Nucleus sampling mass."""
    top_k: int | None = None
    """Keep the ``top_k`` most likely tokens."""
    seed: int | None = None
    """Sampler seed."""
    stop: list[str] | None = Field(default=None)
    """Stop sequences."""
    streaming: bool = False
    """Generate through the streaming path even for ``invoke`` (callbacks see every token)."""

    @property
    def _llm_type(self) -> str:
        return "palm-onnx-chat"

    @property
    def model_name(self) -> str:
        """The member's name (the engine's)."""
        return self.engine.name

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.engine.name,
            **{k: getattr(self, k) for k in CALL_PARAMS if getattr(self, k) is not None},
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop or self.stop, **kwargs)
        params["ls_provider"] = "onnxruntime"
        model = kwargs.get("model")
        params["ls_model_name"] = model if isinstance(model, str) else self.engine.name
        return params

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> NoReturn:
        """Refused: a local ONNX member cannot call tools."""
        raise NotImplementedError(
            f"OnnxChatModel {self.engine.name!r} cannot call tools (a local ONNX decoder has no "
            "tool-calling format); use a tool-calling chat model as this member"
        )

    def with_structured_output(self, schema: Any, **kwargs: Any) -> NoReturn:
        """Refused: a local ONNX member cannot be held to a schema."""
        raise NotImplementedError(
            f"OnnxChatModel {self.engine.name!r} has no structured output (no constrained "
            "decoding); use a chat model with structured output as this member"
        )

    def _params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        model = kwargs.pop("model", None)
        if model is not None and model != self.engine.name:
            raise InvalidParameterError(
                f"OnnxChatModel {self.engine.name!r}: parameter 'model' must be "
                f"{self.engine.name!r} (one engine per member); got {model!r}"
            )
        unknown = sorted(k for k in kwargs if k not in CALL_PARAMS)
        if unknown:
            raise InvalidParameterError(
                f"OnnxChatModel {self.engine.name!r}: unsupported call parameter(s) {unknown}; "
                f"supported: {[*CALL_PARAMS, 'stop']}"
            )
        out: dict[str, Any] = {}
        for k in CALL_PARAMS:
            v = kwargs.get(k, getattr(self, k))
            if v is not None:
                out[k] = v
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
        if self.streaming:
            return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
        out = self.engine.generate(to_dicts(messages), self._params(stop, kwargs))
        return _result(out, self.engine.name)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))
        out = await self.engine.agenerate(to_dicts(messages), self._params(stop, kwargs))
        return _result(out, self.engine.name)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        params = self._params(stop, kwargs)
        for chunk in self.engine.stream(to_dicts(messages), params):
            out = _chunk(chunk, self.engine.name)
            if run_manager is not None:
                run_manager.on_llm_new_token(out.text, chunk=out)
            yield out

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        params = self._params(stop, kwargs)
        async for chunk in self.engine.astream(to_dicts(messages), params):
            out = _chunk(chunk, self.engine.name)
            if run_manager is not None:
                await run_manager.on_llm_new_token(out.text, chunk=out)
            yield out


def _usage(u: Usage) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=u.prompt_tokens, output_tokens=u.completion_tokens, total_tokens=u.total_tokens
    )


def _result(out: Generation, name: str) -> ChatResult:
    msg = AIMessage(
        content=out.text,
        usage_metadata=_usage(out.usage),
        response_metadata={
            "finish_reason": out.finish_reason,
            "model_name": out.model or name,
            "model_provider": "onnxruntime",
        },
    )
    return ChatResult(generations=[ChatGeneration(message=msg)])


def _chunk(c: Chunk, name: str) -> ChatGenerationChunk:
    """One streamed piece; the engine's last chunk carries the usage, finish reason and name.

    Metadata goes on the last chunk only: LangChain concatenates string metadata when chunks
    are added, and counts usage once per chunk.
    """
    last = c.finish_reason is not None
    meta: dict[str, Any] = (
        {"finish_reason": c.finish_reason, "model_name": name, "model_provider": "onnxruntime"}
        if last
        else {}
    )
    msg = AIMessageChunk(
        content=c.text,
        response_metadata=meta,
        usage_metadata=_usage(c.usage) if c.usage else None,
        chunk_position="last" if last else None,
    )
    return ChatGenerationChunk(message=msg)
