"""Structured output and tool calls of ``OnnxChatModel``, constrained by a grammar.

The member is a tiny random decoder (tests/engines/tiny.py; it stands for a small local member
whose chat template has no tool format): its answers parse and validate only because every
step's logits are masked to what the schema allows. Context 1,024 positions (the tools'
instructions are in the prompt).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import jsonschema
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_fixtures import REWARDS, make_palm, user
from pydantic import BaseModel, Field

from palm_langchain import OnnxChatModel, PalmChatModel
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.exceptions import InvalidParameterError
from tests.engines.tiny import train_tokenizer, write_model

pytest.importorskip("llguidance")


class Person(BaseModel):
    """A person."""

    name: str = Field(max_length=10)
    age: int = Field(ge=0, le=120)
    role: Literal["admin", "user"]


@tool
def get_weather(city: str, days: int) -> str:
    """Forecast for a city."""
    return f"{city}: sunny for {days} days"


@tool
def get_time(zone: Literal["UTC", "CET"]) -> str:
    """The time in a zone."""
    return "12:00"


SCHEMAS = {t.name: t.args_schema.model_json_schema() for t in (get_weather, get_time)}  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> OnnxChatModel:
    root: Path = tmp_path_factory.mktemp("lc-structured")
    train_tokenizer(root / "tok")
    write_model(root / "m", root / "tok" / "tokenizer.json", seed=2, max_positions=1024)
    return OnnxChatModel(engine=OnnxEngine(root / "m", name="m"), max_tokens=80)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_json_schema_returns_the_pydantic_model(member: OnnxChatModel, temperature: float) -> None:
    llm = member.model_copy(update={"temperature": temperature, "seed": 5})
    out = llm.with_structured_output(Person, method="json_schema").invoke("Who is Ada?")
    assert isinstance(out, Person)


def test_json_schema_dict_and_include_raw(member: OnnxChatModel) -> None:
    schema = Person.model_json_schema()
    out = member.with_structured_output(schema, include_raw=True).invoke("Who is Ada?")
    assert out["parsing_error"] is None
    jsonschema.validate(out["parsed"], schema)
    assert json.loads(out["raw"].content) == out["parsed"]


def test_json_mode_returns_an_object(member: OnnxChatModel) -> None:
    out = member.with_structured_output(None, method="json_mode").invoke("JSON please")
    assert isinstance(out, dict)


def test_streamed_structured_output(member: OnnxChatModel) -> None:
    llm = member.bind(
        response_format={
            "type": "json_schema",
            "json_schema": {"schema": Person.model_json_schema()},
        }
    )
    chunks = list(llm.stream("Who is Ada?"))
    assert len(chunks) > 2
    Person.model_validate_json("".join(str(c.content) for c in chunks))


@pytest.mark.parametrize("choice", ["any", "get_time", True])
def test_bound_tools_are_called(member: OnnxChatModel, choice: Any) -> None:
    tools = [get_time] if choice is True else [get_weather, get_time]
    msg = member.bind_tools(tools, tool_choice=choice).invoke("Weather in Oslo?")
    assert isinstance(msg, AIMessage) and msg.content == ""
    (call,) = msg.tool_calls
    assert call["id"] and call["type"] == "tool_call"
    if choice == "get_time" or choice is True:
        assert call["name"] == "get_time"
    jsonschema.validate(call["args"], SCHEMAS[call["name"]])
    assert msg.response_metadata["finish_reason"] == "tool_calls"
    # The call runs as a LangChain tool, and its result goes back as a tool turn.
    result = {"get_weather": get_weather, "get_time": get_time}[call["name"]].invoke(call)
    assert isinstance(result, ToolMessage)
    follow = member.bind_tools(tools).invoke([HumanMessage("Weather in Oslo?"), msg, result])
    if follow.tool_calls:
        jsonschema.validate(follow.tool_calls[0]["args"], SCHEMAS[follow.tool_calls[0]["name"]])
    else:
        assert isinstance(follow.content, str) and not follow.content.startswith("{")


def test_bind_options_are_accepted(member: OnnxChatModel) -> None:
    """``strict`` (always so) and ``parallel_tool_calls`` (one call per answer) are accepted."""
    llm = member.bind_tools([get_time], tool_choice=True, strict=True, parallel_tool_calls=False)
    (call,) = llm.invoke("Time?").tool_calls
    assert call["name"] == "get_time"


def test_streamed_tool_call(member: OnnxChatModel) -> None:
    llm = member.bind_tools([get_time], tool_choice="any")
    chunks = list(llm.stream("Time?"))
    msg: AIMessageChunk = chunks[0]  # type: ignore[assignment]
    for c in chunks[1:]:
        msg = msg + c  # type: ignore[assignment]
    (call,) = msg.tool_calls
    jsonschema.validate(call["args"], SCHEMAS["get_time"])


async def test_async_structured_output(member: OnnxChatModel) -> None:
    out = await member.with_structured_output(Person).ainvoke("Who is Ada?")
    assert isinstance(out, Person)


def test_bad_tool_choice_is_refused_at_bind(member: OnnxChatModel) -> None:
    with pytest.raises(InvalidParameterError, match="nope"):
        member.bind_tools([get_weather], tool_choice="nope")
    with pytest.raises(InvalidParameterError, match="response_format.type"):
        member.invoke("x", response_format={"type": "xml"})


def test_palm_chat_model_over_onnx_members(tmp_path: Path) -> None:
    """The whole stack: PalmChatModel picks a member per user; each ONNX member holds its
    answer to the schema or the tool."""
    train_tokenizer(tmp_path / "tok")
    members: dict[str, BaseChatModel] = {}
    for seed, name in enumerate(REWARDS):
        write_model(tmp_path / name, tmp_path / "tok" / "tokenizer.json", seed, max_positions=1024)
        engine = OnnxEngine(tmp_path / name, name=name)
        members[name] = OnnxChatModel(engine=engine, max_tokens=80)
    llm = PalmChatModel(palm=make_palm(), members=members)
    out = llm.with_structured_output(Person, method="json_schema").invoke(
        "Who is Ada?", config=user("alice")
    )
    assert isinstance(out, Person)
    msg = llm.bind_tools([get_time], tool_choice="get_time").invoke("Time?", config=user("bob"))
    assert msg.tool_calls[0]["name"] == "get_time"
    assert msg.tool_calls[0]["args"]["zone"] in ("UTC", "CET")
