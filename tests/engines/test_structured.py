"""OpenAI's response_format / tools fields read into grammars, prompts and calls."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from palm_middleware.engines.grammar import Grammar
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.engines.structured import ToolFormat, plain_messages, response_grammar
from palm_middleware.exceptions import InvalidParameterError

pytest.importorskip("llguidance")

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Forecast",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 5}},
            "required": ["city"],
        },
    },
}
TIME: dict[str, Any] = {"type": "function", "name": "time"}  # Responses' flat shape


def test_response_formats() -> None:
    assert response_grammar(None) is None
    assert response_grammar({"type": "text"}) is None
    assert response_grammar({"type": "json_object"}) == Grammar.json_object("response_format")
    nested = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer"}}}
    flat = {"type": "json_schema", "name": "x", "schema": {"type": "integer"}}  # text.format
    assert response_grammar(nested) == response_grammar(flat)
    assert json.loads(response_grammar(nested).source) == {"type": "integer"}  # type: ignore[union-attr]
    assert response_grammar({"type": "regex", "regex": "a+"}) == Grammar.regex(
        "a+", "response_format"
    )


@pytest.mark.parametrize(
    ("fmt", "needle"),
    [
        ("json", "must be an object with a string `type`"),
        ({"type": "xml"}, "response_format.type must be one of"),
        ({"type": "json_schema", "json_schema": 5}, "response_format.json_schema must be"),
        ({"type": "json_schema", "json_schema": {"schema": [1]}}, "json_schema.schema"),
        ({"type": "regex"}, "response_format.regex must be a non-empty string"),
    ],
)
def test_bad_response_formats(fmt: object, needle: str) -> None:
    with pytest.raises(InvalidParameterError, match=needle.replace("[", r"\[")):
        response_grammar(fmt)


def test_tool_choices() -> None:
    assert ToolFormat.parse(None) is None
    assert ToolFormat.parse([WEATHER], "none") is None
    auto = ToolFormat.parse([WEATHER, TIME])
    assert auto is not None and not auto.required and auto.grammar().kind == "lark"
    req = ToolFormat.parse([WEATHER, TIME], "required")
    assert req is not None and req.required and req.grammar().kind == "json_schema"
    named = ToolFormat.parse([WEATHER, TIME], {"type": "function", "function": {"name": "time"}})
    assert named is not None and [t.name for t in named.tools] == ["time"]
    # Undeclared keys are closed off (a call passes the declared arguments).
    assert req.tools[0].parameters["additionalProperties"] is False


@pytest.mark.parametrize(
    ("tools", "choice", "needle"),
    [
        ("weather", None, "tools must be a list"),
        ([5], None, r"tools\[0\] must be an object"),
        ([{"type": "code_interpreter"}], None, "only function tools"),
        ([{"type": "function", "function": {}}], None, r"tools\[0\].function.name"),
        ([WEATHER], {"type": "function", "function": {"name": "x"}}, "'x', which is not in"),
        ([WEATHER], "sometimes", "tool_choice must be"),
        ([], "required", "tool_choice requires a tool"),
    ],
)
def test_bad_tools(tools: object, choice: object, needle: str) -> None:
    with pytest.raises(InvalidParameterError, match=needle):
        ToolFormat.parse(tools, choice)


def test_instructions_join_the_first_system_message() -> None:
    tf = ToolFormat.parse([WEATHER], "required")
    assert tf is not None
    merged = tf.messages(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert len(merged) == 2 and merged[0]["content"].startswith("Be brief.\n\nYou can call")
    assert '"city"' in merged[0]["content"] and "plain text" not in merged[0]["content"]
    added = tf.messages([{"role": "user", "content": "Hi"}])
    assert [m["role"] for m in added] == ["system", "user"]


def test_parse_call() -> None:
    tf = ToolFormat.parse([WEATHER, TIME])
    assert tf is not None
    call = tf.parse_call('{"name":"weather","arguments":{"city":"Oslo"}}')
    assert call is not None and call.name == "weather" and call.id.startswith("call_")
    assert json.loads(call.arguments) == {"city": "Oslo"}
    assert call.openai()["function"] == {"name": "weather", "arguments": call.arguments}
    assert tf.parse_call("It is sunny.") is None
    assert tf.parse_call('{"name":"weather","argu') is None  # cut by max_tokens
    assert tf.parse_call('{"name":"other","arguments":{}}') is None


def test_plain_messages_write_calls_and_results_as_text() -> None:
    msgs: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Weather"}, {"type": "text", "text": "in Oslo?"}],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    assert plain_messages(msgs) == [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": '{"name": "weather", "arguments": {"city": "Oslo"}}'},
        {"role": "user", "content": "Result of weather: sunny"},
    ]


@pytest.mark.parametrize("choice", ["required", "auto"])
def test_tool_grammar_on_the_tiny_model(tiny_long: OnnxEngine, choice: str) -> None:
    """A random decoder's answer is a valid call (required) or text-or-call (auto)."""
    tf = ToolFormat.parse([WEATHER, TIME], choice)
    assert tf is not None
    for seed in range(3):
        p = {"max_tokens": 80, "grammar": tf.grammar(), "temperature": 1.0, "seed": seed}
        out = tiny_long.generate(tf.messages([{"role": "user", "content": "Hi"}]), p)
        call = tf.parse_call(out.text)
        if call is None:
            assert choice == "auto" and not out.text.startswith("{"), out.text
            continue
        schema = next(t.parameters for t in tf.tools if t.name == call.name)
        jsonschema.validate(json.loads(call.arguments), schema)
