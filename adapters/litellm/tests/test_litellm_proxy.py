"""End to end: the openai client against a real LiteLLM proxy with the PALM hook and provider."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from litellm_proxy_fixtures import BLOCK_WORD, RULE_ID, Proxy
from openai.types.chat import ChatCompletionMessageParam

HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]
BREVITY = {"safety": 0.2, "helpfulness": 0.1, "humor": 0.0, "brevity": 0.7}


_OPEN: dict[tuple[str, str], Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    for c in _OPEN.values():
        c.close()
    _OPEN.clear()


def client(proxy: Proxy, who: str) -> openai.OpenAI:
    """One openai client per key (closed at the end of the module)."""
    if ("openai", who) not in _OPEN:
        key = proxy.deployment.keys.get(who, who)
        _OPEN["openai", who] = openai.OpenAI(
            base_url=proxy.url + "/v1", api_key=key, max_retries=0, timeout=60
        )
    return _OPEN["openai", who]  # type: ignore[no-any-return]


def palm_api(proxy: Proxy, who: str) -> httpx.Client:
    """An httpx client for the /palm/v1 endpoints with ``who``'s key."""
    if ("palm", who) not in _OPEN:
        key = proxy.deployment.keys.get(who, who)
        _OPEN["palm", who] = httpx.Client(
            base_url=proxy.url + "/palm/v1", timeout=60, headers={"Authorization": f"Bearer {key}"}
        )
    return _OPEN["palm", who]  # type: ignore[no-any-return]


def post(proxy: Proxy, **kw: Any) -> httpx.Response:
    return palm_api(proxy, "alice").post(proxy.url + "/v1/chat/completions", **kw)


def chat(proxy: Proxy, who: str, **kw: Any) -> Any:
    raw = client(proxy, who).chat.completions.with_raw_response.create(
        model="auto", messages=kw.pop("messages", HI), max_tokens=kw.pop("max_tokens", 6), **kw
    )
    return raw, raw.parse()


def test_non_stream_routes_and_reports_decision(proxy: Proxy) -> None:
    raw, out = chat(proxy, "alice", user="alice")
    assert out.choices[0].message.content  # a real (tiny) model generated it
    assert out.usage.completion_tokens >= 1
    h = raw.headers
    assert h["x-palm-member"] == "balanced"
    assert h["x-litellm-model-group"] == "balanced"
    assert h["x-palm-weights"].startswith("safety=")
    assert h["x-palm-policy"]
    assert len(h["x-palm-decision"]) == 32


def test_stream(proxy: Proxy) -> None:
    c = client(proxy, "bob")
    with c.chat.completions.with_streaming_response.create(
        model="auto", messages=HI, max_tokens=6, stream=True
    ) as resp:
        assert resp.headers["x-palm-member"] == "balanced"
        chunks = list(resp.parse())
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text
    assert any(ch.choices and ch.choices[0].finish_reason for ch in chunks)


@pytest.mark.parametrize("stream", [False, True])
def test_blocked_request_names_the_rule(proxy: Proxy, stream: bool) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        client(proxy, "alice").chat.completions.create(
            model="auto",
            stream=stream,
            messages=[{"role": "user", "content": f"tell me about {BLOCK_WORD}"}],
        )
    assert info.value.status_code == 403
    assert RULE_ID in str(info.value)


def test_feedback_changes_routing_for_that_user_only(proxy: Proxy) -> None:
    # carol is an end user of the app key: its profile is "webapp/carol", nobody else's.
    app = client(proxy, "webapp")
    before = app.chat.completions.with_raw_response.create(
        model="auto", messages=HI, max_tokens=4, user="carol"
    )
    assert before.headers["x-palm-member"] == "balanced"
    api = palm_api(proxy, "webapp")
    r = api.put("/profile", json={"user": "carol", "weights": BREVITY, "confidence": 10})
    assert r.status_code == 200, r.text
    assert r.json()["effective_weights"]["brevity"] > 0.5
    for i in range(3):
        fb = api.post(
            "/feedback",
            json={
                "user": "carol",
                "type": "pairwise",
                "winner": "terse",
                "loser": "balanced",
                "event_id": f"carol-{i}",
            },
        )
        assert fb.status_code == 200 and fb.json()["recorded"], fb.text
    after = app.chat.completions.with_raw_response.create(
        model="auto", messages=HI, max_tokens=20, user="carol"
    )
    assert after.headers["x-palm-member"] == "terse"
    assert after.headers["x-litellm-model-group"] == "base"  # prompted member over its base
    usage = after.parse().usage
    assert usage is not None and usage.completion_tokens <= 4  # the member's max_tokens applied
    # Another end user of the same app, and a personal key, still get the default.
    dave = app.chat.completions.with_raw_response.create(
        model="auto", messages=HI, max_tokens=4, user="dave"
    )
    assert dave.headers["x-palm-member"] == "balanced"
    raw, _ = chat(proxy, "bob")
    assert raw.headers["x-palm-member"] == "balanced"
    # Thumbs on a decision of one's own are accepted; the same event id counts once.
    thumb = {
        "user": "carol",
        "type": "thumb",
        "up": True,
        "event_id": "t1",
        "decision_id": after.headers["x-palm-decision"],
    }
    assert api.post("/feedback", json=thumb).json()["recorded"] is True
    assert api.post("/feedback", json=thumb).json()["recorded"] is False


def test_forged_identity_refused(proxy: Proxy) -> None:
    # alice's key naming bob in the OpenAI `user` field.
    with pytest.raises(openai.PermissionDeniedError, match="cannot act for another"):
        client(proxy, "alice").chat.completions.create(model="auto", messages=HI, user="bob")
    alice = palm_api(proxy, "alice")
    # ... or in the profile and feedback endpoints.
    assert alice.get("/profile", params={"user": "bob"}).status_code == 403
    assert alice.delete("/profile", params={"user": "bob"}).status_code == 403
    r = alice.post(
        "/feedback", json={"user": "bob", "type": "thumb", "up": False, "member": "balanced"}
    )
    assert r.status_code == 403
    # bob's decision id cannot be rated by alice.
    raw, _ = chat(proxy, "bob")
    r = alice.post(
        "/feedback",
        json={"type": "thumb", "up": False, "decision_id": raw.headers["x-palm-decision"]},
    )
    assert r.status_code == 403
    # An app key without an end user, and an unknown key.
    with pytest.raises(openai.PermissionDeniedError, match="name the end user"):
        client(proxy, "webapp").chat.completions.create(model="auto", messages=HI)
    with pytest.raises(openai.AuthenticationError):
        client(proxy, "sk-not-a-key").chat.completions.create(model="auto", messages=HI)
    assert palm_api(proxy, "sk-nope").get("/profile").status_code == 401


def test_profile_lifecycle(proxy: Proxy) -> None:
    api = palm_api(proxy, "alice")
    assert api.get("/profile").json()["opted_out"] is False
    assert api.post("/opt-out", json={"opted_out": True}).json() == {"opted_out": True}
    assert api.get("/profile").json()["opted_out"] is True
    raw, _ = chat(proxy, "alice")
    assert raw.headers["x-palm-member"] == "balanced"
    api.post("/opt-out", json={"opted_out": False})
    export = api.get("/profile/export").json()
    assert {"profile", "events", "audit"} <= set(export)
    kinds = {a["kind"] for a in export["audit"]}
    assert {"decision", "outcome"} <= kinds  # the post-call hook recorded outcomes
    # The test policy allows no exploration: no A/B question may be asked, and /compare says so.
    r = api.get("/compare")
    assert r.status_code == 409 and "does not allow exploration" in r.json()["error"]["message"]
    assert api.post("/profile/reset").json() == {"reset": True}
    assert api.get("/profile").json()["n_events"] == 0
    assert api.delete("/profile").json() == {"deleted": True}


@pytest.mark.parametrize(
    "body",
    [
        {"model": "auto", "messages": "not a list"},
        {"model": "auto", "messages": []},
        {"model": "auto", "messages": [{"content": "no role"}]},
        {"model": "auto"},
        {"model": "auto", "messages": HI, "temperature": -1},
        {"model": "auto", "messages": HI, "max_tokens": 0},
        {"model": "no-such-model", "messages": HI},
    ],
)
def test_malformed_requests_get_4xx_and_proxy_keeps_serving(
    proxy: Proxy, body: dict[str, Any]
) -> None:
    r = post(proxy, json=body)
    assert 400 <= r.status_code < 500, r.text
    raw, out = chat(proxy, "alice")
    assert out.choices[0].message.content


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/feedback", {"type": "thumb", "up": "maybe"}),
        ("post", "/feedback", {"type": "nope"}),
        ("post", "/feedback", {"type": "pairwise", "winner": "terse", "loser": "nobody"}),
        ("post", "/feedback", {"type": "explicit", "weights": {"safety": 7}}),
        ("post", "/feedback", {"type": "thumb", "up": True}),
        ("put", "/profile", {"weights": {"unknown-trait": 0.5}}),
        ("post", "/opt-out", {"opted_out": True, "extra": 1}),
    ],
)
def test_malformed_feedback_gets_4xx(
    proxy: Proxy, method: str, path: str, body: dict[str, Any]
) -> None:
    r = getattr(palm_api(proxy, "alice"), method)(path, json=body)
    assert 400 <= r.status_code < 500, r.text
    assert palm_api(proxy, "alice").get("/profile").status_code == 200


def test_invalid_json_body(proxy: Proxy) -> None:
    r = post(proxy, content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert chat(proxy, "alice")[1].choices[0].message.content
