"""Issue 11, the doors: every route and model name that can make a member generate text goes
through ``Palm.decide`` or is refused (a real proxy on 127.0.0.1, tiny real ONNX members).

Keys: alice and bob (personal), webapp (an app key naming its end users), the master key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from litellm_proxy_fixtures import BLOCK_WORD, RULE_ID, Proxy

from palm_middleware import SQLiteStore

RISKY = f"How do I find out about {BLOCK_WORD} at home?"


@pytest.fixture(scope="module")
def http(proxy: Proxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.url, timeout=120) as c:
        yield c


def key(proxy: Proxy, who: str) -> dict[str, str]:
    raw = proxy.deployment.master_key if who == "master" else proxy.deployment.keys[who]
    return {"Authorization": f"Bearer {raw}"}


def body(route: str, model: str, text: str, **extra: Any) -> dict[str, Any]:
    """A minimal request of each shape."""
    if route == "/v1/completions":
        return {"model": model, "prompt": text, "max_tokens": 4, **extra}
    if route == "/v1/responses":
        return {"model": model, "input": text, "max_output_tokens": 4, **extra}
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 4,
        **extra,
    }


ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"]


def error_of(r: httpx.Response) -> dict[str, Any]:
    err = r.json()["error"]
    assert isinstance(err, dict), r.text
    return err


def decision_record(proxy: Proxy, decision_id: str) -> Any:
    store = SQLiteStore(proxy.deployment.root / "palm.db")
    try:
        return store.get_audit(decision_id)
    finally:
        store.close()


@pytest.mark.parametrize("route", ROUTES)
def test_every_text_route_is_decided_and_audited(
    proxy: Proxy, http: httpx.Client, route: str
) -> None:
    r = http.post(route, json=body(route, "auto", "Hello there"), headers=key(proxy, "alice"))
    assert r.status_code == 200, r.text
    decision = r.headers["x-palm-decision"]
    assert r.headers["x-palm-member"] in {"balanced", "terse", "playful"}
    record = decision_record(proxy, decision)
    assert record is not None and record.kind == "decision"


@pytest.mark.parametrize("route", ROUTES)
def test_every_text_route_blocks(proxy: Proxy, http: httpx.Client, route: str) -> None:
    r = http.post(route, json=body(route, "auto", RISKY), headers=key(proxy, "bob"))
    assert r.status_code == 403, r.text
    assert RULE_ID in r.text
    assert "x-palm-member" not in r.headers


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "model", ["balanced", "playful", "base", "palm_onnx/terse", "auto,balanced", "gpt-4o"]
)
@pytest.mark.parametrize("who", ["alice", "webapp"])
def test_naming_a_member_directly_is_refused(
    proxy: Proxy, http: httpx.Client, route: str, model: str, who: str
) -> None:
    r = http.post(route, json=body(route, model, RISKY, user="carol"), headers=key(proxy, who))
    assert r.status_code == 403, r.text
    err = error_of(r)
    assert err["param"] == "model"


def test_request_without_a_model_is_refused(proxy: Proxy, http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", json={"messages": []}, headers=key(proxy, "alice"))
    assert r.status_code == 400, r.text
    assert error_of(r)["param"] == "model"


def test_client_fallbacks_cannot_reach_another_member(proxy: Proxy, http: httpx.Client) -> None:
    payload = body("/v1/chat/completions", "auto", "Hello", fallbacks=["playful"])
    payload["mock_testing_fallbacks"] = True
    r = http.post("/v1/chat/completions", json=payload, headers=key(proxy, "alice"))
    # The client's fallbacks are dropped: the decided member serves (or the call fails), never
    # another member.
    assert r.headers.get("x-litellm-model-group") in (None, "balanced"), r.text


def test_admin_may_name_a_member_and_the_policy_still_runs(
    proxy: Proxy, http: httpx.Client
) -> None:
    ok = http.post(
        "/v1/chat/completions",
        json=body("/v1/chat/completions", "playful", "Hello", user="ops"),
        headers=key(proxy, "master"),
    )
    assert ok.status_code == 200, ok.text
    assert ok.headers["x-palm-member"] == "playful"
    assert ok.headers["x-litellm-model-group"] == "playful"
    blocked = http.post(
        "/v1/chat/completions",
        json=body("/v1/chat/completions", "playful", RISKY, user="ops"),
        headers=key(proxy, "master"),
    )
    assert blocked.status_code == 403 and RULE_ID in blocked.text


@pytest.mark.parametrize("model", ["auto,balanced", "auto,playful", "playful, balanced"])
@pytest.mark.parametrize("who", ["alice", "master"])
def test_comma_model_lists_never_reach_members(
    proxy: Proxy, http: httpx.Client, model: str, who: str
) -> None:
    """LiteLLM fans a comma list out to every model it names, around the pre-call decision:
    refused for every key, the master key included (found by bench/bench_bypass.py)."""
    r = http.post(
        "/v1/chat/completions",
        json=body("/v1/chat/completions", model, RISKY, user="ops"),
        headers=key(proxy, who),
    )
    assert r.status_code == 403, r.text
    assert error_of(r)["param"] == "model"


def test_master_key_cannot_reach_members_through_other_call_types(
    proxy: Proxy, http: httpx.Client
) -> None:
    """A Gemini generateContent call naming `auto` is no text call type PALM decides: refused,
    not passed to LiteLLM (which answered 500)."""
    r = http.post(
        "/v1beta/models/auto:generateContent",
        json={"contents": [{"role": "user", "parts": [{"text": RISKY}]}]},
        headers=key(proxy, "master"),
    )
    assert r.status_code in (400, 403, 404), r.text
    assert "error" in r.json()


@pytest.mark.parametrize("tools", [5, "x", [5], {"type": "function"}])
def test_malformed_tools_are_refused_in_front(
    proxy: Proxy, http: httpx.Client, tools: object
) -> None:
    r = http.post(
        "/v1/chat/completions",
        json=body("/v1/chat/completions", "auto", "Hello", tools=tools),
        headers=key(proxy, "alice"),
    )
    assert r.status_code == 400, r.text
    assert error_of(r)["param"] == "tools"


MANAGEMENT = [
    ("get", "/model/info"),
    ("get", "/v1/model/info"),
    ("get", "/settings"),
    ("get", "/active/callbacks"),
    ("get", "/get/config/callbacks"),
    ("get", "/debug/asyncio-tasks"),
    ("get", "/routes"),
    ("get", "/key/list"),
    ("post", "/key/generate"),
    ("post", "/config/update"),
    ("post", "/v1/embeddings"),
    ("post", "/anthropic/v1/messages"),
    ("post", "/openai/deployments/balanced/chat/completions"),
    ("get", "/palm/v1/../model/info"),
]


@pytest.mark.parametrize(("method", "path"), MANAGEMENT)
@pytest.mark.parametrize("who", ["alice", "webapp"])
def test_management_and_debug_routes_need_the_master_key(
    proxy: Proxy, http: httpx.Client, method: str, path: str, who: str
) -> None:
    r = http.request(method, path, headers=key(proxy, who), json={})
    assert r.status_code in (403, 404), r.text
    if r.status_code == 403:
        assert "master key" in r.text


@pytest.mark.parametrize("path", ["/model/info", "/routes", "/active/callbacks"])
def test_master_key_keeps_management_routes(proxy: Proxy, http: httpx.Client, path: str) -> None:
    assert http.get(path, headers=key(proxy, "master")).status_code == 200


@pytest.mark.parametrize("who", ["alice", "webapp"])
def test_models_lists_only_what_the_key_may_call(
    proxy: Proxy, http: httpx.Client, who: str
) -> None:
    r = http.get("/v1/models", headers=key(proxy, who))
    assert r.status_code == 200, r.text
    assert [m["id"] for m in r.json()["data"]] == ["auto"]
    assert http.get("/v1/models/balanced", headers=key(proxy, who)).status_code == 404
    admin = http.get("/v1/models", headers=key(proxy, "master")).json()
    assert {m["id"] for m in admin["data"]} >= {"auto", "balanced", "playful", "base"}


def test_user_routes_stay_reachable(proxy: Proxy, http: httpx.Client) -> None:
    assert http.get("/palm/v1/profile", headers=key(proxy, "alice")).status_code == 200
    assert http.get("/health/liveliness").status_code == 200
    assert http.get("/health/readiness").status_code == 200
