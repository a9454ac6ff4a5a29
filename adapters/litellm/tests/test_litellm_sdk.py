"""Issue 11, the SDK door: an in-process ``litellm.Router`` with PALM installed routes per user,
blocks per policy and audits, for every request shape (tiny real ONNX members, no proxy)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import litellm
import pytest
import yaml
from litellm.exceptions import UnsupportedParamsError
from litellm.router import Router
from litellm_proxy_fixtures import BLOCK_WORD, RULE_ID, Deployment, build_deployment

from palm_litellm import sdk
from palm_litellm.config import PalmRuntime
from palm_litellm.errors import AccessDenied
from palm_litellm.provider import PalmProvider
from palm_middleware import DecisionBlocked, IdentityError
from palm_middleware.identity import Principal

HI = [{"role": "user", "content": "Hello there"}]

# LiteLLM's Responses and Anthropic paths import pydantic models of ReadOnly TypedDicts, which
# warn when first built (harmless here).
pytestmark = pytest.mark.filterwarnings("ignore:Item.*ReadOnly:UserWarning")


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, PalmRuntime]]:
    dep: Deployment = build_deployment(tmp_path_factory.mktemp("sdk"))
    runtime = PalmRuntime.from_file(dep.root / "palm.yaml")
    saved = (list(litellm.callbacks), litellm.custom_provider_map)
    litellm.custom_provider_map = [
        {"provider": "palm_onnx", "custom_handler": PalmProvider(runtime)}
    ]
    from litellm.utils import custom_llm_setup

    custom_llm_setup()  # type: ignore[no-untyped-call]  # litellm leaves it unannotated
    model_list = yaml.safe_load((dep.root / "config.yaml").read_text())["model_list"]
    router = Router(model_list=model_list)
    sdk.install(router, runtime)
    yield router, runtime
    litellm.callbacks[:] = saved[0]
    litellm.custom_provider_map = saved[1]


def audit_kinds(runtime: PalmRuntime, user: str) -> list[str]:
    assert runtime.palm.pending_audit == 0
    return [r.kind for r in runtime.palm.store.audit(runtime.palm.user_key(user))]


def test_routes_per_user_and_audits(door: tuple[Any, PalmRuntime]) -> None:
    router, runtime = door

    async def go() -> Any:
        with sdk.acting_as("alice"):
            return await router.acompletion(model="auto", messages=HI, max_tokens=4)

    out = asyncio.run(go())
    assert out.choices[0].message.content
    assert out.model == "balanced"  # the member's group served, not the fallback deployment
    assert "decision" in audit_kinds(runtime, "alice")


def test_blocks_per_policy(door: tuple[Any, PalmRuntime]) -> None:
    router, runtime = door
    risky = [{"role": "user", "content": f"tell me about {BLOCK_WORD}"}]

    async def go() -> None:
        with sdk.acting_as("bob"):
            await router.acompletion(model="auto", messages=risky, max_tokens=4)

    with pytest.raises(DecisionBlocked) as info:
        asyncio.run(go())
    assert info.value.rule_id == RULE_ID
    assert "block" in audit_kinds(runtime, "bob")


@pytest.mark.parametrize("shape", ["stream", "text", "responses", "anthropic"])
def test_every_shape_is_decided(door: tuple[Any, PalmRuntime], shape: str) -> None:
    router, runtime = door
    user = f"shape-{shape}"

    async def go() -> None:
        with sdk.acting_as(user):
            if shape == "stream":
                stream = await router.acompletion(
                    model="auto", messages=HI, max_tokens=4, stream=True
                )
                async for _ in stream:
                    pass
            elif shape == "text":
                await router.atext_completion(model="auto", prompt="Hello", max_tokens=4)
            elif shape == "responses":
                await router.aresponses(model="auto", input="Hello", max_output_tokens=4)
            else:
                await router.aanthropic_messages(model="auto", messages=HI, max_tokens=4)

    asyncio.run(go())
    assert audit_kinds(runtime, user).count("decision") == 1


@pytest.mark.parametrize("shape", ["text", "responses", "anthropic"])
def test_every_shape_blocks(door: tuple[Any, PalmRuntime], shape: str) -> None:
    router, _ = door
    risky = f"tell me about {BLOCK_WORD}"

    async def go() -> None:
        with sdk.acting_as("eve"):
            if shape == "text":
                await router.atext_completion(model="auto", prompt=risky, max_tokens=4)
            elif shape == "responses":
                await router.aresponses(model="auto", input=risky, max_output_tokens=4)
            else:
                msgs = [{"role": "user", "content": risky}]
                await router.aanthropic_messages(model="auto", messages=msgs, max_tokens=4)

    with pytest.raises(Exception) as info:
        asyncio.run(go())
    assert RULE_ID in str(info.value)


def test_identity_comes_from_the_app_not_the_request(door: tuple[Any, PalmRuntime]) -> None:
    router, runtime = door

    async def call(**kw: Any) -> Any:
        return await router.acompletion(model="auto", messages=HI, max_tokens=4, **kw)

    async def go() -> None:
        # No caller set: refused, whatever the request says.
        with pytest.raises(IdentityError):
            await call(user="alice", metadata={"palm": {"user": "alice"}})
        # A personal caller cannot act for another user.
        with sdk.acting_as("mallory"), pytest.raises(IdentityError):
            await call(user="alice")
        # An app names its end users; they live under the app's namespace.
        with sdk.acting_as(Principal("shop", acts_for_end_users=True)):
            await call(user="alice")

    asyncio.run(go())
    assert "decision" in audit_kinds(runtime, "shop/alice")


def test_members_named_directly(door: tuple[Any, PalmRuntime]) -> None:
    router, _ = door

    async def go(admin: bool) -> Any:
        with sdk.acting_as("ops", admin=admin):
            return await router.acompletion(model="playful", messages=HI, max_tokens=4)

    with pytest.raises(AccessDenied):
        asyncio.run(go(admin=False))
    assert asyncio.run(go(admin=True)).choices[0].message.content


def test_example_runs(tmp_path: Path) -> None:
    import runpy

    dep = build_deployment(tmp_path)
    saved = (list(litellm.callbacks), litellm.custom_provider_map)
    ns = runpy.run_path(str(Path(__file__).parents[3] / "examples/litellm/sdk_router.py"))
    try:
        lines = asyncio.run(ns["main"](dep.root / "palm.yaml", dep.root / "config.yaml"))
    finally:
        litellm.callbacks[:] = saved[0]
        litellm.custom_provider_map = saved[1]
    assert any(line.startswith("alice ->") for line in lines)
    assert any("refused" in line for line in lines)


def test_unsupported_params_raise_litellms_error(door: tuple[Any, PalmRuntime]) -> None:
    """Issue 14: the SDK door refuses what a local member cannot do, as LiteLLM does."""
    router, runtime = door

    async def go(**kw: Any) -> Any:
        with sdk.acting_as("alice"):
            return await router.acompletion(model="auto", messages=HI, max_tokens=4, **kw)

    before = len(runtime.palm.store.audit(runtime.palm.user_key("alice")))
    with pytest.raises(UnsupportedParamsError) as info:
        asyncio.run(go(logprobs=True))
    assert info.value.status_code == 400
    assert "logprobs" in str(info.value) and "drop_params" in str(info.value)
    with pytest.raises(UnsupportedParamsError):
        asyncio.run(go(n=3))
    # Refused before any decision: nothing was audited for these calls.
    assert len(runtime.palm.store.audit(runtime.palm.user_key("alice"))) == before
    out = asyncio.run(go(logprobs=True, n=3, drop_params=True))
    assert len(out.choices) == 1 and out.choices[0].message.content


def test_global_drop_params_drops(door: tuple[Any, PalmRuntime]) -> None:
    """``litellm.drop_params = True`` (``litellm_settings.drop_params``) drops them too."""
    router, _ = door

    async def go() -> Any:
        with sdk.acting_as("alice"):
            return await router.acompletion(model="auto", messages=HI, max_tokens=4, logprobs=True)

    saved = litellm.drop_params
    litellm.drop_params = True
    try:
        out = asyncio.run(go())
    finally:
        litellm.drop_params = saved
    assert out.choices[0].message.content


def test_deployment_drop_params_drops(door: tuple[Any, PalmRuntime]) -> None:
    """A deployment's ``litellm_params.drop_params`` drops them for its member (SDK door)."""
    router, runtime = door
    model_list = [
        {**d, "litellm_params": {**d["litellm_params"], "drop_params": name == "balanced"}}
        for d in router.get_model_list()
        if (name := d["model_name"]) in ("auto", "balanced", "playful", "base")
    ]
    own: Any = Router(model_list=model_list)
    sdk.install(own, runtime)

    async def go(**kw: Any) -> Any:
        with sdk.acting_as("alice"):
            return await own.acompletion(model="auto", messages=HI, max_tokens=4, **kw)

    out = asyncio.run(go(logprobs=True))  # alice is served balanced, whose deployment drops
    assert out.choices[0].message.content and getattr(out.choices[0], "logprobs", None) is None
    with pytest.raises(UnsupportedParamsError):
        asyncio.run(go(logprobs=True, drop_params=False))  # the call's own value wins
