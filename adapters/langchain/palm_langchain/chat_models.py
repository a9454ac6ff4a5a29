"""``PalmChatModel``: one chat model that answers each user with that user's portfolio member.

Each call asks :class:`~palm_middleware.pipeline.Palm` for a decision inside the integration
template's methods (``_generate``, ``_agenerate``, ``_stream``, ``_astream``; the async ones use
``Palm.adecide``, never the blocking decide) and calls the chosen member as a **child run**, so
traces show the member's own ``ls_model_name``/``ls_provider`` under the routing run. The
decision comes back in the reply's ``response_metadata["palm"]``.

Who the user is, first found wins (set it from your authentication, never from model input):

1. the ``user_id`` call argument (``generate(..., user_id=uid)``, ``invoke(..., user_id=uid)``);
2. ``config["configurable"]["user_id"]`` (key: :attr:`PalmChatModel.user_config_key`);
3. the agent runtime context: ``create_agent(...).invoke(..., context={"user_id": uid})``.

With none of them, :attr:`PalmChatModel.anonymous` decides: ``"refuse"`` (the default: a
missing user id is most often a wiring bug, and the proxy refuses unidentified keys too) raises
:class:`~palm_middleware.IdentityError`; ``"default"`` serves the deployment default within the
bounds and stores nothing. A request the policy blocks ends the chat-model run with the policy's
message (``on_block="reply"``, the default) or raises
:class:`~palm_middleware.DecisionBlocked` (``on_block="raise"``).

Example:
    >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
    >>> from palm_middleware import MemoryStore, Palm, Portfolio, load_policy
    >>> from palm_middleware.data import bundled
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

import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackManager,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, BaseMessageChunk
from langchain_core.output_parsers import (
    JsonOutputKeyToolsParser,
    JsonOutputParser,
    PydanticOutputParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import (
    Runnable,
    RunnableBinding,
    RunnableConfig,
    RunnableLambda,
    RunnableMap,
    RunnablePassthrough,
    ensure_config,
)
from langchain_core.tools import BaseTool
from langchain_core.tracers.base import BaseTracer
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, Field, model_validator

from palm_middleware.anonymous import adefault_decision, default_decision
from palm_middleware.decision import Decision
from palm_middleware.exceptions import DecisionBlocked, IdentityError, InvalidParameterError
from palm_middleware.pipeline import Palm

from ._messages import to_dicts

__all__ = ["PalmChatModel", "decision_metadata"]

#: Call arguments PalmChatModel consumes itself (never forwarded to a member, never traced).
_PRIVATE = ("palm_call", "palm_bound", "palm_tools", "user_id")
#: The langgraph runtime in ``configurable`` (``langgraph.runtime.get_runtime`` reads this key).
_RUNTIME_KEY = "__pregel_runtime"


def decision_metadata(decision: Decision) -> dict[str, Any]:
    """What callbacks and replies carry about a decision (JSON-ready, no user id)."""
    return {
        "decision_id": decision.decision_id,
        "member": decision.member,
        "weights": decision.weights,
        "rules_fired": list(decision.rules_fired),
        "policy_version": decision.policy_version,
        "explanation": decision.explanation,
        "used_default": decision.used_default,
    }


@dataclass(frozen=True)
class _Call:
    """The caller's config and the run id of this call (langchain-core hands neither to
    ``_generate``/``_stream``: ``configurable`` is dropped and ``_stream`` gets no run manager)."""

    config: RunnableConfig
    run_id: uuid.UUID


@dataclass(frozen=True)
class _Blocked:
    rule_id: str
    message: str


class PalmChatModel(BaseChatModel):
    """Routes every call to the caller's portfolio member (any LangChain chat models).

    Supports invoke, stream, batch, their async twins, ``generate``, ``bind_tools`` (bound on
    every member when you bind: a member that cannot is named in the error) and
    ``with_structured_output`` (``function_calling``, ``json_schema`` or ``json_mode``, each
    honoured by the members' own implementation). ``temperature``, ``max_tokens`` and ``stop``
    (fields or call arguments) reach the member on every call; a per-call ``model`` is refused
    (it would bypass the bounds), as are unknown constructor arguments.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    palm: Palm
    """The pipeline: portfolio, bounds policy, store."""
    members: dict[str, BaseChatModel]
    """One chat model per portfolio member id (all of them, no others)."""
    model_name: str = "palm"
    """This deployment's name in traces (the routing run's ``ls_model_name``)."""
    anonymous: Literal["refuse", "default"] = "refuse"
    """Calls with no user id: refuse them, or serve the deployment default (nothing stored)."""
    on_block: Literal["reply", "raise"] = "reply"
    """A blocked request: answer with the policy's message, or raise ``DecisionBlocked``."""
    user_config_key: str = "user_id"
    """The ``configurable`` (or agent context) key holding the authenticated user id."""
    metadata_keys: Sequence[str] = Field(default=("thread_id",))
    """``configurable`` or agent-context keys passed to the policy as request metadata
    (``thread_id`` is passed as ``conversation_id``)."""
    temperature: float | None = None
    """Sampling temperature passed to the member (None: the member's own)."""
    max_tokens: int | None = None
    """Most new tokens, passed to the member (None: the member's own)."""
    stop: list[str] | None = None
    """Stop sequences passed to the member."""
    streaming: bool = False
    """Call members through their streaming path even for ``invoke``."""

    @model_validator(mode="after")
    def _check(self) -> PalmChatModel:
        ids = list(self.palm.portfolio.ids)
        missing = sorted(set(ids) - set(self.members))
        extra = sorted(set(self.members) - set(ids))
        if missing or extra:
            raise ValueError(
                f"members must have one chat model per portfolio member {ids}; "
                + "; ".join(
                    p
                    for p in (
                        f"missing {missing}" if missing else "",
                        f"not in the portfolio {extra}" if extra else "",
                    )
                    if p
                )
            )
        if self.cache not in (None, False):
            raise ValueError(
                "PalmChatModel answers per user: a response cache would serve one user's "
                "member to another. Cache the members instead (cache=False here)."
            )
        self.cache = False
        return self

    @property
    def _llm_type(self) -> str:
        return "palm-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "members": sorted(self.members),
            "policy": self.palm.policy.version,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop or self.stop, **kwargs)
        params["ls_provider"] = "palm"
        model = kwargs.get("model")
        params["ls_model_name"] = model if isinstance(model, str) else self.model_name
        return params

    def _get_invocation_params(
        self, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        params = super()._get_invocation_params(
            stop=stop, **{k: v for k, v in kwargs.items() if k not in _PRIVATE}
        )
        if kwargs.get("palm_tools"):
            params["tools"] = kwargs["palm_tools"]
        return params

    # -- the public entry points only capture the caller's config --------------------------
    @staticmethod
    def _capture(config: RunnableConfig | None, kwargs: dict[str, Any]) -> RunnableConfig:
        cfg = ensure_config(config)
        if "palm_call" not in kwargs:
            run_id = cfg.get("run_id") or uuid.uuid4()
            cfg["run_id"] = run_id
            kwargs["palm_call"] = _Call(cfg, run_id)
        return cfg

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        cfg = self._capture(config, kwargs)
        return super().invoke(input, cfg, stop=stop, **kwargs)

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        cfg = self._capture(config, kwargs)
        return await super().ainvoke(input, cfg, stop=stop, **kwargs)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        cfg = self._capture(config, kwargs)
        yield from super().stream(input, cfg, stop=stop, **kwargs)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        cfg = self._capture(config, kwargs)
        async for chunk in super().astream(input, cfg, stop=stop, **kwargs):
            yield chunk

    # -- who, and what the policy sees -------------------------------------------------------
    def _request(
        self, messages: list[BaseMessage], kwargs: dict[str, Any]
    ) -> tuple[str | None, list[dict[str, Any]], dict[str, Any]]:
        call = kwargs.get("palm_call")
        cfg = call.config if isinstance(call, _Call) else ensure_config()
        configurable = cfg.get("configurable") or {}
        runtime = configurable.get(_RUNTIME_KEY)
        context = getattr(runtime, "context", None)

        def lookup(key: str) -> Any:
            if configurable.get(key) is not None:
                return configurable[key]
            if isinstance(context, Mapping):
                return context.get(key)
            return getattr(context, key, None)

        user = kwargs.get("user_id")
        if user is None:
            user = lookup(self.user_config_key)
        if user is not None and (not isinstance(user, str) or not user):
            raise IdentityError(
                f"PalmChatModel: the user id must be a non-empty string; got {type(user).__name__}"
            )
        meta = {
            ("conversation_id" if k == "thread_id" else k): v
            for k in self.metadata_keys
            if (v := lookup(k)) is not None
        }
        return user, to_dicts(messages), meta

    def _no_user(self) -> IdentityError:
        return IdentityError(
            "PalmChatModel needs the authenticated user's id: pass user_id=..., "
            f'config["configurable"][{self.user_config_key!r}] or the agent context\'s '
            f"{self.user_config_key!r}; or build it with anonymous='default' to serve "
            "the deployment default to anonymous callers"
        )

    def _decide(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> Decision | _Blocked:
        user, msgs, meta = self._request(messages, kwargs)
        if user is None and self.anonymous == "refuse":
            raise self._no_user()
        try:
            if user is None:
                return default_decision(self.palm, msgs, meta)
            return self.palm.decide(user, msgs, meta)
        except DecisionBlocked as exc:
            if self.on_block == "raise":
                raise
            return _Blocked(exc.rule_id, exc.user_message)

    async def _adecide(
        self, messages: list[BaseMessage], kwargs: dict[str, Any]
    ) -> Decision | _Blocked:
        user, msgs, meta = self._request(messages, kwargs)
        if user is None and self.anonymous == "refuse":
            raise self._no_user()
        try:
            if user is None:
                return await adefault_decision(self.palm, msgs, meta)
            return await self.palm.adecide(user, msgs, meta)
        except DecisionBlocked as exc:
            if self.on_block == "raise":
                raise
            return _Blocked(exc.rule_id, exc.user_message)

    # -- calling the member ------------------------------------------------------------------
    def _member_call(
        self,
        decision: Decision,
        stop: list[str] | None,
        kwargs: dict[str, Any],
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
    ) -> tuple[BaseChatModel, RunnableConfig, list[str] | None, dict[str, Any]]:
        """The member, its child-run config, stop sequences and call arguments."""
        if "model" in kwargs:
            raise InvalidParameterError(
                f"PalmChatModel: parameter 'model' is not accepted per call ({kwargs['model']!r}):"
                f" the member is chosen per user within the bounds among {sorted(self.members)}"
            )
        member = self.members[decision.member]
        bound = (kwargs.get("palm_bound") or {}).get(decision.member, {})
        call: dict[str, Any] = {
            k: v
            for k, v in (("temperature", self.temperature), ("max_tokens", self.max_tokens))
            if v is not None
        }
        call.update(bound)
        call.update({k: v for k, v in kwargs.items() if k not in _PRIVATE})
        palm_call = kwargs.get("palm_call")
        if run_manager is not None:
            child = _tracer_child(
                run_manager.run_id,
                run_manager.inheritable_handlers,
                run_manager.inheritable_tags,
                run_manager.inheritable_metadata,
            )
        elif isinstance(palm_call, _Call):
            cfg = palm_call.config
            parent = CallbackManager.configure(
                cfg.get("callbacks"), None, False, cfg.get("tags"), None, cfg.get("metadata")
            )
            child = _tracer_child(
                palm_call.run_id,
                parent.inheritable_handlers,
                parent.inheritable_tags,
                parent.inheritable_metadata,
            )
        else:
            child = None
        config: RunnableConfig = {
            "callbacks": child if child is not None else [],
            "metadata": {"palm_decision_id": decision.decision_id},
        }
        return member, config, stop or self.stop, call

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
        decision = self._decide(messages, kwargs)
        if isinstance(decision, _Blocked):
            return _blocked_result(decision, self.model_name)
        member, config, stops, call = self._member_call(decision, stop, kwargs, run_manager)
        msg = member.invoke(messages, config, stop=stops, **call)
        return _result(msg, decision)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))
        decision = await self._adecide(messages, kwargs)
        if isinstance(decision, _Blocked):
            return _blocked_result(decision, self.model_name)
        member, config, stops, call = self._member_call(decision, stop, kwargs, run_manager)
        msg = await member.ainvoke(messages, config, stop=stops, **call)
        return _result(msg, decision)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        decision = self._decide(messages, kwargs)
        if isinstance(decision, _Blocked):
            yield _blocked_chunk(decision, self.model_name)
            return
        member, config, stops, call = self._member_call(decision, stop, kwargs, run_manager)
        first = True
        for chunk in member.stream(messages, config, stop=stops, **call):
            out = _chunk(chunk, decision if first else None)
            first = False
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
        decision = await self._adecide(messages, kwargs)
        if isinstance(decision, _Blocked):
            yield _blocked_chunk(decision, self.model_name)
            return
        member, config, stops, call = self._member_call(decision, stop, kwargs, run_manager)
        first = True
        async for chunk in member.astream(messages, config, stop=stops, **call):
            out = _chunk(chunk, decision if first else None)
            first = False
            if run_manager is not None:
                await run_manager.on_llm_new_token(out.text, chunk=out)
            yield out

    # -- tools and structured output: bound on every member, checked now ---------------------
    def _bind_each(
        self, what: str, bind: Callable[[str, BaseChatModel], Runnable[Any, Any]]
    ) -> dict[str, dict[str, Any]]:
        """``bind`` on every member; the call arguments each binding adds, by member id."""
        out: dict[str, dict[str, Any]] = {}
        failed: list[str] = []
        for name, member in self.members.items():
            try:
                out[name] = _unwrap(bind(name, member), member)
            except (NotImplementedError, TypeError, ValueError) as exc:
                failed.append(f"{name!r} ({type(member).__name__}): {exc or type(exc).__name__}")
        if failed:
            raise NotImplementedError(
                f"PalmChatModel.{what}: every member must support it (any of them may serve a "
                f"user); these cannot: {'; '.join(failed)}"
            )
        return out

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind ``tools`` on every member now (with ``tool_choice``, ``strict``,
        ``parallel_tool_calls`` and any other argument, passed to each member's own
        ``bind_tools``); each call uses the chosen member's binding."""
        extra = dict(kwargs)
        if strict is not None:
            extra["strict"] = strict
        if parallel_tool_calls is not None:
            extra["parallel_tool_calls"] = parallel_tool_calls
        if tool_choice is not None:
            extra["tool_choice"] = tool_choice

        def bind(name: str, member: BaseChatModel) -> Runnable[Any, Any]:
            return member.bind_tools(tools, **extra)

        per_member = self._bind_each("bind_tools", bind)
        return self.bind(
            palm_bound=per_member, palm_tools=[convert_to_openai_tool(t) for t in tools]
        )

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """Structured output by ``method``, through each member's own ``with_structured_output``.

        ``function_calling`` parses the tool call, ``json_schema`` and ``json_mode`` the JSON
        reply. A member that does not support ``method`` is named in the error (now, not at
        the first call).
        """
        if kwargs:
            raise InvalidParameterError(
                f"with_structured_output: unsupported argument(s) {sorted(kwargs)}"
            )
        if method not in ("function_calling", "json_schema", "json_mode"):
            raise InvalidParameterError(
                "with_structured_output: method must be 'function_calling', 'json_schema' or "
                f"'json_mode'; got {method!r}"
            )
        options: dict[str, Any] = {"method": method}
        if strict is not None:
            options["strict"] = strict

        def bind(name: str, member: BaseChatModel) -> Runnable[Any, Any]:
            if type(member).with_structured_output is BaseChatModel.with_structured_output:
                if method != "function_calling" or strict is not None:
                    raise NotImplementedError(
                        f"only the default method (function_calling), got {options}"
                    )
                out = member.with_structured_output(schema)
            else:
                out = member.with_structured_output(schema, **options)
            first = getattr(out, "first", None)
            if first is None:
                raise ValueError("its structured output is not a (model | parser) sequence")
            return first  # type: ignore[no-any-return]

        per_member = self._bind_each("with_structured_output", bind)
        llm = self.bind(
            palm_bound=per_member,
            ls_structured_output_format={"kwargs": options, "schema": schema},
        )
        parser = _parser(schema, method)
        if include_raw:
            parse = RunnablePassthrough.assign(
                parsed=RunnableLambda(itemgetter("raw")) | parser, parsing_error=lambda _: None
            )
            none = RunnablePassthrough.assign(parsed=lambda _: None)
            return RunnableMap(raw=llm) | parse.with_fallbacks(
                [none], exception_key="parsing_error"
            )
        out: Runnable[LanguageModelInput, Any] = llm | parser
        return out


def _parser(schema: dict[str, Any] | type, method: str) -> Runnable[Any, Any]:
    pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    if method == "function_calling":
        if pydantic:
            return PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
        key = convert_to_openai_tool(schema)["function"]["name"]
        return JsonOutputKeyToolsParser(key_name=key, first_tool_only=True)
    if pydantic:
        return PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
    return JsonOutputParser()


def _unwrap(bound: Runnable[Any, Any], member: BaseChatModel) -> dict[str, Any]:
    """The call arguments a member's binding adds (the binding itself is not called: inside our
    run it would pull our callbacks in again)."""
    kwargs: dict[str, Any] = {}
    while isinstance(bound, RunnableBinding):
        kwargs = {**bound.kwargs, **kwargs}
        bound = bound.bound
    if bound is not member:
        raise ValueError(f"its binding wraps {type(bound).__name__}, not the member itself")
    return kwargs


def _tracer_child(
    parent_run_id: uuid.UUID,
    handlers: Sequence[Any],
    tags: list[str],
    metadata: dict[str, Any],
) -> BaseCallbackManager:
    """Callbacks for the member's run: a child of ours, seen by tracers only.

    Tracers (LangSmith, ``astream_log``) show the member's run with its own model name and
    provider. Other handlers (token streams, usage counters, agent message streams) see one
    chat-model run per call, so no token or cost is counted twice.
    """
    manager = CallbackManager(handlers=[], parent_run_id=parent_run_id)
    manager.set_handlers([h for h in handlers if isinstance(h, BaseTracer)])
    manager.add_tags(tags)
    manager.add_metadata(metadata)
    return manager


def _result(msg: BaseMessage, decision: Decision) -> ChatResult:
    palm = decision_metadata(decision)
    msg = msg.model_copy(
        update={"id": None, "response_metadata": {**msg.response_metadata, "palm": palm}}
    )
    return ChatResult(generations=[ChatGeneration(message=msg)], llm_output={"palm": palm})


def _blocked_meta(blocked: _Blocked, name: str) -> dict[str, Any]:
    return {
        "palm": {"blocked": True, "rule_id": blocked.rule_id},
        "finish_reason": "content_filter",
        "model_name": name,
    }


def _blocked_result(blocked: _Blocked, name: str) -> ChatResult:
    msg = AIMessage(content=blocked.message, response_metadata=_blocked_meta(blocked, name))
    return ChatResult(
        generations=[ChatGeneration(message=msg)], llm_output={"palm": _blocked_meta(blocked, name)}
    )


def _blocked_chunk(blocked: _Blocked, name: str) -> ChatGenerationChunk:
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content=blocked.message,
            response_metadata=_blocked_meta(blocked, name),
            chunk_position="last",
        )
    )


def _chunk(chunk: BaseMessageChunk, decision: Decision | None) -> ChatGenerationChunk:
    if not isinstance(chunk, AIMessageChunk):
        chunk = AIMessageChunk(content=chunk.content)
    update: dict[str, Any] = {"id": None}  # ours, not the member's run id
    if decision is not None:
        update["response_metadata"] = {
            **chunk.response_metadata,
            "palm": decision_metadata(decision),
        }
    return ChatGenerationChunk(message=chunk.model_copy(update=update))
