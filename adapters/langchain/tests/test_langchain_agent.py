"""PalmAgentMiddleware in create_agent with a tool: per-user swap, blocking, streaming, async."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware.types import InputAgentState
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage
from langchain_core.tools import tool
from langchain_fixtures import BLOCK_WORD, BREVITY, UserContext, user

from palm_langchain import PalmAgentMiddleware, PalmChatModel
from palm_middleware import ExplicitWeights, IdentityError, Palm


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def ask(text: str) -> InputAgentState:
    return {"messages": [{"role": "user", "content": text}]}


@pytest.fixture
def agent(palm: Palm, tool_members: dict[str, BaseChatModel]) -> Any:
    return create_agent(
        tool_members["balanced"],
        tools=[weather],
        middleware=[PalmAgentMiddleware(palm, tool_members)],
    )


def final(out: dict[str, Any]) -> str:
    return str(out["messages"][-1].content)


def test_agent_swaps_model_per_user_through_the_tool_loop(agent: Any, palm: Palm) -> None:
    palm.record_feedback("alice", ExplicitWeights(BREVITY, confidence=10))
    out = agent.invoke(ask("weather in Paris?"), user("alice"))
    assert any(
        isinstance(m, ToolMessage) and m.content == "sunny in Paris" for m in out["messages"]
    )
    assert final(out) == "terse says sunny in Paris"
    assert out["palm_decision"]["member"] == "terse"
    assert (
        final(agent.invoke(ask("weather in Paris?"), user("bob"))) == "balanced says sunny in Paris"
    )


def test_agent_async_and_context(palm: Palm, tool_members: dict[str, BaseChatModel]) -> None:
    palm.record_feedback("alice", ExplicitWeights(BREVITY, confidence=10))
    agent = create_agent(
        tool_members["balanced"],
        tools=[weather],
        middleware=[PalmAgentMiddleware(palm, tool_members)],
        context_schema=UserContext,
    )
    out = asyncio.run(agent.ainvoke(ask("weather in Paris?"), context={"user_id": "alice"}))
    assert final(out) == "terse says sunny in Paris"


def test_agent_streams_messages(agent: Any, palm: Palm) -> None:
    palm.record_feedback("alice", ExplicitWeights(BREVITY, confidence=10))
    tokens = [
        m.content
        for m, _ in agent.stream(ask("weather in Paris?"), user("alice"), stream_mode="messages")
        if isinstance(m, AIMessageChunk) and isinstance(m.content, str) and m.content
    ]
    assert "".join(tokens).strip() == "terse says sunny in Paris"
    assert len(tokens) >= 3  # token by token, each once


def test_agent_blocks_before_the_model(agent: Any) -> None:
    out = agent.invoke(ask(f"tell me about {BLOCK_WORD}"), user("alice"))
    last = out["messages"][-1]
    assert isinstance(last, AIMessage) and last.content == "I can't help with that topic."
    assert last.response_metadata["palm"] == {"blocked": True, "rule_id": "no-forbidden-topic"}
    assert not any(isinstance(m, ToolMessage) for m in out["messages"])


def test_agent_needs_a_user(agent: Any) -> None:
    with pytest.raises(IdentityError):
        agent.invoke(ask("hi"))


def test_palm_chat_model_as_the_agent_model(
    palm: Palm, tool_members: dict[str, BaseChatModel]
) -> None:
    palm.record_feedback("alice", ExplicitWeights(BREVITY, confidence=10))
    agent = create_agent(PalmChatModel(palm=palm, members=tool_members), tools=[weather])
    assert (
        final(agent.invoke(ask("weather in Paris?"), user("alice"))) == "terse says sunny in Paris"
    )
    assert (
        final(agent.invoke(ask("weather in Paris?"), user("bob"))) == "balanced says sunny in Paris"
    )
    tokens = [
        m.content
        for m, _ in agent.stream(ask("weather in Paris?"), user("alice"), stream_mode="messages")
        if isinstance(m, AIMessageChunk) and isinstance(m.content, str) and m.content
    ]
    assert "".join(tokens).strip() == "terse says sunny in Paris"


def test_middleware_requires_every_member(
    palm: Palm, tool_members: dict[str, BaseChatModel]
) -> None:
    with pytest.raises(ValueError, match="playful"):
        PalmAgentMiddleware(palm, {k: v for k, v in tool_members.items() if k != "playful"})


def test_agent_passes_the_apps_authenticated_metadata(
    palm: Palm, tool_members: dict[str, BaseChatModel]
) -> None:
    from types import SimpleNamespace

    mw = PalmAgentMiddleware(palm, tool_members)
    runtime = SimpleNamespace(context={"user_id": "u1", "cohort": "minor", "thread_id": "t9"})
    assert mw._metadata(runtime) == {"cohort": "minor", "conversation_id": "t9"}
