"""The ``palm_onnx/<name>`` custom provider: local ONNX members run in the proxy process.

(Not ``palm/``: LiteLLM 1.106.2 reserves the provider name ``palm`` for Google's retired PaLM API
and refuses it before custom providers are consulted.)

``<name>`` is a member id (its own engine: an ONNX folder, a base with a LoRA adapter, or a
prompted member with its system prompt) or a base name from ``bases:`` (the plain base, used
when the hook has already applied a prompted member's system prompt). Register it with::

    litellm_settings:
      custom_provider_map:
        - {provider: palm_onnx, custom_handler: palm_litellm.provider.instance}
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from litellm.llms.custom_llm import CustomLLM, CustomLLMError
from litellm.types.utils import (
    ChatCompletionMessageToolCall,
    GenericStreamingChunk,
    ModelResponse,
    Usage,
)

from palm_middleware.engines.base import Chunk, Generation
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.engines.structured import (
    ToolCall,
    ToolFormat,
    plain_messages,
    response_grammar,
)
from palm_middleware.exceptions import PalmError

from .config import PalmRuntime, RuntimeUser
from .errors import message_for, status_for

__all__ = ["PROVIDER", "PalmProvider", "instance", "to_prompt"]

#: The provider name to register in ``custom_provider_map``.
PROVIDER = "palm_onnx"

#: OpenAI request fields the engine understands (``max_completion_tokens`` is ``max_tokens``).
_PARAMS = {
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "seed": "seed",
    "stop": "stop",
}


def to_prompt(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """OpenAI chat messages as engine messages (text parts joined; no content → empty; tool
    calls and results as text, :func:`~palm_middleware.engines.structured.plain_messages`)."""
    return plain_messages(messages)


def to_params(optional_params: Mapping[str, Any]) -> dict[str, Any]:
    """Decoding parameters of a request, in the engine's names (others are ignored)."""
    out: dict[str, Any] = {}
    for name, ours in _PARAMS.items():
        value = optional_params.get(name)
        if value is not None:
            out[ours] = value
    return out


def to_request(
    messages: Sequence[Mapping[str, Any]], optional_params: Mapping[str, Any]
) -> tuple[list[dict[str, str]], dict[str, Any], ToolFormat | None]:
    """Engine prompt and parameters of a request, and its tools (if the model may call one).

    ``tools`` / ``tool_choice`` add the tools' instructions to the prompt and constrain the
    answer to a call; otherwise ``response_format`` constrains it (JSON object, JSON schema).
    """
    prompt = to_prompt(messages)
    params = to_params(optional_params)
    tools = ToolFormat.parse(optional_params.get("tools"), optional_params.get("tool_choice"))
    if tools is not None:
        prompt = tools.messages(prompt)
        params["grammar"] = tools.grammar()
    else:
        grammar = response_grammar(optional_params.get("response_format"))
        if grammar is not None:
            params["grammar"] = grammar
    return prompt, params, tools


class PalmProvider(RuntimeUser, CustomLLM):
    """Serves ``palm_onnx/<member or base>`` from local ONNX engines (sync, async, streaming)."""

    def __init__(self, runtime: PalmRuntime | None = None) -> None:
        super().__init__()
        self._runtime = runtime

    def _engine(self, model: str) -> OnnxEngine:
        name = model.split("/", 1)[1] if model.startswith("palm_onnx/") else model
        try:
            return self.runtime.engine(name)
        except PalmError as exc:
            status = 400 if status_for(exc) == 500 else status_for(exc)
            raise CustomLLMError(  # type: ignore[no-untyped-call]
                status_code=status, message=message_for(exc)
            ) from exc

    def completion(
        self,
        model: str,
        messages: list[Any],
        api_base: str | None,
        custom_prompt_dict: dict[str, Any],
        model_response: ModelResponse,
        print_verbose: Any,
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        *args: Any,
        **kwargs: Any,
    ) -> ModelResponse:
        engine = self._engine(model)
        try:
            prompt, params, tools = to_request(messages, optional_params)
            out = engine.generate(prompt, params)
        except PalmError as exc:
            raise _provider_error(exc) from exc
        return _fill(model_response, out, model, tools)

    async def acompletion(
        self,
        model: str,
        messages: list[Any],
        api_base: str | None,
        custom_prompt_dict: dict[str, Any],
        model_response: ModelResponse,
        print_verbose: Any,
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        *args: Any,
        **kwargs: Any,
    ) -> ModelResponse:
        engine = self._engine(model)
        try:
            prompt, params, tools = to_request(messages, optional_params)
            out = await engine.agenerate(prompt, params)
        except PalmError as exc:
            raise _provider_error(exc) from exc
        return _fill(model_response, out, model, tools)

    def streaming(
        self,
        model: str,
        messages: list[Any],
        api_base: str | None,
        custom_prompt_dict: dict[str, Any],
        model_response: ModelResponse,
        print_verbose: Any,
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        *args: Any,
        **kwargs: Any,
    ) -> Iterator[GenericStreamingChunk]:
        engine = self._engine(model)
        try:
            prompt, params, tools = to_request(messages, optional_params)
            if tools is not None:  # a call is known only once complete: one chunk at the end
                yield _generic_tools(engine.generate(prompt, params), tools)
                return
            for chunk in engine.stream(prompt, params):
                yield _generic(chunk)
        except PalmError as exc:
            raise _provider_error(exc) from exc

    # LiteLLM iterates the result with `async for`: an async generator, whatever the stub says.
    async def astreaming(  # type: ignore[override]
        self,
        model: str,
        messages: list[Any],
        api_base: str | None,
        custom_prompt_dict: dict[str, Any],
        model_response: ModelResponse,
        print_verbose: Any,
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        *args: Any,
        **kwargs: Any,
    ) -> AsyncIterator[GenericStreamingChunk]:
        engine = self._engine(model)
        try:
            prompt, params, tools = to_request(messages, optional_params)
            if tools is not None:  # a call is known only once complete: one chunk at the end
                yield _generic_tools(await engine.agenerate(prompt, params), tools)
                return
            async for chunk in engine.astream(prompt, params):
                yield _generic(chunk)
        except PalmError as exc:
            raise _provider_error(exc) from exc


def _provider_error(exc: PalmError) -> CustomLLMError:
    return CustomLLMError(  # type: ignore[no-untyped-call]
        status_code=status_for(exc), message=message_for(exc)
    )


def _fill(
    response: ModelResponse, out: Generation, model: str, tools: ToolFormat | None = None
) -> ModelResponse:
    call = tools.parse_call(out.text) if tools is not None else None
    message = response.choices[0].message
    if call is None:
        message.content = out.text
        response.choices[0].finish_reason = out.finish_reason
    else:
        message.content = None
        message.tool_calls = [ChatCompletionMessageToolCall(**call.openai())]
        response.choices[0].finish_reason = "tool_calls"
    response.model = model
    response.created = int(time.time())
    response.usage = Usage(  # type: ignore[attr-defined]
        prompt_tokens=out.usage.prompt_tokens,
        completion_tokens=out.usage.completion_tokens,
        total_tokens=out.usage.total_tokens,
    )
    return response


def _generic_tools(out: Generation, tools: ToolFormat) -> GenericStreamingChunk:
    """A whole answer of a request with tools as one final chunk (text or one tool call)."""
    call: ToolCall | None = tools.parse_call(out.text)
    last = _generic(Chunk("" if call else out.text, out.token_ids, out.finish_reason, out.usage))
    if call is not None:
        last["tool_use"] = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
            "index": 0,
        }
        last["finish_reason"] = "tool_calls"
    return last


def _generic(chunk: Chunk) -> GenericStreamingChunk:
    usage = None
    if chunk.usage is not None:
        usage = {
            "prompt_tokens": chunk.usage.prompt_tokens,
            "completion_tokens": chunk.usage.completion_tokens,
            "total_tokens": chunk.usage.total_tokens,
        }
    return GenericStreamingChunk(
        text=chunk.text,
        tool_use=None,
        is_finished=chunk.finish_reason is not None,
        finish_reason=chunk.finish_reason or "",
        usage=usage,  # type: ignore[typeddict-item]
        index=0,
    )


instance = PalmProvider()
