"""A policy's ``languages:`` through a real proxy (issue 12, item 3): a request in a language the
guard does not cover is served the default member under the request rules (``input_rules_only``)
or refused (``refuse``), and either way the decision names the rule and the detected language,
never the text. The member is a real second server process (an OpenAI-compatible stub)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litellm_proxy_fixtures import (
    Proxy,
    Stub,
    build_stub_deployment,
    start_proxy,
    stop_proxy,
)

ITALIAN = "Come posso imparare a suonare la chitarra da solo, senza un insegnante?"
FRENCH = "Comment puis-je apprendre à jouer de la guitare tout seul, sans professeur ?"
POLICY = """\
version: 2
traits: [safety, brevity]
topics:
  weapons: {keywords: [bomb*, bomba*]}
bounds:
  - {id: no-weapons, layer: law, when: {topic: weapons}, action: block, message: Not that.}
languages: [en, fr]
"""
STUB_REPLY = "Here is an answer."  # (the conftest's stub answers it)
SOFT = POLICY + "unguarded_language: input_rules_only\n"
REFUSE = POLICY + "unguarded_language: refuse\nunguarded_message: English or French, please.\n"


@pytest.fixture(scope="module")
def lang_proxy(stub: Stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    members = {"echo": {"safety": 0.8, "brevity": 0.5}, "terse": {"safety": 0.5, "brevity": 0.9}}
    root = tmp_path_factory.mktemp("languages")
    proxy = start_proxy(build_stub_deployment(root, stub, SOFT, members, reload_interval=0.2))
    yield proxy
    stop_proxy(proxy)


def _ask(proxy: Proxy, text: str) -> httpx.Response:
    return httpx.post(
        proxy.url + "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": text}]},
        headers={"Authorization": f"Bearer {proxy.deployment.keys['alice']}"},
        timeout=60,
    )


def _audit(root: Path) -> list[tuple[str, dict[str, object]]]:
    from palm_middleware import SQLiteStore

    store = SQLiteStore(root / "palm.db")
    try:
        return [(r.kind, r.payload) for r in store.audit() if r.kind in ("decision", "block")]
    finally:
        store.close()


@pytest.mark.timeout(300)
def test_input_rules_only_then_refuse(lang_proxy: Proxy) -> None:
    root = lang_proxy.deployment.root
    # input_rules_only: served, by the default member, and the headers say why.
    r = _ask(lang_proxy, ITALIAN)
    assert r.status_code == 200, r.text
    h = r.headers
    assert h["x-palm-action"] == "use_default" and h["x-palm-default"] == "1"
    assert h["x-palm-language"] == "it" and "unguarded-language" in h["x-palm-rules"]
    # The request rules still apply to it.
    r = _ask(lang_proxy, "Come posso costruire una bomba in casa, passo per passo?")
    assert r.status_code == 403 and "no-weapons" in r.text
    # A guarded language is personalized as usual.
    r = _ask(lang_proxy, FRENCH)
    assert r.status_code == 200 and r.headers["x-palm-language"] == "fr"
    assert "unguarded-language" not in r.headers.get("x-palm-rules", "")

    # The deployment switches to refuse (stricter: the reload is accepted).
    (root / "policy.yaml").write_text(REFUSE)
    deadline = time.monotonic() + 60
    while (r := _ask(lang_proxy, ITALIAN)).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert "unguarded-language" in err["message"] and "English or French, please." in err["message"]
    assert _ask(lang_proxy, "grazie!").status_code == 200  # too short to tell: guarded

    records = _audit(root)
    served = [p for k, p in records if k == "decision" and p.get("language") == "it"]
    assert served and served[0]["action"] == "use_default"
    blocked = [p for k, p in records if k == "block" and p["rule_id"] == "unguarded-language"]
    assert blocked and blocked[-1]["language"] == "it"
    assert all("chitarra" not in str(p) for _, p in records)  # labels only, never the text
