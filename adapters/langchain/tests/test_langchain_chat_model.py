"""PalmChatModel in LCEL chains: invoke, stream, batch, async, tools, structured output."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langchain_fixtures import BLOCK_WORD, BREVITY, user
from pydantic import BaseModel

from palm_langchain import PalmChatModel, PalmFeedback, decision_of
from palm_middleware import DecisionBlocked, ExplicitWeights, IdentityError, Palm

PROMPT = ChatPromptTemplate.from_messages([("system", "Be helpful."), ("user", "{q}")])


@pytest.fixture
def llm(palm: Palm, onnx_members: dict[str, BaseChatModel]) -> PalmChatModel:
    return PalmChatModel(palm=palm, members=onnx_members)


def member_of(msg: Any) -> str:
    return str(decision_of(msg)["member"])


def test_invoke_in_chain_routes_per_user(llm: PalmChatModel) -> None:
    chain = PROMPT | llm
    a = chain.invoke({"q": "hi"}, config=user("alice"))
    assert a.content and member_of(a) == "balanced"
    assert a.usage_metadata is not None and a.usage_metadata["output_tokens"] == 6
    PalmFeedback(llm.palm).set_weights(user("alice"), BREVITY, confidence=10)
    assert member_of(chain.invoke({"q": "hi"}, config=user("alice"))) == "terse"
    assert member_of(chain.invoke({"q": "hi"}, config=user("bob"))) == "balanced"
    # Direct invoke with a config routes too (not only inside a sequence).
    assert member_of(llm.invoke("hi", config=user("alice"))) == "terse"
    text = (PROMPT | llm | StrOutputParser()).invoke({"q": "hi"}, config=user("bob"))
    assert isinstance(text, str) and text


def test_stream_in_chain(llm: PalmChatModel) -> None:
    llm.palm.record_feedback("carol", ExplicitWeights(BREVITY, confidence=10))
    chunks = list((PROMPT | llm).stream({"q": "hi"}, config=user("carol")))
    assert len(chunks) >= 2
    full = chunks[0]
    assert isinstance(full, AIMessageChunk)
    for c in chunks[1:]:
        assert isinstance(c, AIMessageChunk)
        full = full + c
    assert member_of(full) == "terse"
    assert full.content
    texts = list((PROMPT | llm | StrOutputParser()).stream({"q": "hi"}, config=user("bob")))
    assert len(texts) >= 2


def test_batch_uses_each_configs_user(llm: PalmChatModel) -> None:
    llm.palm.record_feedback("alice", ExplicitWeights(BREVITY, confidence=10))
    out = (PROMPT | llm).batch([{"q": "a"}, {"q": "b"}], config=[user("alice"), user("bob")])
    assert [member_of(m) for m in out] == ["terse", "balanced"]


def test_async(llm: PalmChatModel) -> None:
    llm.palm.record_feedback("alice", ExplicitWeights(BREVITY, confidence=10))

    async def go() -> tuple[Any, list[Any], list[Any]]:
        one = await (PROMPT | llm).ainvoke({"q": "hi"}, config=user("alice"))
        chunks = [c async for c in (PROMPT | llm).astream({"q": "hi"}, config=user("bob"))]
        many = await (PROMPT | llm).abatch(
            [{"q": "a"}, {"q": "b"}], config=[user("alice"), user("bob")]
        )
        return one, chunks, many

    one, chunks, many = asyncio.run(go())
    assert member_of(one) == "terse"
    assert len(chunks) >= 2 and "palm" in chunks[0].response_metadata
    assert [member_of(m) for m in many] == ["terse", "balanced"]


def test_callbacks_see_the_decision(llm: PalmChatModel) -> None:
    seen: dict[str, Any] = {}

    class Spy(BaseCallbackHandler):
        def on_chat_model_start(self, serialized: Any, messages: Any, **kw: Any) -> None:
            seen.setdefault("starts", []).append(kw["metadata"]["ls_provider"])

        def on_llm_end(self, response: Any, **kw: Any) -> None:
            seen["end"] = response.llm_output["palm"]

    reply = llm.invoke("hi", config={**user("dora"), "callbacks": [Spy()]})
    # One chat-model run for handlers that are not tracers: nothing is counted twice.
    assert seen["starts"] == ["palm"]
    assert seen["end"]["member"] == "balanced" == member_of(reply)
    assert seen["end"]["decision_id"] == decision_of(reply)["decision_id"]
    assert set(seen["end"]["weights"]) == {"safety", "helpfulness", "humor", "brevity"}


def test_no_user_and_blocked(llm: PalmChatModel) -> None:
    with pytest.raises(IdentityError, match="user_id"):
        llm.invoke("hi")
    blocked = llm.invoke(f"about {BLOCK_WORD}", config=user("alice"))
    assert blocked.content == "I can't help with that topic."
    assert blocked.response_metadata["palm"] == {"blocked": True, "rule_id": "no-forbidden-topic"}
    raising = llm.model_copy(update={"on_block": "raise"})
    with pytest.raises(DecisionBlocked) as info:
        raising.invoke(f"about {BLOCK_WORD}", config=user("alice"))
    assert info.value.rule_id == "no-forbidden-topic"


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class City(BaseModel):
    city: str


def test_tools_and_structured_output(palm: Palm, tool_members: dict[str, BaseChatModel]) -> None:
    llm = PalmChatModel(palm=palm, members=tool_members)
    msg = llm.bind_tools([weather]).invoke("weather in Paris?", config=user("alice"))
    assert msg.tool_calls[0]["name"] == "weather"
    assert member_of(msg) == "balanced"
    out = llm.with_structured_output(City).invoke("Where is Paris?", config=user("alice"))
    assert out == City(city="Paris")


def test_feedback_helper(llm: PalmChatModel) -> None:
    fb = PalmFeedback(llm.palm)
    reply = llm.invoke("hi", config=user("erin"))
    assert fb.thumb(user("erin"), reply, up=True)
    assert fb.regenerate(user("erin"), reply)
    with pytest.raises(IdentityError):  # erin's decision, rated as frank
        fb.thumb(user("frank"), reply, up=False)
    assert llm.palm.profile("erin").n_events == 2
