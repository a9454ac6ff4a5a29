"""OpenAI semantics through the proxy, checked with the official ``openai`` client (issue 14).

One test per row of the proxy part of the issue's table: parameters a local member cannot honour
are refused with LiteLLM's ``UnsupportedParamsError`` (400) unless ``drop_params`` is set;
OpenAI's parameter ranges are enforced with a 400 naming the parameter; the stream's usage chunk
has ``choices: []``; ``n > 1`` is refused; errors are the OpenAI error object on every route.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from litellm_proxy_fixtures import Proxy
from openai.types.chat import ChatCompletionMessageParam

HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def oai(proxy: Proxy) -> Iterator[openai.OpenAI]:
    """The official client with alice's key (no retries: every answer is the first one)."""
    with openai.OpenAI(
        base_url=proxy.url + "/v1",
        api_key=proxy.deployment.keys["alice"],
        max_retries=0,
        timeout=60,
    ) as client:
        yield client


def create(oai: openai.OpenAI, **kw: Any) -> Any:
    """``chat.completions.create`` on ``auto`` with ``HI`` (fields given as plain JSON values)."""
    return oai.chat.completions.create(model="auto", messages=HI, **kw)


def refused(oai: openai.OpenAI, **kw: Any) -> openai.BadRequestError:
    """The 400 the proxy answers to ``kw`` (the test fails on any other outcome)."""
    with pytest.raises(openai.BadRequestError) as info:
        create(oai, max_tokens=4, **kw)
    return info.value


def error_object(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert set(body) == {"error"}, body
    assert {"message", "type", "param", "code"} <= set(body["error"]), body
    return body["error"]  # type: ignore[no-any-return]


#: (``tools``, ``tool_choice`` and ``response_format`` are honoured through a grammar:
#: test_litellm_structured.py.)
UNSUPPORTED = [
    pytest.param(
        {"functions": [{"name": "f", "parameters": {"type": "object"}}]},
        "functions",
        id="functions",
    ),
    pytest.param({"logprobs": True, "top_logprobs": 2}, "logprobs", id="logprobs"),
    pytest.param({"presence_penalty": 0.5}, "presence_penalty", id="presence_penalty"),
    pytest.param({"logit_bias": {"50256": -100}}, "logit_bias", id="logit_bias"),
    pytest.param({"n": 2}, "n", id="n=2"),
]


@pytest.mark.parametrize(("params", "param"), UNSUPPORTED)
def test_unsupported_params_are_refused(
    oai: openai.OpenAI, params: dict[str, Any], param: str
) -> None:
    exc = refused(oai, **params)
    err = error_object(exc)
    assert "UnsupportedParamsError" in err["message"]
    assert "drop_params" in err["message"]  # the fix is in the message, as LiteLLM words it
    assert err["param"] == param
    assert err["type"] == "invalid_request_error"
    assert err["code"] == "400"


@pytest.mark.parametrize(("params", "param"), UNSUPPORTED)
def test_drop_params_drops_them(oai: openai.OpenAI, params: dict[str, Any], param: str) -> None:
    out = create(oai, max_tokens=4, extra_body={"drop_params": True}, **params)
    assert len(out.choices) == 1  # n dropped: one choice, as LiteLLM serves a dropped n
    assert out.choices[0].message.content
    assert out.choices[0].message.tool_calls is None
    assert out.choices[0].logprobs is None


def test_n_1_is_accepted(oai: openai.OpenAI) -> None:
    """``n=1`` is OpenAI's default (LangChain sends it): not an unsupported parameter."""
    out = create(oai, max_tokens=4, n=1)
    assert len(out.choices) == 1


RANGES = [
    ("temperature", 5),
    ("temperature", -0.1),
    ("top_p", 1.5),
    ("top_p", -1),
    ("max_tokens", 0),
    ("max_completion_tokens", 0),
    ("n", 0),
    ("presence_penalty", 2.5),
    ("frequency_penalty", -3),
    ("top_logprobs", 21),
    ("seed", "x"),
]


@pytest.mark.parametrize(("param", "value"), RANGES)
def test_out_of_range_params_are_refused(oai: openai.OpenAI, param: str, value: Any) -> None:
    kw: dict[str, Any] = {"max_tokens": 4, param: value}
    with pytest.raises(openai.BadRequestError) as info:
        create(oai, **kw)
    err = error_object(info.value)
    assert err["param"] == param
    assert f"`{param}`" in err["message"]
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("param", "value"),
    [("temperature", 0), ("temperature", 2), ("top_p", 1), ("top_p", 0.0), ("max_tokens", 1)],
)
def test_range_bounds_are_accepted(oai: openai.OpenAI, param: str, value: Any) -> None:
    kw: dict[str, Any] = {"max_tokens": 4, param: value}
    out = create(oai, **kw)
    assert out.choices[0].finish_reason in ("stop", "length")


def test_range_checks_come_before_drop_params(oai: openai.OpenAI) -> None:
    """``drop_params`` drops what a member cannot do; it never makes a bad value acceptable."""
    with pytest.raises(openai.BadRequestError) as info:
        create(oai, temperature=5, extra_body={"drop_params": True})
    assert error_object(info.value)["param"] == "temperature"


def test_stream_usage_chunk_has_no_choices(oai: openai.OpenAI) -> None:
    """``stream_options.include_usage``: usage arrives last, in a chunk with ``choices: []``."""
    chunks = list(
        create(
            oai,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens >= 1
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(ch.choices for ch in body)  # every other chunk carries its choice
    assert all(ch.usage is None for ch in body)
    assert "".join(ch.choices[0].delta.content or "" for ch in body)
    assert body[-1].choices[0].finish_reason in ("stop", "length")


def test_stream_without_include_usage_sends_no_usage_chunk(oai: openai.OpenAI) -> None:
    chunks = list(create(oai, max_tokens=4, stream=True))
    assert all(ch.choices for ch in chunks)


def test_streamed_unsupported_param_is_refused_before_streaming(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        create(oai, stream=True, logprobs=True)
    assert error_object(info.value)["param"] == "logprobs"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/palm/v1/feedback", {"nope": 1}, 422),
        ("get", "/palm/v1/profile?user=bob", None, 403),
    ],
)
def test_palm_routes_answer_the_openai_error_object(
    proxy: Proxy, method: str, path: str, body: Any, status: int
) -> None:
    """The error object on ``/palm/v1``, read through the openai client's own error classes."""
    with openai.OpenAI(
        base_url=proxy.url, api_key=proxy.deployment.keys["alice"], max_retries=0, timeout=60
    ) as client:
        kw: dict[str, Any] = {"cast_to": httpx.Response}
        if body is not None:
            kw["body"] = body
        with pytest.raises(openai.APIStatusError) as info:
            getattr(client, method)(path, **kw)
    assert info.value.status_code == status
    err = error_object(info.value)
    assert err["code"] == str(status)
    assert isinstance(err["message"], str) and err["message"]


# --- The other doors: Responses, text completions, Anthropic messages (issue 14) ---------------
#
# The same client, the same proxy. Each door has its own set of fields a local member cannot
# honour (``gate._UNSUPPORTED``) and the same ranges (Anthropic's temperature is 0-1).

SAY = "Hello there"
ANTHROPIC_TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


def respond(oai: openai.OpenAI, **kw: Any) -> Any:
    """``responses.create`` on ``auto`` (16 tokens: OpenAI's minimum for this API)."""
    kw.setdefault("max_output_tokens", 16)
    return oai.responses.create(model="auto", input=SAY, **kw)


def complete(oai: openai.OpenAI, **kw: Any) -> Any:
    """``completions.create`` (text completions) on ``auto``."""
    kw.setdefault("max_tokens", 4)
    return oai.completions.create(model="auto", prompt=SAY, **kw)


def message(oai: openai.OpenAI, **kw: Any) -> dict[str, Any]:
    """``POST /v1/messages`` (Anthropic's shape) through the openai client's own transport."""
    body: dict[str, Any] = {
        "model": "auto",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": SAY}],
        **kw,
    }
    out: httpx.Response = oai.post("/messages", body=body, cast_to=httpx.Response)
    return out.json()  # type: ignore[no-any-return]


#: (Responses ``tools``, ``tool_choice`` and ``text.format`` are honoured through a grammar:
#: test_litellm_structured.py.)
DOOR_UNSUPPORTED = [
    pytest.param(respond, {"reasoning": {"effort": "high"}}, "reasoning", id="responses-reasoning"),
    pytest.param(respond, {"top_logprobs": 2}, "top_logprobs", id="responses-top_logprobs"),
    pytest.param(complete, {"logprobs": 2}, "logprobs", id="completions-logprobs"),
    pytest.param(complete, {"echo": True}, "echo", id="completions-echo"),
    pytest.param(complete, {"best_of": 2}, "best_of", id="completions-best_of"),
    pytest.param(complete, {"suffix": "!"}, "suffix", id="completions-suffix"),
    pytest.param(complete, {"n": 2}, "n", id="completions-n=2"),
    pytest.param(
        complete, {"presence_penalty": 0.5}, "presence_penalty", id="completions-presence_penalty"
    ),
    pytest.param(complete, {"logit_bias": {"50256": -100}}, "logit_bias", id="completions-bias"),
    pytest.param(message, {"tools": ANTHROPIC_TOOLS}, "tools", id="messages-tools"),
    pytest.param(
        message,
        {"tools": ANTHROPIC_TOOLS, "tool_choice": {"type": "any"}},
        "tools",
        id="messages-tool_choice",
    ),
    pytest.param(
        message,
        {"thinking": {"type": "enabled", "budget_tokens": 1024}},
        "thinking",
        id="messages-thinking",
    ),
]


def door_error(exc: openai.APIStatusError, call: Any) -> dict[str, Any]:
    """The error of a door in its own convention, with ``param`` read from it.

    ``/v1/messages`` answers Anthropic's envelope (LiteLLM 1.106.2 converts every error on that
    route, so Anthropic SDK clients parse it): ``{"type": "error", "error": {"type", "message"}}``,
    with no ``param`` field; the message names the field. The other doors: the OpenAI object.
    """
    if call is not message:
        return error_object(exc)
    body = exc.response.json()
    assert body["type"] == "error" and {"type", "message"} <= set(body["error"]), body
    return dict(body["error"])


@pytest.mark.parametrize(("call", "params", "param"), DOOR_UNSUPPORTED)
def test_every_door_refuses_unsupported_params(
    oai: openai.OpenAI, call: Any, params: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        call(oai, **params)
    err = door_error(info.value, call)
    assert "UnsupportedParamsError" in err["message"]
    assert "drop_params" in err["message"]
    assert f"['{param}'" in err["message"]  # the first unsupported field is named first
    assert err.get("param", param) == param
    assert err["type"] == "invalid_request_error"
    assert err.get("code", "400") == "400"


@pytest.mark.parametrize(("call", "params", "param"), DOOR_UNSUPPORTED)
def test_every_door_drops_them_with_drop_params(
    oai: openai.OpenAI, call: Any, params: dict[str, Any], param: str
) -> None:
    # The SDK's typed calls take it as an extra body field; /v1/messages is a plain JSON body.
    flag: dict[str, Any] = (
        {"drop_params": True} if call is message else {"extra_body": {"drop_params": True}}
    )
    out: Any = call(oai, **flag, **params)
    if call is respond:
        assert out.status == "completed" or out.incomplete_details is not None
        assert [o.type for o in out.output] == ["message"]  # text, no function call
        assert out.output_text
    elif call is complete:
        assert len(out.choices) == 1 and out.choices[0].text
        assert out.choices[0].logprobs is None
    else:
        assert [block["type"] for block in out["content"]] == ["text"]
        assert out["content"][0]["text"]


def test_plain_text_format_is_not_a_feature_request(oai: openai.OpenAI) -> None:
    """``text: {format: {type: "text"}}`` is the Responses default: served, not refused."""
    out = respond(oai, text={"format": {"type": "text"}})
    assert out.output_text


DOOR_RANGES = [
    pytest.param(respond, "temperature", 5, id="responses-temperature"),
    pytest.param(respond, "top_p", 1.5, id="responses-top_p"),
    pytest.param(respond, "max_output_tokens", 0, id="responses-max_output_tokens"),
    pytest.param(complete, "temperature", -0.1, id="completions-temperature"),
    pytest.param(complete, "top_p", -1, id="completions-top_p"),
    pytest.param(complete, "max_tokens", 0, id="completions-max_tokens"),
    pytest.param(complete, "n", 0, id="completions-n=0"),
    pytest.param(complete, "frequency_penalty", 3, id="completions-frequency_penalty"),
    pytest.param(complete, "seed", -1, id="completions-seed"),
    pytest.param(message, "temperature", 1.5, id="messages-temperature-over-1"),
    pytest.param(message, "top_p", 2, id="messages-top_p"),
    pytest.param(message, "max_tokens", 0, id="messages-max_tokens"),
    pytest.param(message, "top_k", -1, id="messages-top_k"),
]


@pytest.mark.parametrize(("call", "param", "value"), DOOR_RANGES)
def test_every_door_refuses_out_of_range_params(
    oai: openai.OpenAI, call: Any, param: str, value: Any
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        call(oai, **{param: value})
    err = door_error(info.value, call)
    assert err.get("param", param) == param
    assert f"`{param}`" in err["message"]
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("call", "param", "value"),
    [
        pytest.param(respond, "temperature", 2, id="responses-temperature=2"),
        pytest.param(complete, "temperature", 2, id="completions-temperature=2"),
        pytest.param(complete, "n", 1, id="completions-n=1"),
        pytest.param(message, "temperature", 1, id="messages-temperature=1"),
        pytest.param(message, "top_k", 5, id="messages-top_k=5"),
    ],
)
def test_every_door_accepts_range_bounds(
    oai: openai.OpenAI, call: Any, param: str, value: Any
) -> None:
    out = call(oai, **{param: value})
    text = (
        out.output_text
        if call is respond
        else out.choices[0].text
        if call is complete
        else out["content"][0]["text"]
    )
    assert isinstance(text, str)


def test_messages_errors_are_anthropics_error_object(oai: openai.OpenAI) -> None:
    """``/v1/messages`` refusals (PALM's included) are Anthropic's envelope, as the route's
    clients expect; the status and the field name survive the conversion."""
    with pytest.raises(openai.BadRequestError) as info:
        message(oai, temperature=1.5)
    assert info.value.status_code == 400
    body = info.value.response.json()
    assert set(body) >= {"type", "error"} and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "`temperature` must be between 0.0 and 1.0" in body["error"]["message"]


def test_text_completion_stream_usage_chunk_has_no_choices(oai: openai.OpenAI) -> None:
    """The same usage-chunk shape on the text-completion door."""
    chunks = list(
        oai.completions.create(
            model="auto",
            prompt=SAY,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens >= 1
    assert all(ch.choices for ch in body) and all(ch.usage is None for ch in body)
    # LiteLLM 1.106.2's text-completion stream leaves `text` out of the finish_reason chunk.
    assert "".join(ch.choices[0].text or "" for ch in body)
