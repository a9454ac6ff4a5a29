"""``PalmChatModel``: one chat model that answers each user with that user's portfolio member.

The user comes from ``config["configurable"]["user_id"]`` (set it from your authentication,
never from model input). Each call asks :class:`~palm_middleware.pipeline.Palm` for a decision
and delegates to the member's chat model; the decision travels down as the ``palm_decision``
call argument (so callbacks see it in ``invocation_params``) and comes back in the reply's
``response_metadata["palm"]``.

Example:
    >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
    >>> from palm_middleware import MemoryStore, Palm, Portfolio, load_policy
    >>> from palm_middleware.cli._common import bundled
    >>> portfolio = Portfolio.from_rewards(
    ...     ["safety", "helpfulness", "humor", "brevity"],
    ...     {"a": [0.9, 0.8, 0.3, 0.5], "b": [0.6, 0.5, 0.9, 0.9]})
    >>> palm = Palm(portfolio, load_policy(bundled("policy.yaml")), MemoryStore())
    >>> llm = PalmChatModel(palm=palm, members={
    ...     "a": FakeListChatModel(responses=["from a"]),
    ...     "b": FakeListChatModel(responses=["from b"])})
    >>> llm.invoke("hi", config={"configurable": {"user_id": "u1"}}).content
    'from a'
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, BaseMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig, ensure_config
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from palm_middleware.exceptions import IdentityError
from palm_middleware.pipeline import Decision, Palm

from ._messages import to_dicts, user_id_from

__all__ = ["PalmChatModel", "decision_metadata"]

_NO_CALLBACKS: RunnableConfig = {"callbacks": []}


def decision_metadata(decision: Decision) -> dict[str, Any]:
    """What callbacks and replies carry about a decision (JSON-ready, no user id)."""
    return {
        "decision_id": decision.decision_id,
        "member": decision.member,
        "weights": decision.weights,
        "rules_fired": list(decision.rules_fired),
        "policy_version": decision.policy_version,
        "explanation": decision.explanation,
    }


class PalmChatModel(BaseChatModel):
    """Routes every call to the caller's portfolio member (any LangChain chat models).

    Supports invoke, stream, batch, their async twins, ``bind_tools`` (bound on the chosen
    member per call) and ``with_structured_output`` (through the members' tool calling).
    Raises :class:`~palm_middleware.DecisionBlocked` when the bounds policy refuses a request
    and :class:`~palm_middleware.IdentityError` when the config names no user.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    palm: Palm
    """The pipeline: portfolio, bounds policy, store."""
    members: dict[str, BaseChatModel]
    """One chat model per portfolio member id."""
    user_config_key: str = "user_id"
    """The ``config["configurable"]`` key holding the authenticated user id."""
    metadata_keys: Sequence[str] = Field(default=("thread_id",))
    """``configurable`` keys passed to the policy as request metadata (``thread_id`` is passed
    as ``conversation_id``)."""

    @property
    def _llm_type(self) -> str:
        return "palm-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"members": sorted(self.members), "policy": self.palm.policy.version}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "palm"
        decision = kwargs.get("palm_decision")
        if isinstance(decision, Mapping):
            params["ls_model_name"] = str(decision.get("member"))
        return params

    # -- deciding (in the public entry points: _generate never sees the config) ------------
    def _request(
        self, input: LanguageModelInput, config: RunnableConfig | None
    ) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
        cfg = ensure_config(config)
        user = user_id_from(cfg, self.user_config_key)
        if not isinstance(user, str) or not user:
            raise IdentityError(
                f'PalmChatModel needs config["configurable"][{self.user_config_key!r}]: the '
                "authenticated user's id"
            )
        messages = to_dicts(self._convert_input(input).to_messages())
        configurable = cfg.get("configurable", {})
        meta = {
            ("conversation_id" if k == "thread_id" else k): configurable[k]
            for k in self.metadata_keys
            if k in configurable
        }
        return user, messages, meta

    def _decide(self, input: LanguageModelInput, config: RunnableConfig | None) -> dict[str, Any]:
        return decision_metadata(self.palm.decide(*self._request(input, config)))

    async def _adecide(
        self, input: LanguageModelInput, config: RunnableConfig | None
    ) -> dict[str, Any]:
        return decision_metadata(await self.palm.adecide(*self._request(input, config)))

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        kwargs.setdefault("palm_decision", self._decide(input, config))
        return super().invoke(input, config, stop=stop, **kwargs)

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        kwargs.setdefault("palm_decision", await self._adecide(input, config))
        return await super().ainvoke(input, config, stop=stop, **kwargs)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        kwargs.setdefault("palm_decision", self._decide(input, config))
        yield from super().stream(input, config, stop=stop, **kwargs)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        kwargs.setdefault("palm_decision", await self._adecide(input, config))
        async for chunk in super().astream(input, config, stop=stop, **kwargs):
            yield chunk

    # -- tools: bound on the chosen member per call ------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(
            palm_tools=[convert_to_openai_tool(t) for t in tools],
            palm_tool_choice=tool_choice,
            **kwargs,
        )

    def _delegate(
        self,
        decision: Mapping[str, Any] | None,
        tools: list[dict[str, Any]] | None,
        tool_choice: str | None,
    ) -> tuple[BaseChatModel, dict[str, Any]]:
        assert decision is not None
        model = self.members[str(decision["member"])]
        if not tools:
            return model, {}
        bound: Any = (
            model.bind_tools(tools, tool_choice=tool_choice)
            if tool_choice
            else (model.bind_tools(tools))
        )
        kwargs: dict[str, Any] = {}
        # Unwrap the binding: calling it inside our run would leak our callbacks into it.
        while isinstance(bound, RunnableBinding):
            kwargs = {**bound.kwargs, **kwargs}
            bound = bound.bound
        return bound, kwargs

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        *,
        palm_decision: dict[str, Any] | None = None,
        palm_tools: list[dict[str, Any]] | None = None,
        palm_tool_choice: str | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Reached without our entry points (generate()): the context-var config names the user.
        palm_decision = palm_decision or self._decide(messages, None)
        model, bkw = self._delegate(palm_decision, palm_tools, palm_tool_choice)
        msg = model.invoke(messages, _NO_CALLBACKS, stop=stop, **bkw, **kwargs)
        return _result(msg, palm_decision)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        *,
        palm_decision: dict[str, Any] | None = None,
        palm_tools: list[dict[str, Any]] | None = None,
        palm_tool_choice: str | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Reached without our entry points (generate()): the context-var config names the user.
        palm_decision = palm_decision or self._decide(messages, None)
        model, bkw = self._delegate(palm_decision, palm_tools, palm_tool_choice)
        msg = await model.ainvoke(messages, _NO_CALLBACKS, stop=stop, **bkw, **kwargs)
        return _result(msg, palm_decision)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        *,
        palm_decision: dict[str, Any] | None = None,
        palm_tools: list[dict[str, Any]] | None = None,
        palm_tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        palm_decision = palm_decision or self._decide(messages, None)
        model, bkw = self._delegate(palm_decision, palm_tools, palm_tool_choice)
        first = True
        for chunk in model.stream(messages, _NO_CALLBACKS, stop=stop, **bkw, **kwargs):
            yield _chunk(chunk, palm_decision if first else None)
            first = False

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        *,
        palm_decision: dict[str, Any] | None = None,
        palm_tools: list[dict[str, Any]] | None = None,
        palm_tool_choice: str | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        palm_decision = palm_decision or await self._adecide(messages, None)
        model, bkw = self._delegate(palm_decision, palm_tools, palm_tool_choice)
        first = True
        async for chunk in model.astream(messages, _NO_CALLBACKS, stop=stop, **bkw, **kwargs):
            yield _chunk(chunk, palm_decision if first else None)
            first = False


def _result(msg: BaseMessage, decision: Mapping[str, Any] | None) -> ChatResult:
    if decision is not None:
        msg = msg.model_copy(
            update={"response_metadata": {**msg.response_metadata, "palm": dict(decision)}}
        )
    return ChatResult(
        generations=[ChatGeneration(message=msg)],
        llm_output={"palm": dict(decision) if decision else None},
    )


def _chunk(chunk: BaseMessageChunk, decision: Mapping[str, Any] | None) -> ChatGenerationChunk:
    if not isinstance(chunk, AIMessageChunk):
        chunk = AIMessageChunk(content=chunk.content)
    if decision is not None:
        chunk = chunk.model_copy(
            update={"response_metadata": {**chunk.response_metadata, "palm": dict(decision)}}
        )
    return ChatGenerationChunk(message=chunk)
