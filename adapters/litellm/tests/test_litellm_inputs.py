"""Issue 11, through a real proxy: everything the member reads is checked; limits before work.

Each case is a row of the issue's table: the risky text hidden in some position or shape is
blocked (403), content PALM cannot read is refused naming the field (400), oversized bodies are
refused with 413 in the OpenAI error shape, and no malformed body gets a 500.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from litellm_proxy_fixtures import BLOCK_WORD, RULE_ID, Proxy

RISKY = f"Tell me about {BLOCK_WORD} please"
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}


@pytest.fixture(scope="module")
def http(proxy: Proxy) -> Iterator[httpx.Client]:
    key = proxy.deployment.keys["alice"]
    with httpx.Client(
        base_url=proxy.url, timeout=120, headers={"Authorization": f"Bearer {key}"}
    ) as c:
        yield c


def chat(http: httpx.Client, messages: Any, **extra: Any) -> httpx.Response:
    body = {"model": "auto", "messages": messages, "max_tokens": 2, **extra}
    return http.post("/v1/chat/completions", json=body)


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) >= {"error"}, body
    err = body["error"]
    assert isinstance(err, dict) and {"message", "type", "param", "code"} <= set(err), body
    return err


HIDDEN: dict[str, dict[str, Any]] = {
    "earlier user turn": {
        "messages": [
            {"role": "user", "content": RISKY},
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "Go on."},
        ]
    },
    "system message": {
        "messages": [{"role": "system", "content": RISKY}, {"role": "user", "content": "Hi"}]
    },
    "developer message": {
        "messages": [{"role": "developer", "content": RISKY}, {"role": "user", "content": "Hi"}]
    },
    "assistant prefill": {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": RISKY}]
    },
    "tool message": {
        "messages": [
            {"role": "user", "content": "Look it up"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": RISKY},
        ]
    },
    "tool call arguments": {
        "messages": [
            {"role": "user", "content": "Hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {**CALL, "function": {"name": "f", "arguments": json.dumps({"q": RISKY})}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        ]
    },
    "role User": {"messages": [{"role": "User", "content": RISKY}]},
    "role USER in parts": {
        "messages": [{"role": "USER", "content": [{"type": "text", "text": RISKY}]}]
    },
    "input_text part": {
        "messages": [{"role": "user", "content": [{"type": "input_text", "text": RISKY}]}]
    },
    "second text part": {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": RISKY}],
            }
        ]
    },
    "name field": {"messages": [{"role": "user", "name": BLOCK_WORD, "content": "Hi"}]},
    "tool description": {
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "description": RISKY}}],
        # The guard reads tool descriptions before any member (or drop_params) sees them.
        "drop_params": True,
    },
}


@pytest.mark.parametrize("case", sorted(HIDDEN))
def test_risky_text_anywhere_is_blocked(http: httpx.Client, case: str) -> None:
    body = dict(HIDDEN[case])
    r = chat(http, body.pop("messages"), **body)
    assert r.status_code == 403, (case, r.text)
    assert RULE_ID in error_of(r)["message"]


UNREADABLE: dict[str, tuple[Any, str]] = {
    "role human": ([{"role": "human", "content": "Hi"}], "messages[0].role"),
    "content object": (
        [{"role": "user", "content": {"type": "text", "text": RISKY}}],
        "messages[0].content",
    ),
    "content 42": ([{"role": "user", "content": 42}], "messages[0].content"),
    "image part": (
        [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
            }
        ],
        "messages[0].content[0]",
    ),
    "unknown part": (
        [{"role": "user", "content": [{"type": "hologram", "data": RISKY}]}],
        "messages[0].content[0].type",
    ),
    "text part without text": (
        [{"role": "user", "content": [{"type": "text", "text": 5}]}],
        "messages[0].content[0].text",
    ),
    "messages not a list": ("Hi", "messages"),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_unreadable_content_is_refused_naming_the_field(http: httpx.Client, case: str) -> None:
    messages, param = UNREADABLE[case]
    r = chat(http, messages)
    assert r.status_code == 400, (case, r.text)
    err = error_of(r)
    assert err["param"] == param and err["type"] == "invalid_request_error", err


@pytest.mark.parametrize(
    ("extra", "param"), [({"stop": 5}, "stop"), ({"stop": ["a", 1]}, "stop[1]")]
)
def test_wrong_types_are_400_not_500(http: httpx.Client, extra: Any, param: str) -> None:
    r = chat(http, [{"role": "user", "content": "Hi"}], **extra)
    assert r.status_code == 400, r.text
    assert error_of(r)["param"] == param


@pytest.mark.parametrize("raw", [b"null", b"[]", b'[{"model": "auto"}]', b"42", b'"x"'])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/palm/v1/profile"])
def test_a_json_body_that_is_not_an_object_is_400(
    http: httpx.Client, raw: bytes, path: str
) -> None:
    r = http.post(path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert error_of(r)["type"] == "invalid_request_error"


def test_a_10_mb_body_is_413(http: httpx.Client) -> None:
    big = "a " * (5 * 1024 * 1024)
    r = chat(http, [{"role": "user", "content": big}])
    assert r.status_code == 413, r.text[:300]
    err = error_of(r)
    assert err == {**err, "type": "invalid_request_error", "code": "413", "param": None}


def test_a_chunked_body_over_the_limit_is_413(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"a" * 65536
        yield b'"}]}'

    r = http.post(
        "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413, r.text[:300]
    assert error_of(r)["code"] == "413"


def test_a_1_mb_message_is_413_naming_the_message(http: httpx.Client) -> None:
    # Under the 1 MiB body limit, over the per-message character limit (256 Ki).
    r = chat(http, [{"role": "user", "content": "a" * 1_000_000}])
    assert r.status_code == 413, r.text[:300]
    err = error_of(r)
    assert err["param"] == "messages[0]" and err["code"] == "413", err


def test_readable_request_is_still_served(http: httpx.Client) -> None:
    r = chat(
        http,
        [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "User", "content": [{"type": "input_text", "text": "Hello"}]},
        ],
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-palm-member"]
