"""``OnnxChatModel``: a portfolio member run by an :class:`~palm_middleware.OnnxEngine`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call, tool_call_chunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, Field

from palm_middleware.engines.base import Chunk, Generation, Usage
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.engines.structured import (
    ToolCall,
    ToolFormat,
    plain_messages,
    response_grammar,
)
from palm_middleware.exceptions import InvalidParameterError

from ._messages import to_dicts

__all__ = ["OnnxChatModel"]

#: Per-call parameters the engine reads (besides ``stop``, which LangChain passes apart).
CALL_PARAMS = ("max_tokens", "temperature", "top_p", "top_k", "seed")
#: Per-call parameters that constrain the answer (a grammar: llguidance, the ``grammar`` extra).
CONSTRAINT_PARAMS = ("response_format", "tools", "tool_choice", "parallel_tool_calls")


class OnnxChatModel(BaseChatModel):
    """A local ONNX member as a LangChain chat model.

    Per-call ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``seed`` and ``stop`` reach
    the engine; ``response_format``, ``tools`` and ``tool_choice`` constrain the answer with a
    grammar (``palm_middleware.engines.structured``), so :meth:`bind_tools` and
    :meth:`with_structured_output` (``json_schema``, ``json_mode``, ``function_calling``) work
    even for a small member: the answer is valid JSON for the schema, or a call
    ``{"name", "arguments"}`` to one of the tools. Any other call parameter (another ``model``)
    is refused with an error naming it, never ignored. Unknown constructor arguments
    (``timeout``, ``api_key``: there is no network client) are refused too.

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

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools: the answer is plain text or one call, constrained to a tool's schema.

        ``tool_choice``: ``"auto"`` (default), ``"none"``, ``"any"``/``"required"``/``True``
        (must call one), or a tool's name (must call that one).
        """
        kwargs.pop("strict", None)  # the grammar holds every call to its schema anyway
        formatted = [convert_to_openai_tool(t) for t in tools]
        choice: Any = tool_choice
        if tool_choice is True or tool_choice == "any":
            choice = "required"
        elif isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "required"):
            choice = {"type": "function", "function": {"name": tool_choice}}
        ToolFormat.parse(formatted, choice)  # a bad tool or choice fails here, not at invoke
        extra = {"tool_choice": choice} if choice is not None else {}
        return self.bind(tools=formatted, **extra, **kwargs)

    def with_structured_output(
        self,
        schema: Any,
        *,
        method: Literal["json_schema", "json_mode", "function_calling"] = "json_schema",
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Answers held to ``schema`` by a grammar; parsed into a dict or the pydantic model.

        ``json_schema`` constrains the answer to the schema, ``json_mode`` to any JSON object
        (``schema`` only parses it), ``function_calling`` to a call of ``schema`` as a tool.
        """
        kwargs.pop("strict", None)  # the grammar is always strict
        if kwargs:
            raise InvalidParameterError(
                f"OnnxChatModel {self.engine.name!r}: unsupported with_structured_output "
                f"argument(s) {sorted(kwargs)}"
            )
        if method == "function_calling":
            return super().with_structured_output(schema, include_raw=include_raw)
        pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        parser: Runnable[Any, Any] = (
            PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()
        )
        if method == "json_schema":
            if schema is None:
                raise InvalidParameterError(
                    "with_structured_output(method='json_schema') needs a schema"
                )
            fmt: dict[str, Any] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": convert_to_json_schema(schema)},
            }
        elif method == "json_mode":
            fmt = {"type": "json_object"}
        else:
            raise InvalidParameterError(
                f"method must be json_schema, json_mode or function_calling; got {method!r}"
            )
        llm = self.bind(
            response_format=fmt,
            ls_structured_output_format={"kwargs": {"method": method}, "schema": schema},
        )
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        ).with_fallbacks(
            [RunnablePassthrough.assign(parsed=lambda _: None)], exception_key="parsing_error"
        )
        return RunnableMap(raw=llm) | parsed

    def _params(
        self, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[dict[str, Any], ToolFormat | None]:
        """Engine parameters of a call and its tools (None: no call possible)."""
        kwargs.pop("ls_structured_output_format", None)
        model = kwargs.pop("model", None)
        if model is not None and model != self.engine.name:
            raise InvalidParameterError(
                f"OnnxChatModel {self.engine.name!r}: parameter 'model' must be "
                f"{self.engine.name!r} (one engine per member); got {model!r}"
            )
        unknown = sorted(k for k in kwargs if k not in (*CALL_PARAMS, *CONSTRAINT_PARAMS))
        if unknown:
            raise InvalidParameterError(
                f"OnnxChatModel {self.engine.name!r}: unsupported call parameter(s) {unknown}; "
                f"supported: {[*CALL_PARAMS, 'stop', *CONSTRAINT_PARAMS]}"
            )
        out: dict[str, Any] = {}
        for k in CALL_PARAMS:
            v = kwargs.get(k, getattr(self, k))
            if v is not None:
                out[k] = v
        stops = [*(self.stop or []), *(stop or [])]
        if stops:
            out["stop"] = stops
        tools = ToolFormat.parse(kwargs.get("tools"), kwargs.get("tool_choice"))
        grammar = tools.grammar() if tools else response_grammar(kwargs.get("response_format"))
        if grammar is not None:
            out["grammar"] = grammar
        return out, tools

    def _prompt(
        self, messages: list[BaseMessage], tools: ToolFormat | None
    ) -> list[dict[str, str]]:
        prompt = plain_messages(to_dicts(messages))
        return tools.messages(prompt) if tools is not None else prompt

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
        params, tools = self._params(stop, kwargs)
        out = self.engine.generate(self._prompt(messages, tools), params)
        return _result(out, self.engine.name, tools)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))
        params, tools = self._params(stop, kwargs)
        out = await self.engine.agenerate(self._prompt(messages, tools), params)
        return _result(out, self.engine.name, tools)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        params, tools = self._params(stop, kwargs)
        prompt = self._prompt(messages, tools)
        if tools is not None:  # a call is known only once complete: one chunk
            yield _tools_chunk(self.engine.generate(prompt, params), self.engine.name, tools)
            return
        for chunk in self.engine.stream(prompt, params):
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
        params, tools = self._params(stop, kwargs)
        prompt = self._prompt(messages, tools)
        if tools is not None:  # a call is known only once complete: one chunk
            whole = await self.engine.agenerate(prompt, params)
            yield _tools_chunk(whole, self.engine.name, tools)
            return
        async for chunk in self.engine.astream(prompt, params):
            out = _chunk(chunk, self.engine.name)
            if run_manager is not None:
                await run_manager.on_llm_new_token(out.text, chunk=out)
            yield out


def _usage(u: Usage) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=u.prompt_tokens, output_tokens=u.completion_tokens, total_tokens=u.total_tokens
    )


def _call(out: Generation, tools: ToolFormat | None) -> ToolCall | None:
    return tools.parse_call(out.text) if tools is not None else None


def _result(out: Generation, name: str, tools: ToolFormat | None = None) -> ChatResult:
    call = _call(out, tools)
    msg = AIMessage(
        content="" if call else out.text,
        tool_calls=(
            [tool_call(name=call.name, args=json.loads(call.arguments), id=call.id)] if call else []
        ),
        usage_metadata=_usage(out.usage),
        response_metadata={
            "finish_reason": "tool_calls" if call else out.finish_reason,
            "model_name": out.model or name,
            "model_provider": "onnxruntime",
        },
    )
    return ChatResult(generations=[ChatGeneration(message=msg)])


def _tools_chunk(out: Generation, name: str, tools: ToolFormat) -> ChatGenerationChunk:
    """A whole answer of a call with tools as one last chunk (text or one tool call)."""
    call = _call(out, tools)
    msg = AIMessageChunk(
        content="" if call else out.text,
        tool_call_chunks=(
            [tool_call_chunk(name=call.name, args=call.arguments, id=call.id, index=0)]
            if call
            else []
        ),
        response_metadata={
            "finish_reason": "tool_calls" if call else out.finish_reason,
            "model_name": name,
            "model_provider": "onnxruntime",
        },
        usage_metadata=_usage(out.usage),
        chunk_position="last",
    )
    return ChatGenerationChunk(message=msg)


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
