"""Constrained output of local members through a real proxy, read with the ``openai`` client.

The members are the tiny random decoders of ``litellm_proxy_fixtures`` (their text is noise):
what makes their answers valid JSON, schema-valid objects and well-formed tool calls is the
grammar alone, which is the point. Their context is 1,024 positions here (the tools'
instructions are part of the prompt).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from litellm_proxy_fixtures import POLICY, Proxy, build_deployment, start_proxy, stop_proxy

from tests.engines.tiny import train_tokenizer, write_model

pytest.importorskip("llguidance")

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 10},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Forecast", "parameters": WEATHER},
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {
                "type": "object",
                "properties": {"zone": {"enum": ["UTC", "CET"]}},
                "required": ["zone"],
                "additionalProperties": False,
            },
        },
    },
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
REPLY_RULE = """\
  - id: no-zebra-replies
    layer: law
    when: {topic: zoo}
    action: block
    message: No zebras here.
    on: [reply]
"""
ASK: list[Any] = [{"role": "user", "content": "Who is Ada? Reply in JSON."}]


@pytest.fixture(scope="module")
def long_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    root: Path = tmp_path_factory.mktemp("structured")
    train_tokenizer(root / "tok")
    for name, seed in (("balanced", 0), ("playful", 2), ("base", 1)):
        write_model(
            root / "models" / name, root / "tok" / "tokenizer.json", seed, max_positions=1024
        )
    dep = build_deployment(root)
    # A reply-only rule: a tool call's arguments are the member's words and are checked too.
    policy = POLICY.replace("topics:\n", "topics:\n  zoo: {keywords: [zebra]}\n")
    policy += REPLY_RULE
    (root / "policy.yaml").write_text(policy)
    proxy = start_proxy(dep)
    yield proxy
    stop_proxy(proxy)


@pytest.fixture(scope="module")
def admin(long_proxy: Proxy) -> Iterator[openai.OpenAI]:
    """The master key, which may name a member directly (no routing: a known model)."""
    with openai.OpenAI(
        base_url=long_proxy.url + "/v1",
        api_key=long_proxy.deployment.master_key,
        max_retries=0,
        timeout=60,
    ) as client:
        yield client


def chat(client: openai.OpenAI, **kw: Any) -> Any:
    """``chat.completions.create`` with plain JSON values (typed loosely on purpose)."""
    return client.chat.completions.create(**kw)


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}


@pytest.mark.parametrize("member", ["balanced", "playful"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_json_schema_answers_validate(
    admin: openai.OpenAI, member: str, temperature: float
) -> None:
    out = chat(
        admin,
        model=member,
        messages=ASK,
        max_tokens=120,
        temperature=temperature,
        seed=3,
        response_format=json_schema(PERSON),
    )
    choice = out.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.content is not None
    jsonschema.validate(json.loads(choice.message.content), PERSON)


def test_json_object_answers_are_objects(admin: openai.OpenAI) -> None:
    out = chat(
        admin,
        model="playful",
        messages=ASK,
        max_tokens=120,
        response_format={"type": "json_object"},
    )
    assert out.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(out.choices[0].message.content or ""), dict)


def test_json_cut_by_max_tokens_says_length(admin: openai.OpenAI) -> None:
    """No schema bounds a key's length: ``balanced`` rambles in one; ``length`` says so."""
    out = chat(
        admin,
        model="balanced",
        messages=ASK,
        max_tokens=20,
        response_format={"type": "json_object"},
    )
    assert out.choices[0].finish_reason == "length"
    assert (out.choices[0].message.content or "").startswith('{"')


def test_streamed_json_schema_validates(admin: openai.OpenAI) -> None:
    stream = chat(
        admin,
        model="playful",
        messages=ASK,
        max_tokens=120,
        stream=True,
        response_format=json_schema(PERSON),
    )
    parts, finish = [], None
    for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop"
    assert len([p for p in parts if p]) > 1  # streamed as it was generated, not in one piece
    jsonschema.validate(json.loads("".join(parts)), PERSON)


def test_regex_response_format(admin: openai.OpenAI) -> None:
    """PALM's extension: ``{"type": "regex", "regex": ...}`` (through ``extra_body``)."""
    pattern = r"[A-Z][a-z]{2,6}-[0-9]{3}"
    out = chat(
        admin,
        model="balanced",
        messages=ASK,
        max_tokens=30,
        extra_body={"response_format": {"type": "regex", "regex": pattern}},
    )
    assert re.fullmatch(pattern, out.choices[0].message.content or "")


@pytest.mark.parametrize("member", ["balanced", "playful"])
def test_required_tool_call(admin: openai.OpenAI, member: str) -> None:
    out = chat(
        admin,
        model=member,
        messages=[{"role": "user", "content": "Weather in Oslo for 3 days?"}],
        max_tokens=80,
        tools=TOOLS,
        tool_choice="required",
    )
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_named_tool_choice_calls_that_tool(admin: openai.OpenAI) -> None:
    out = chat(
        admin,
        model="balanced",
        messages=[{"role": "user", "content": "Time?"}],
        max_tokens=60,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    (call,) = out.choices[0].message.tool_calls or []
    assert call.function.name == "get_time"
    assert json.loads(call.function.arguments)["zone"] in ("UTC", "CET")


def test_tool_result_turn_and_auto_choice(admin: openai.OpenAI) -> None:
    """A conversation carrying a call and its result; ``auto`` answers text or a valid call."""
    messages: list[Any] = [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo","days":1}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    for seed in range(4):
        out = chat(
            admin,
            model="balanced",
            messages=messages,
            max_tokens=40,
            temperature=1.0,
            seed=seed,
            tools=TOOLS,
            tool_choice="auto",
        )
        msg = out.choices[0].message
        if msg.tool_calls:
            assert out.choices[0].finish_reason == "tool_calls"
            call = msg.tool_calls[0]
            jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
        else:
            assert msg.content and not msg.content.startswith("{")


def test_streamed_tool_call(admin: openai.OpenAI) -> None:
    stream = chat(
        admin,
        model="playful",
        messages=[{"role": "user", "content": "Weather?"}],
        max_tokens=80,
        stream=True,
        tools=TOOLS,
        tool_choice="required",
    )
    name, args, finish = "", "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        for tc in chunk.choices[0].delta.tool_calls or []:
            name += (tc.function and tc.function.name) or ""
            args += (tc.function and tc.function.arguments) or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    jsonschema.validate(json.loads(args), SCHEMAS[name])


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"response_format": json_schema({"type": "nonsense"})}, "response_format"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"tools": [{"type": "function", "function": {"description": "x"}}]}, "tools[0]"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "nope",
        ),
    ],
)
def test_bad_constraints_are_400s(admin: openai.OpenAI, kw: dict[str, Any], needle: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        chat(admin, model="balanced", messages=ASK, max_tokens=8, **kw)
    assert needle in str(info.value)


def test_responses_text_format_and_tools(long_proxy: Proxy) -> None:
    """Responses' ``text.format`` and flat function tools reach the member (LiteLLM's bridge)."""
    with openai.OpenAI(
        base_url=long_proxy.url + "/v1", api_key=long_proxy.deployment.master_key, max_retries=0
    ) as client:
        out: Any = client.responses.create(
            model="playful",
            input="Who is Ada?",
            max_output_tokens=120,
            text={"format": {"type": "json_schema", "name": "person", "schema": PERSON}},
        )
        jsonschema.validate(json.loads(out.output_text), PERSON)
        tool = {"type": "function", **TOOLS[1]["function"]}
        out = client.responses.create(  # type: ignore[call-overload]
            model="balanced",
            input="Time?",
            max_output_tokens=60,
            tools=[tool],
            tool_choice="required",
        )
        (call,) = [item for item in out.output if item.type == "function_call"]
        assert call.name == "get_time"
        jsonschema.validate(json.loads(call.arguments), SCHEMAS["get_time"])


@pytest.mark.parametrize("stream", [False, True])
def test_reply_rules_read_tool_call_arguments(admin: openai.OpenAI, stream: bool) -> None:
    """The grammar makes the member write "zebra" in the call; the reply rule refuses it."""
    animal = {
        "type": "function",
        "function": {
            "name": "pet",
            "parameters": {
                "type": "object",
                "properties": {"animal": {"const": "zebra"}},
                "required": ["animal"],
            },
        },
    }
    kw: dict[str, Any] = {"model": "balanced", "messages": ASK, "max_tokens": 40}
    out = chat(admin, tools=[animal], tool_choice="required", stream=stream, **kw)
    if not stream:
        choice = out.choices[0]
        assert choice.finish_reason == "content_filter" and choice.message.tool_calls is None
        assert choice.message.content == "No zebras here."
        return
    text, finish = "", None
    calls: list[Any] = []
    for chunk in out:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            calls += chunk.choices[0].delta.tool_calls or []
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "content_filter" and not calls and "No zebras here." in text
