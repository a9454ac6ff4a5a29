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
