"""palm_litellm pieces in-process: request mapping, keys, principals, palm.yaml errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from litellm_proxy_fixtures import Deployment

from palm_litellm.auth import key_digest, principal_of
from palm_litellm.config import KeyEntry, PalmRuntime, Target
from palm_litellm.errors import status_for
from palm_litellm.hook import apply_target
from palm_litellm.provider import to_params, to_prompt
from palm_middleware import ConfigError, DecisionBlocked, GenerationError, IdentityError
from palm_middleware.identity import Principal


def test_apply_target_prompted_member() -> None:
    data: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 100,
        "stop": "END",
        "temperature": 1.0,
    }
    apply_target(
        data,
        Target(
            "base",
            system_prompt="Be brief.",
            few_shot=({"role": "user", "content": "q"},),
            generation={"max_tokens": 8, "temperature": 0.0, "stop": ["\n"], "top_k": 5},
        ),
    )
    assert data["model"] == "base"
    assert [m["role"] for m in data["messages"]] == ["system", "user", "user"]
    assert data["messages"][0]["content"] == "Be brief."
    assert data["max_tokens"] == 8 and data["temperature"] == 0.0
    assert data["stop"] == ["\n", "END"]
    assert "top_k" not in data  # no OpenAI field of that name


def test_apply_target_plain_member_keeps_request() -> None:
    data: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    apply_target(data, Target("balanced"))
    assert data == {"model": "balanced", "messages": [{"role": "user", "content": "hi"}]}


def test_to_prompt_and_params() -> None:
    msgs: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a"},
                {"type": "image_url", "image_url": {}},
                {"type": "text", "text": "b"},
            ],
        },
        {"role": "assistant", "content": None},
    ]
    assert to_prompt(msgs) == [
        {"role": "user", "content": "a b"},
        {"role": "assistant", "content": ""},
    ]
    assert to_params(
        {"max_completion_tokens": 3, "temperature": 0.5, "stream": True, "max_retries": 2}
    ) == {"max_tokens": 3, "temperature": 0.5}


def test_key_entries() -> None:
    d = key_digest("sk-x")
    assert KeyEntry(sha256=d, user="alice").principal == Principal("alice")
    assert KeyEntry(sha256=d, app="web").principal == Principal("web", acts_for_end_users=True)
    with pytest.raises(ValueError, match="exactly one"):
        KeyEntry(sha256=d, user="a", app="b")
    with pytest.raises(ValueError):
        KeyEntry(sha256="not-a-digest", user="a")


def test_principal_of() -> None:
    d = key_digest("sk-web")
    keys = {d: KeyEntry(sha256=d, app="web")}
    ours = SimpleNamespace(api_key=d, metadata={}, user_role="internal_user", user_id="web")
    assert principal_of(ours, keys=keys) == Principal("web", acts_for_end_users=True)
    # Metadata on a virtual key is written by whoever created the key: never trusted.
    forged = SimpleNamespace(
        api_key="other",
        user_role="internal_user",
        user_id="mallory",
        metadata={"palm_principal": "web", "palm_acts_for_end_users": True},
    )
    assert principal_of(forged, keys=keys) == Principal("mallory")
    admin = SimpleNamespace(metadata={}, user_role=SimpleNamespace(value="proxy_admin"))
    assert principal_of(admin, master_key_app="ops") == Principal("ops", True)
    with pytest.raises(IdentityError):
        principal_of(admin, master_key_app=None)
    virtual = SimpleNamespace(metadata={}, user_role="internal_user", user_id="u7")
    assert principal_of(virtual) == Principal("u7")
    with pytest.raises(IdentityError):
        principal_of(SimpleNamespace(metadata={}, user_role=None, user_id="default_user_id"))


def test_status_mapping() -> None:
    assert status_for(DecisionBlocked("r", "no")) == 403
    assert status_for(IdentityError("x")) == 403
    assert status_for(GenerationError("x")) == 400


def test_runtime_targets_and_engines(deployment: Deployment) -> None:
    rt = PalmRuntime.from_file(deployment.root / "palm.yaml")
    assert rt.targets["balanced"] == Target("balanced")
    terse = rt.targets["terse"]
    assert terse.group == "base" and terse.system_prompt == "Answer in one line."
    assert rt.engine("base").name == "base"
    out = rt.engine("balanced").generate([{"role": "user", "content": "hi"}], {"max_tokens": 3})
    assert out.usage.completion_tokens == 3
    with pytest.raises(ConfigError, match="neither a portfolio member nor a base"):
        rt.engine("ghost")


def test_palm_yaml_errors_are_located(tmp_path: Path) -> None:
    (tmp_path / "palm.yaml").write_text("portfolio: p.yaml\nroute_modelz: [auto]\n")
    with pytest.raises(ConfigError, match=r"palm\.yaml:2"):
        PalmRuntime.from_file(tmp_path / "palm.yaml")


# Importing litellm.proxy warns about pydantic ReadOnly TypedDict items (harmless here).
@pytest.mark.filterwarnings("ignore:Item.*ReadOnly:UserWarning")
def test_client_cannot_forge_the_hooks_request_state(deployment: Deployment) -> None:
    import asyncio

    from litellm.proxy._types import ProxyException, UserAPIKeyAuth

    from palm_litellm.hook import PalmProxyHook

    hook = PalmProxyHook(PalmRuntime.from_file(deployment.root / "palm.yaml"))
    forged = {"user": "victim", "headers": {"x-palm-member": "evil"}}
    data: dict[str, Any] = {
        "model": "balanced",
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"palm": forged, "requester_metadata": {"palm": forged}},
    }
    alice = UserAPIKeyAuth(api_key=key_digest(deployment.keys["alice"]), user_id="alice")
    with pytest.raises(ProxyException) as info:  # a member named directly: refused
        asyncio.run(hook.async_pre_call_hook(alice, None, data, "acompletion"))
    assert info.value.code == "403" and info.value.param == "model"
    assert "palm" not in data["metadata"]
    assert "palm" not in data["metadata"]["requester_metadata"]


def test_prompted_members_few_shot_pairs_become_chat_messages(tmp_path: Path) -> None:
    # A manifest may write examples as {user, assistant} pairs; through the proxy the member
    # must see the same chat messages as in-process (palm eval measured it that way).
    from palm_litellm.config import PalmProxySettings
    from palm_middleware.engines.onnx import normalize_few_shot

    pairs = [{"user": "Why do cats purr?", "assistant": "To show they are content."}]
    (tmp_path / "p.yaml").write_text(
        "version: 1\ntraits: [a, b]\nmembers:\n"
        "  - id: terse\n    reward: {a: 0.9, b: 0.1}\n"
        "    backend: {kind: prompted, base: tiny, system_prompt: Be brief., few_shot: "
        "[{user: 'Why do cats purr?', assistant: 'To show they are content.'}]}\n"
        "  - id: other\n    reward: {a: 0.1, b: 0.9}\n"
        "    backend: {kind: prompted, base: tiny}\n"
    )
    (tmp_path / "pol.yaml").write_text(
        "version: 2\ntraits: [a, b]\ndefaults: {weights: {a: 0.5, b: 0.5}}\n"
    )
    rt = PalmRuntime(
        PalmProxySettings(portfolio="p.yaml", store=":memory:", policy="pol.yaml"), root=tmp_path
    )
    data: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    apply_target(data, rt.targets["terse"])
    assert data["messages"] == [
        {"role": "system", "content": "Be brief."},
        *normalize_few_shot(pairs),
        {"role": "user", "content": "hi"},
    ]
    assert to_prompt(data["messages"]) == data["messages"]


def test_constraints_are_unsupported_without_llguidance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the ``grammar`` extra, response_format/tools are refused as LiteLLM refuses."""
    import sys

    from litellm.exceptions import UnsupportedParamsError

    from palm_litellm import gate
    from palm_middleware.engines.grammar import available

    data: dict[str, Any] = {"model": "auto", "response_format": {"type": "json_object"}}
    monkeypatch.setattr(gate, "_chat_unsupported_cache", None)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "llguidance", None)
        with pytest.raises(UnsupportedParamsError) as info:
            gate.check_supported(dict(data), "chat")
    assert info.value.param == "response_format"
    monkeypatch.setattr(gate, "_chat_unsupported_cache", None)
    if available():
        body = dict(data)
        gate.check_supported(body, "chat")  # with it: honoured, not refused or dropped
        assert body == data
