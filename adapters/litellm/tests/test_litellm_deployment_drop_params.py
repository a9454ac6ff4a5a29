"""``drop_params`` set on a deployment (``model_list[].litellm_params``), through a real proxy.

LiteLLM reads ``drop_params`` in three places: ``litellm_settings`` (always drops), the request,
and the deployment that serves it (the router merges the deployment's params under the
request's, so a request's own value wins). PALM's gate follows the same order for the member's
model group. The deployment here (tiny real ONNX members, as in ``litellm_proxy_fixtures``):

- ``balanced`` (what alice's default profile is served): ``drop_params: true``;
- ``playful``: nothing set (unsupported parameters are refused);
- ``base`` (serves the prompted member ``terse``): ``additional_drop_params: [logprobs]``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import yaml
from litellm_proxy_fixtures import Deployment, Proxy, build_deployment, start_proxy, stop_proxy

HI: Any = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def drop_proxy(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    root = tmp_path_factory.mktemp("deployment-drop")
    for folder in ("tok", "models"):  # the session's tiny models: not built twice
        shutil.copytree(deployment.root / folder, root / folder)
    dep = build_deployment(root)
    config = yaml.safe_load((root / "config.yaml").read_text())
    for entry in config["model_list"]:
        if entry["model_name"] == "balanced":
            entry["litellm_params"]["drop_params"] = True
        elif entry["model_name"] == "base":
            entry["litellm_params"]["additional_drop_params"] = ["logprobs"]
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proxy = start_proxy(dep)
    yield proxy
    stop_proxy(proxy)


def client(proxy: Proxy, who: str) -> openai.OpenAI:
    dep = proxy.deployment
    api_key = dep.master_key if who == "master" else dep.keys[who]
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=api_key, max_retries=0, timeout=60)


def chat(proxy: Proxy, who: str, model: str, **kw: Any) -> Any:
    """The raw response (headers name the member that served) of one chat call."""
    with client(proxy, who) as oai:
        raw = oai.chat.completions.with_raw_response.create(
            model=model, messages=HI, max_tokens=4, **kw
        )
        return raw.headers, raw.parse()


def test_the_members_deployment_drops_them(drop_proxy: Proxy) -> None:
    headers, out = chat(drop_proxy, "alice", "auto", logprobs=True, logit_bias={"1": 5}, n=2)
    assert headers["x-palm-member"] == "balanced"
    assert len(out.choices) == 1 and out.choices[0].message.content
    assert out.choices[0].logprobs is None


def test_the_requests_own_drop_params_wins(drop_proxy: Proxy) -> None:
    """``drop_params: false`` in the request overrides the deployment's, as in LiteLLM."""
    with pytest.raises(openai.BadRequestError) as info:
        chat(drop_proxy, "alice", "auto", logprobs=True, extra_body={"drop_params": False})
    assert info.value.body["param"] == "logprobs"  # type: ignore[index]


def test_a_deployment_without_it_still_refuses(drop_proxy: Proxy) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        chat(drop_proxy, "master", "playful", user="ops", logprobs=True)
    assert "UnsupportedParamsError" in str(info.value)
    assert info.value.body["param"] == "logprobs"  # type: ignore[index]
    headers, out = chat(drop_proxy, "master", "balanced", user="ops", logprobs=True)
    assert headers["x-palm-member"] == "balanced" and out.choices[0].logprobs is None


def test_additional_drop_params_drops_only_those(drop_proxy: Proxy) -> None:
    headers, out = chat(drop_proxy, "master", "terse", user="ops", logprobs=True)
    assert headers["x-palm-member"] == "terse" and out.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as info:
        chat(drop_proxy, "master", "terse", user="ops", logprobs=True, presence_penalty=1)
    assert info.value.body["param"] == "presence_penalty"  # type: ignore[index]


def test_other_doors_honour_it(drop_proxy: Proxy) -> None:
    with client(drop_proxy, "alice") as oai:
        out = oai.responses.create(
            model="auto", input="Hello", max_output_tokens=16, reasoning={"effort": "high"}
        )
        text = oai.completions.create(model="auto", prompt="Hello", max_tokens=4, echo=True)
    assert out.output_text
    assert text.choices[0].text
