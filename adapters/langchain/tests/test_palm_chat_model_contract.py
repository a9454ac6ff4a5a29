"""PalmChatModel's contract beyond the standard suites: who the user is, anonymous callers,
traces, blocking, capabilities checked when binding, parameters that reach the members."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from langchain_core.outputs import ChatGeneration
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run
from langchain_fixtures import BLOCK_WORD, BREVITY, UserContext, make_palm, user
from pydantic import BaseModel, ValidationError

from palm_langchain import OnnxChatModel, PalmChatModel, decision_of
from palm_middleware import ExplicitWeights, IdentityError, InvalidParameterError, Palm
from palm_middleware.decision import Decision


class Recorder(BaseTracer):
    """An in-memory tracer: every finished run, as LangSmith would receive it."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[Run] = []

    def _persist_run(self, run: Run) -> None:
        pass

    def _end_trace(self, run: Run) -> None:
        if run.parent_run_id is None:  # roots; their children hang below
            self.runs.append(run)
        super()._end_trace(run)

    def _on_run_update(self, run: Run) -> None:
        pass


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class City(BaseModel):
    city: str


def bad_kwargs(**kwargs: Any) -> dict[str, Any]:
    """Keyword arguments a constructor must refuse (typed loosely on purpose: bad input)."""
    return kwargs


def ls(run: Run) -> tuple[str, str]:
    meta = run.extra["metadata"]
    return meta["ls_provider"], meta["ls_model_name"]


@pytest.fixture
def llm(palm: Palm, onnx_members: dict[str, BaseChatModel]) -> PalmChatModel:
    return PalmChatModel(palm=palm, members=onnx_members)


# -- who the user is -------------------------------------------------------------------------
def test_user_from_generate_configurable_and_agent_context(
    palm: Palm, tool_members: dict[str, BaseChatModel]
) -> None:
    palm.record_feedback("alice", ExplicitWeights(BREVITY, confidence=10))
    llm = PalmChatModel(palm=palm, members=tool_members)
    out = llm.generate([[HumanMessage("weather in Paris?")]], user_id="alice")
    gen = out.generations[0][0]
    assert isinstance(gen, ChatGeneration)
    assert gen.message.response_metadata["palm"]["member"] == "terse"
    assert decision_of(llm.invoke("hi", config=user("alice")))["member"] == "terse"
    agent = create_agent(llm, tools=[weather], context_schema=UserContext)
    done = agent.invoke(
        {"messages": [HumanMessage("weather in Paris?")]}, context={"user_id": "alice"}
    )
    assert done["messages"][-1].content == "terse says sunny in Paris"
    done = asyncio.run(
        agent.ainvoke({"messages": [HumanMessage("weather in Paris?")]}, context={"user_id": "bob"})
    )
    assert done["messages"][-1].content == "balanced says sunny in Paris"
    with pytest.raises(IdentityError, match="non-empty string"):
        llm.invoke("hi", user_id=42)


def test_anonymous_refused_by_default_served_default_on_request(
    llm: PalmChatModel, palm: Palm
) -> None:
    with pytest.raises(IdentityError, match="anonymous='default'"):
        llm.invoke("hi")
    with pytest.raises(IdentityError):
        asyncio.run(llm.ainvoke("hi"))
    open_llm = llm.model_copy(update={"anonymous": "default"})
    reply = open_llm.invoke("hi")
    assert decision_of(reply)["member"] == "balanced" and decision_of(reply)["used_default"]
    assert "anonymous" in decision_of(reply)["explanation"]
    chunks = list(open_llm.stream("hi"))
    assert chunks[0].response_metadata["palm"]["member"] == "balanced"
    # Nothing stored: no profile, no event, no audit record.
    assert palm.store.count_profiles() == 0 and palm.store.audit() == [] and not palm.pending_audit
    # Bounds still apply: the policy's block rule answers anonymous callers too.
    blocked = open_llm.invoke(f"about {BLOCK_WORD}")
    assert blocked.response_metadata["palm"] == {"blocked": True, "rule_id": "no-forbidden-topic"}


# -- traces ----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["invoke", "stream", "ainvoke", "astream"])
def test_member_runs_are_child_runs_with_their_own_model(llm: PalmChatModel, how: str) -> None:
    rec = Recorder()
    cfg: RunnableConfig = {**user("alice"), "callbacks": [rec]}
    if how == "invoke":
        llm.invoke("hi", config=cfg, temperature=0.0)
    elif how == "stream":
        list(llm.stream("hi", config=cfg, temperature=0.0))
    elif how == "ainvoke":
        asyncio.run(llm.ainvoke("hi", config=cfg, temperature=0.0))
    else:

        async def go() -> None:
            async for _ in llm.astream("hi", config=cfg, temperature=0.0):
                pass

        asyncio.run(go())
    [root] = rec.runs
    assert root.run_type == "llm" and ls(root) == ("palm", "palm")
    [child] = root.child_runs
    assert child.parent_run_id == root.id
    assert ls(child) == ("onnxruntime", "balanced")
    assert child.extra["invocation_params"]["temperature"] == 0.0  # reached the member
    assert child.outputs is not None and root.outputs is not None
    assert not root.error and not child.error


def test_blocked_request_is_a_chat_model_run_ending_with_the_policys_message(
    llm: PalmChatModel,
) -> None:
    rec = Recorder()
    reply = llm.invoke(f"tell me about {BLOCK_WORD}", config={**user("a"), "callbacks": [rec]})
    [root] = rec.runs
    assert root.run_type == "llm" and not root.error and root.child_runs == []
    assert root.outputs is not None
    text = root.outputs["generations"][0][0]["message"]["kwargs"]["content"]
    assert text == reply.content == "I can't help with that topic."
    chunks = list(llm.stream(f"tell me about {BLOCK_WORD}", config=user("a")))
    assert "".join(str(c.content) for c in chunks) == "I can't help with that topic."


# -- capabilities, checked when built or bound -----------------------------------------------
def test_members_checked_at_construction(palm: Palm, tool_members: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=r"missing \['playful'\]"):
        PalmChatModel(palm=palm, members={k: v for k, v in tool_members.items() if k != "playful"})
    with pytest.raises(ValidationError, match=r"not in the portfolio \['extra'\]"):
        PalmChatModel(palm=palm, members={**tool_members, "extra": tool_members["terse"]})
    with pytest.raises(ValidationError, match="timeout"):
        PalmChatModel(palm=palm, members=tool_members, **bad_kwargs(timeout=5))
    with pytest.raises(ValidationError, match="cache"):
        PalmChatModel(palm=palm, members=tool_members, cache=True)


def test_tools_bind_over_onnx_members(llm: PalmChatModel) -> None:
    """ONNX members call tools and hold to schemas through a grammar (issue 15): binding over
    them succeeds, and each member gets its own binding (test_langchain_structured.py runs it)."""
    pytest.importorskip("llguidance")
    bound = llm.bind_tools([weather], tool_choice="any")
    per_member = bound.kwargs["palm_bound"]  # type: ignore[attr-defined]
    assert sorted(per_member) == ["balanced", "playful", "terse"]
    assert all(b["tool_choice"] == "required" for b in per_member.values())
    structured = llm.with_structured_output(City, method="json_schema")
    first = structured.first.kwargs["palm_bound"]  # type: ignore[attr-defined]
    assert all(b["response_format"]["type"] == "json_schema" for b in first.values())


def test_bind_tools_options_reach_the_member(palm: Palm, tool_members: dict[str, Any]) -> None:
    llm = PalmChatModel(palm=palm, members=tool_members)
    msg = llm.bind_tools(
        [weather], tool_choice="weather", strict=True, parallel_tool_calls=False
    ).invoke("weather in Paris?", config=user("alice"))
    assert msg.tool_calls[0]["args"] == {"city": "Paris"}
    assert msg.response_metadata["received"] == {
        "tool_choice": "weather",
        "strict": True,
        "parallel_tool_calls": False,
    }


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_structured_output_method_is_honoured(
    palm: Palm, tool_members: dict[str, Any], method: str
) -> None:
    llm = PalmChatModel(palm=palm, members=tool_members)
    raw = llm.with_structured_output(City, method=method, include_raw=True).invoke(  # type: ignore[arg-type]
        "Give the 'city' of the Eiffel Tower, as JSON.", config=user("alice")
    )
    assert isinstance(raw, dict) and isinstance(raw["parsed"], City)
    received = raw["raw"].response_metadata["received"]
    if method == "function_calling":
        assert received["tool_choice"] == "City" and raw["raw"].tool_calls
    else:
        want = "json_schema" if method == "json_schema" else "json_object"
        assert received["response_format"]["type"] == want and not raw["raw"].tool_calls


def test_sampling_parameters_reach_members_or_are_refused(llm: PalmChatModel) -> None:
    assert llm.invoke("hi", config=user("a")).usage_metadata["output_tokens"] == 6  # type: ignore[index]
    short = llm.model_copy(update={"max_tokens": 2})
    assert short.invoke("hi", config=user("a")).usage_metadata["output_tokens"] == 2  # type: ignore[index]
    assert llm.invoke("hi", config=user("a"), max_tokens=3).usage_metadata["output_tokens"] == 3  # type: ignore[index]
    with pytest.raises(InvalidParameterError, match="top_x"):
        llm.invoke("hi", config=user("a"), top_x=1)
    with pytest.raises(InvalidParameterError, match="'model' is not accepted"):
        llm.invoke("hi", config=user("a"), model="terse")
    member = llm.members["terse"]
    assert isinstance(member, OnnxChatModel)
    with pytest.raises(ValidationError, match="api_key"):
        OnnxChatModel(engine=member.engine, **bad_kwargs(api_key="x"))
    with pytest.raises(InvalidParameterError, match="'model' must be 'terse'"):
        member.invoke("hi", model="other")


def test_async_calls_decide_off_the_event_loop(onnx_members: dict[str, BaseChatModel]) -> None:
    threads: list[int] = []

    class Recording(Palm):
        def decide(
            self,
            user: str,
            messages: Sequence[Mapping[str, Any]] = (),
            metadata: Mapping[str, Any] | None = None,
            *,
            compare: str | None = None,
        ) -> Decision:
            threads.append(threading.get_ident())
            return super().decide(user, messages, metadata, compare=compare)

    base = make_palm()
    palm = Recording(base.portfolio, base.policy, base.store, embedder=None)
    llm = PalmChatModel(palm=palm, members=onnx_members)

    async def go() -> int:
        await llm.ainvoke("hi", config=user("a"))
        async for _ in llm.astream("hi", config=user("a")):
            pass
        return threading.get_ident()

    loop_thread = asyncio.run(go())
    assert len(threads) == 2 and loop_thread not in threads
