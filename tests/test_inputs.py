"""request_messages: every text a member reads, in every format; unreadable input refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palm_middleware.exceptions import (
    InvalidParameterError,
    InvalidRequestError,
    RequestTooLargeError,
)
from palm_middleware.inputs import ROLES, RequestLimits, request_messages

W = "secret-word"


def texts(kind: Any, body: dict[str, Any], **kw: Any) -> str:
    out = request_messages(kind, body, **kw)
    assert all(set(m) == {"role", "content"} and m["role"] in ROLES for m in out)
    return "\n".join(m["content"] for m in out)


def refused(kind: Any, body: Any, param: str | None, **kw: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        request_messages(kind, body, **kw)
    assert info.value.param == param, str(info.value)
    return info.value


# -- OpenAI chat ------------------------------------------------------------------------------
CHAT_SHAPES: dict[str, list[dict[str, Any]]] = {
    "string": [{"role": "user", "content": W}],
    "text part": [{"role": "user", "content": [{"type": "text", "text": W}]}],
    "input_text": [{"role": "user", "content": [{"type": "input_text", "text": W}]}],
    "output_text": [{"role": "assistant", "content": [{"type": "output_text", "text": W}]}],
    "refusal": [{"role": "assistant", "content": [{"type": "refusal", "refusal": W}]}],
    "thinking": [{"role": "assistant", "content": [{"type": "thinking", "thinking": W}]}],
    "system": [{"role": "system", "content": W}],
    "developer list": [{"role": "developer", "content": [{"type": "text", "text": W}]}],
    "tool": [{"role": "tool", "tool_call_id": "1", "content": W}],
    "tool reference": [
        {
            "role": "tool",
            "tool_call_id": "1",
            "content": [{"type": "tool_reference", "tool_name": W}],
        }
    ],
    "function": [{"role": "function", "name": "f", "content": W}],
    "name": [{"role": "user", "name": W, "content": "hi"}],
    "tool call": [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": W, "arguments": "{}"}}
            ],
        }
    ],
    "tool call args": [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "f", "arguments": W}}
            ],
        }
    ],
    "custom tool call": [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "1", "type": "custom", "custom": {"name": "f", "input": W}}],
        }
    ],
    "function_call": [
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": W}}
    ],
    "reasoning_content": [{"role": "assistant", "content": "", "reasoning_content": W}],
    "thinking_blocks": [
        {
            "role": "assistant",
            "content": "",
            "thinking_blocks": [{"type": "thinking", "thinking": W, "signature": "s"}],
        }
    ],
    "document text": [
        {
            "role": "user",
            "content": [
                {"type": "document", "source": {"type": "text", "media_type": "t", "data": W}}
            ],
        }
    ],
    "role case": [{"role": "UsEr", "content": W}],
}


@pytest.mark.parametrize("shape", sorted(CHAT_SHAPES))
def test_chat_reads_every_shape(shape: str) -> None:
    assert W in texts("chat", {"messages": CHAT_SHAPES[shape]})


def test_chat_roles_are_case_folded_and_order_kept() -> None:
    out = request_messages(
        "chat",
        {"messages": [{"role": "System", "content": "a"}, {"role": "USER", "content": "b"}]},
    )
    assert out == [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}]


def test_tool_definitions_and_schemas_are_read_last_as_system() -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "description": W}}],
        "response_format": {"type": "json_schema", "json_schema": {"description": W}},
    }
    out = request_messages("chat", body)
    assert out[0] == {"role": "user", "content": "hi"}
    assert out[-1]["role"] == "system" and out[-1]["content"].count(W) == 2


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "human", "content": "x"}], "messages[0].role"),
        ([{"role": "bot", "content": "x"}], "messages[0].role"),
        ([{"role": 1, "content": "x"}], "messages[0].role"),
        ([{"content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": 42}], "messages[0].content"),
        ([{"role": "user", "content": {"type": "text", "text": W}}], "messages[0].content"),
        ([{"role": "user", "content": None}], "messages[0].content"),
        (
            [{"role": "user", "content": [{"type": "text", "text": 1}]}],
            "messages[0].content[0].text",
        ),
        ([{"role": "user", "content": [{"text": W}]}], "messages[0].content[0].type"),
        ([{"role": "user", "content": [{"type": "x", "text": W}]}], "messages[0].content[0].type"),
        ([{"role": "user", "content": ["x"]}], "messages[0].content[0]"),
        ([{"role": "user", "content": "x", "name": 3}], "messages[0].name"),
        (
            [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}],
            "messages[0].tool_calls[0]",
        ),
        (
            [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"function": {"name": "f", "arguments": 3}}],
                }
            ],
            None,  # structured arguments are read as JSON text, not refused
        ),
        ([], "messages"),
        ("hi", "messages"),
        ([None], "messages[1]"),
    ],
)
def test_chat_refuses_what_it_cannot_read(messages: Any, param: str | None) -> None:
    if param is None:
        assert "3" in texts("chat", {"messages": messages})
        return
    if messages == [None]:
        messages = [{"role": "user", "content": "ok"}, None]
    refused("chat", {"messages": messages}, param)


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "http://x"}},
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}},
        {"type": "file", "file": {"file_id": "f"}},
        {"type": "video_url", "video_url": {"url": "http://x"}},
        {"type": "document", "source": {"type": "base64", "data": "", "media_type": "x"}},
    ],
)
def test_non_text_parts_refused_unless_allowed_then_not_read(part: dict[str, Any]) -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": W}, part]}]}
    err = refused("chat", body, "messages[0].content[1]" + (".source" if "source" in part else ""))
    assert "text only" in str(err)
    out = request_messages("chat", body, allow_non_text=True)
    assert out == [{"role": "user", "content": W}]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"stop": 5}, "stop"),
        ({"stop": ["a", None]}, "stop[1]"),
        ({"max_tokens": "5"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"stream": "yes"}, "stream"),
        ({"tools": {"type": "function"}}, "tools"),
        ({"tools": ["f"]}, "tools[0]"),
        ({"response_format": "json"}, "response_format"),
    ],
)
def test_parameters_a_provider_would_stringify_are_refused(extra: Any, param: str) -> None:
    refused("chat", {"messages": [{"role": "user", "content": "x"}], **extra}, param)


@pytest.mark.parametrize("body", [None, [], [{"messages": []}], "x", 3])
def test_a_body_that_is_not_an_object_is_refused(body: Any) -> None:
    refused("chat", body, None)


# -- limits -----------------------------------------------------------------------------------
def test_limits() -> None:
    small = RequestLimits(max_messages=2, max_message_chars=10, max_total_chars=15)
    two = [{"role": "user", "content": "x"}] * 2
    assert len(request_messages("chat", {"messages": two}, limits=small)) == 2
    with pytest.raises(RequestTooLargeError) as info:
        request_messages("chat", {"messages": two * 2}, limits=small)
    assert info.value.param == "messages"
    with pytest.raises(RequestTooLargeError) as info:
        request_messages(
            "chat", {"messages": [{"role": "user", "content": "x" * 11}]}, limits=small
        )
    assert info.value.param == "messages[0]"
    parts = [{"type": "text", "text": "x" * 6}] * 2  # 13 characters joined: one message
    with pytest.raises(RequestTooLargeError):
        request_messages("chat", {"messages": [{"role": "user", "content": parts}]}, limits=small)
    nine = {"role": "user", "content": "x" * 9}
    with pytest.raises(RequestTooLargeError) as info:
        request_messages("chat", {"messages": [nine, nine]}, limits=small)
    assert info.value.param == "messages[1]"
    assert isinstance(info.value, InvalidRequestError)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_limits_must_be_positive_integers(bad: Any) -> None:
    with pytest.raises(InvalidParameterError, match="max_messages"):
        RequestLimits(max_messages=bad)


# -- text completion --------------------------------------------------------------------------
def test_text_completion() -> None:
    assert W in texts("text_completion", {"prompt": W})
    assert W in texts("text_completion", {"prompt": ["a", W]})
    assert W in texts("text_completion", {"prompt": "a", "suffix": W})
    refused("text_completion", {"prompt": [1, 2, 3]}, "prompt[0]")
    refused("text_completion", {"prompt": [[1, 2]]}, "prompt[0]")
    refused("text_completion", {"prompt": None}, "prompt")
    refused("text_completion", {"prompt": []}, "prompt")
    refused("text_completion", {"prompt": "a", "suffix": 1}, "suffix")


# -- Responses --------------------------------------------------------------------------------
RESPONSES: dict[str, dict[str, Any]] = {
    "input string": {"input": W},
    "instructions": {"instructions": W, "input": "hi"},
    "easy message": {"input": [{"role": "user", "content": W}]},
    "message parts": {
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": W}]}
        ]
    },
    "assistant output_text": {
        "input": [{"role": "assistant", "content": [{"type": "output_text", "text": W}]}]
    },
    "function_call": {
        "input": [{"type": "function_call", "call_id": "1", "name": "f", "arguments": W}]
    },
    "function_call_output": {
        "input": [{"type": "function_call_output", "call_id": "1", "output": W}]
    },
    "function_call_output parts": {
        "input": [
            {
                "type": "function_call_output",
                "call_id": "1",
                "output": [{"type": "input_text", "text": W}],
            }
        ]
    },
    "custom tool": {
        "input": [{"type": "custom_tool_call", "call_id": "1", "name": "f", "input": W}]
    },
    "reasoning summary": {
        "input": [
            {"type": "reasoning", "id": "r", "summary": [{"type": "summary_text", "text": W}]}
        ]
    },
    "tools": {"input": "hi", "tools": [{"type": "function", "name": "f", "description": W}]},
    "text format": {
        "input": "hi",
        "text": {"format": {"type": "json_schema", "schema": {"title": W}}},
    },
}


@pytest.mark.parametrize("shape", sorted(RESPONSES))
def test_responses_reads_every_shape(shape: str) -> None:
    assert W in texts("responses", RESPONSES[shape])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": None}, "input"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"type": "computer_call_output", "output": {}}]}, "input[0].type"),
        ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": "hi", "prompt": {"id": "p"}}, "prompt"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0]",
        ),
        (
            {"input": [{"type": "reasoning", "encrypted_content": "zz"}]},
            "input[0].encrypted_content",
        ),
        ({"instructions": 3, "input": "x"}, "instructions"),
        ({"input": "x", "max_output_tokens": "9"}, "max_output_tokens"),
    ],
)
def test_responses_refuses_what_it_cannot_read(body: dict[str, Any], param: str) -> None:
    refused("responses", body, param)


# -- Anthropic messages -----------------------------------------------------------------------
ANTHROPIC: dict[str, dict[str, Any]] = {
    "system string": {"system": W, "messages": [{"role": "user", "content": "hi"}]},
    "system blocks": {
        "system": [{"type": "text", "text": W}],
        "messages": [{"role": "user", "content": "hi"}],
    },
    "text block": {"messages": [{"role": "user", "content": [{"type": "text", "text": W}]}]},
    "tool_use input": {
        "messages": [
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"q": W}}],
            }
        ]
    },
    "tool_result string": {
        "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": W}]}
        ]
    },
    "tool_result blocks": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [{"type": "text", "text": W}],
                    }
                ],
            }
        ]
    },
    "thinking": {
        "messages": [
            {
                "role": "assistant",
                "content": [{"type": "thinking", "thinking": W, "signature": "s"}],
            }
        ]
    },
    "document text": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "document", "source": {"type": "text", "media_type": "t", "data": W}}
                ],
            }
        ]
    },
    "document title": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "title": W,
                        "source": {"type": "content", "content": [{"type": "text", "text": "x"}]},
                    }
                ],
            }
        ]
    },
    "tools": {
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "f", "description": W, "input_schema": {}}],
    },
}


@pytest.mark.parametrize("shape", sorted(ANTHROPIC))
def test_anthropic_reads_every_shape(shape: str) -> None:
    assert W in texts("anthropic_messages", ANTHROPIC[shape])


def test_anthropic_tool_results_are_not_the_users_own_words() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": "from the tool"},
                    {"type": "text", "text": "my words"},
                ],
            }
        ]
    }
    out = request_messages("anthropic_messages", body)
    assert out == [
        {"role": "tool", "content": "from the tool"},
        {"role": "user", "content": "my words"},
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        (
            {"system": [{"type": "image"}], "messages": [{"role": "user", "content": "x"}]},
            "system[0].type",
        ),
        ({"system": 5, "messages": [{"role": "user", "content": "x"}]}, "system"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "redacted_thinking", "data": "z"}]}
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "stop_sequences": [1]},
            "stop_sequences[0]",
        ),
    ],
)
def test_anthropic_refuses_what_it_cannot_read(body: dict[str, Any], param: str) -> None:
    refused("anthropic_messages", body, param)


# -- properties -------------------------------------------------------------------------------
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
_roles = st.sampled_from(["user", "User", "system", "assistant", "tool", "developer", "human", "x"])
_parts = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["text", "input_text", "image_url", "hologram"]),
        "text": st.text(max_size=8),
    }
)
_message = st.fixed_dictionaries(
    {
        "role": _roles,
        "content": st.one_of(st.text(max_size=20), st.lists(_parts, max_size=3), _json),
    }
)
_kinds = st.sampled_from(["chat", "text_completion", "responses", "anthropic_messages"])


@settings(max_examples=300, deadline=None)
@given(
    kind=_kinds,
    body=st.one_of(_json, st.fixed_dictionaries({"messages": st.lists(_message, max_size=4)})),
)
def test_any_body_gives_messages_or_invalid_request(kind: Any, body: Any) -> None:
    """Whatever the JSON: plain-text messages with known roles, or InvalidRequestError."""
    try:
        out = request_messages(kind, body)
    except InvalidRequestError as exc:
        assert exc.param is None or isinstance(exc.param, str)
        return
    for m in out:
        assert m["role"] in ROLES and isinstance(m["content"], str)


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(sorted(ROLES)), "content": st.text(max_size=30)}
        ),
        min_size=1,
        max_size=6,
    ),
    where=st.integers(min_value=0, max_value=5),
)
def test_a_word_anywhere_is_in_the_output_and_reading_is_idempotent(
    messages: list[dict[str, str]], where: int
) -> None:
    messages[where % len(messages)]["content"] += f" {W}"
    out = request_messages("chat", {"messages": messages})
    assert any(W in m["content"] for m in out)
    assert request_messages("chat", {"messages": out}) == out
    assert json.loads(json.dumps(out)) == out


def test_a_name_field_reads_as_words() -> None:
    """`name` is an identifier: underscores become spaces, so a keyword hidden there stays a
    word for the guard (bench_bypass found `how_to_<word>_now` served)."""
    msgs = request_messages(
        "chat", {"messages": [{"role": "user", "name": f"how_to_{W}_now", "content": "hi"}]}
    )
    assert f"how to {W} now" in msgs[0]["content"]
