"""A portfolio mixing local ONNX members with a ``kind: litellm`` member on its own server.

The remote member is served by a second, separate proxy process (an OpenAI-compatible server
running an ONNX member). When it is down, the request falls back to the next-best member the
policy allows for this user and request, the response says so, and the audit records it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import yaml
from litellm_proxy_fixtures import Deployment, Proxy, build_deployment, start_proxy, stop_proxy

pytestmark = pytest.mark.timeout(600)

HUMOR = {"safety": 0.15, "helpfulness": 0.1, "humor": 0.7, "brevity": 0.05}
REMOTE = {
    "id": "remote",
    "backend": {"kind": "litellm", "model": "remote"},
    "reward": {"safety": 0.70, "helpfulness": 0.70, "humor": 0.97, "brevity": 0.45},
}


@dataclass
class Setup:
    main: Proxy
    remote: Proxy


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    remote_dep = build_deployment(tmp_path_factory.mktemp("remote"), with_hook=False)
    remote = start_proxy(remote_dep)
    main_dep = build_deployment(tmp_path_factory.mktemp("main"))
    portfolio = yaml.safe_load((main_dep.root / "portfolio.yaml").read_text())
    portfolio["members"].append(REMOTE)
    (main_dep.root / "portfolio.yaml").write_text(yaml.safe_dump(portfolio, sort_keys=False))
    config = yaml.safe_load((main_dep.root / "config.yaml").read_text())
    config["model_list"].append(
        {
            "model_name": "remote",
            "litellm_params": {
                "model": "openai/playful",  # the remote server's ONNX member
                "api_base": remote.url + "/v1",
                "api_key": remote_dep.master_key,
                "timeout": 20,
                "max_retries": 0,
            },
        }
    )
    config["router_settings"] = {"num_retries": 0}
    (main_dep.root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    main = start_proxy(main_dep)
    try:
        yield Setup(main, remote)
    finally:
        stop_proxy(main)
        stop_proxy(remote)


def client(proxy: Proxy, who: str) -> httpx.Client:
    key = proxy.deployment.keys[who]
    return httpx.Client(base_url=proxy.url, timeout=60, headers={"Authorization": f"Bearer {key}"})


def chat(c: httpx.Client) -> httpx.Response:
    return c.post(
        "/v1/chat/completions",
        json={
            "model": "auto",
            "messages": [{"role": "user", "content": "tell me a joke"}],
            "max_tokens": 3,
        },
    )


def outcomes(dep: Deployment, decision_id: str) -> list[dict[str, object]]:
    from palm_middleware import SQLiteStore

    with SQLiteStore(dep.root / "palm.db") as store:
        return [
            r.payload
            for r in store.audit()
            if r.kind == "outcome" and r.payload.get("decision_id") == decision_id
        ]


def test_remote_member_serves_then_falls_back_to_the_next_best_allowed(setup: Setup) -> None:
    with client(setup.main, "alice") as c:
        assert c.put("/palm/v1/profile", json={"weights": HUMOR}).status_code == 200
        served = chat(c)
        assert served.status_code == 200, served.text
        assert served.headers["x-palm-member"] == "remote"  # from the other server
        assert served.json()["choices"][0]["message"]["content"]
        assert "x-palm-fallback-from" not in served.headers
        ok = outcomes(setup.main.deployment, served.headers["x-palm-decision"])
        assert [o["outcome"] for o in ok] == ["success"]

        stop_proxy(setup.remote)  # the member's server goes down
        resp = chat(c)
        assert resp.status_code == 200, resp.text
        # The next best for these weights that the policy allows: playful (terse is prompted,
        # balanced ranks below playful for a humor-heavy user).
        assert resp.headers["x-palm-fallback-from"] == "remote"
        assert resp.headers["x-palm-member"] == "playful"
        assert resp.json()["choices"][0]["message"]["content"]
        got = outcomes(setup.main.deployment, resp.headers["x-palm-decision"])
        assert [(o["outcome"], o.get("served")) for o in got] == [("fallback", "playful")]


def test_client_cannot_choose_the_stand_ins(setup: Setup) -> None:
    with client(setup.main, "bob") as c:
        resp = c.post(
            "/v1/chat/completions",
            json={
                "model": "auto",
                "messages": [{"role": "user", "content": "hello"}],
                "max_tokens": 2,
                "fallbacks": ["playful"],
            },
        )
        assert resp.status_code == 200
        assert resp.headers["x-palm-member"] == "balanced"
        assert "x-palm-fallback-from" not in resp.headers
