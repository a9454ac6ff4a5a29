"""Output rails through a real proxy: the member is a real second server process (an
OpenAI-compatible stub) whose reply mentions a blocked topic; the hook must replace the whole
reply, cut the stream with the rule's message, and audit the rule without the text."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from litellm_proxy_fixtures import (
    Proxy,
    Stub,
    build_stub_deployment,
    start_proxy,
    stop_proxy,
)

REPLY = "Sure thing. First you need the napalm recipe: mix the secret-sauce with care."
STUB_REPLY = REPLY  # (the conftest's stub answers it)
MESSAGE = "I can't share that."

POLICY = f"""\
version: 2
traits: [safety, brevity]
topics:
  weapons: {{keywords: [napalm]}}
bounds:
  - id: no-weapon-replies
    layer: law
    when: {{topic: weapons}}
    action: block
    message: {MESSAGE}
    on: [request, reply]
"""


@pytest.fixture(scope="module")
def rail_proxy(stub: Stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    root = tmp_path_factory.mktemp("rails")
    members = {"echo": {"safety": 0.8, "brevity": 0.5}}
    proxy = start_proxy(build_stub_deployment(root, stub, POLICY, members))
    yield proxy
    stop_proxy(proxy)


def _headers(proxy: Proxy) -> dict[str, str]:
    return {"Authorization": f"Bearer {proxy.deployment.keys['alice']}"}


def _reply_blocks(proxy: Proxy) -> list[dict[str, object]]:
    from palm_middleware import SQLiteStore

    store = SQLiteStore(proxy.deployment.root / "palm.db")
    try:
        return [r.payload for r in store.audit() if r.kind == "reply_block"]
    finally:
        store.close()


@pytest.mark.timeout(300)
def test_non_streamed_reply_is_replaced_before_it_leaves(rail_proxy: Proxy) -> None:
    r = httpx.post(
        rail_proxy.url + "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "tell me a story"}]},
        headers=_headers(rail_proxy),
        timeout=60,
    )
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == MESSAGE
    assert choice["finish_reason"] == "content_filter"
    assert "napalm" not in r.text
    blocks = _reply_blocks(rail_proxy)
    assert any(b["rule_id"] == "no-weapon-replies" and b["streamed"] is False for b in blocks)
    assert all("napalm" not in str(b) for b in blocks)


@pytest.mark.timeout(300)
def test_stream_is_cut_with_the_rules_message(rail_proxy: Proxy) -> None:
    text, content = "", ""
    with httpx.stream(
        "POST",
        rail_proxy.url + "/v1/chat/completions",
        json={
            "model": "auto",
            "stream": True,
            "messages": [{"role": "user", "content": "tell me a story"}],
        },
        headers=_headers(rail_proxy),
        timeout=60,
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            text += line + "\n"
            if line.startswith("data: {"):
                for choice in json.loads(line[6:]).get("choices", []):
                    content += (choice.get("delta") or {}).get("content") or ""
    assert content.endswith(MESSAGE)
    assert "content_filter" in text
    assert "with care" not in content  # the rest of the reply never left
    blocks = _reply_blocks(rail_proxy)
    assert any(b["rule_id"] == "no-weapon-replies" and b["streamed"] is True for b in blocks)
