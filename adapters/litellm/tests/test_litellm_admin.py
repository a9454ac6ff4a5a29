"""The population report through a real LiteLLM proxy: master key only, rendered by Chromium."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from litellm_proxy_fixtures import Deployment, Proxy, build_deployment, start_proxy, stop_proxy

from palm_middleware import ExplicitWeights, Palm, load_policy, load_portfolio
from palm_middleware.stores.sqlite import SQLiteStore
from tests.chromium import COLOURS_JS, IMAGES_JS, browser, chromium_binary

GROUPS = {
    "careful": {"safety": 0.7, "helpfulness": 0.2, "humor": 0.05, "brevity": 0.05},
    "brief": {"safety": 0.25, "helpfulness": 0.1, "humor": 0.05, "brevity": 0.6},
    "funny": {"safety": 0.2, "helpfulness": 0.1, "humor": 0.65, "brevity": 0.05},
}
PER_GROUP = 12
HI = [{"role": "user", "content": "Hello there"}]


def _seed(root: Path) -> list[str]:
    """A recorded population in the deployment's own store (before the proxy starts)."""
    store = SQLiteStore(root / "palm.db")
    palm = Palm(
        load_portfolio(root / "portfolio.yaml"),
        load_policy(root / "policy.yaml"),
        store,
        embedder=None,
    )
    rng = np.random.default_rng(0)
    users = []
    for g, w in GROUPS.items():
        for i in range(PER_GROUP):
            user = f"webapp/{g}-{i:02d}@corp.example"
            users.append(user)
            v = np.maximum(np.array(list(w.values())) + rng.normal(0, 0.02, 4), 0.01)
            palm.record_feedback(user, ExplicitWeights(dict(zip(w, (v / v.sum()).tolist()))))
            palm.decide(user, HI)
    keys = [palm.user_key(u) for u in users]
    store.close()
    return users + keys


@pytest.fixture(scope="module")
def admin_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, list[str]]]:
    dep: Deployment = build_deployment(tmp_path_factory.mktemp("admin"))
    secrets = _seed(dep.root)
    proxy = start_proxy(dep)
    try:
        yield proxy, secrets
    finally:
        stop_proxy(proxy)


def _get(proxy: Proxy, path: str, key: str | None, **params: str | int) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(
        proxy.url + "/palm/v1/admin/" + path, headers=headers, params=params, timeout=120
    )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", ["report", "report.json"])
def test_personal_and_app_keys_get_403(admin_proxy: tuple[Proxy, list[str]], path: str) -> None:
    proxy, _ = admin_proxy
    for who in ("alice", "webapp"):
        r = _get(proxy, path, proxy.deployment.keys[who])
        assert r.status_code == 403, r.text
        err = r.json()["error"]
        assert err["type"] == "permission_error" and err["code"] == "403"
        assert "master key" in err["message"]
    assert _get(proxy, path, None).status_code == 401
    assert _get(proxy, path, "sk-wrong").status_code == 401


@pytest.mark.timeout(600)
def test_master_key_gets_the_numbers(admin_proxy: tuple[Proxy, list[str]]) -> None:
    proxy, secrets = admin_proxy
    # One more request through the proxy itself: it is in the report.
    chat = httpx.post(
        proxy.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {proxy.deployment.keys['alice']}"},
        json={"model": "auto", "messages": HI, "max_tokens": 2},
        timeout=120,
    )
    assert chat.status_code == 200, chat.text
    r = _get(proxy, "report.json", proxy.deployment.master_key)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["population"]["users"] == 3 * PER_GROUP + 1  # alice has no feedback: at prior
    assert data["activity"]["requests"] == 3 * PER_GROUP + 1
    assert data["welfare"]["single"] <= data["welfare"]["portfolio"] <= data["welfare"]["oracle"]
    assert data["audit"]["ok"] is True
    text = json.dumps(data)
    for secret in [*secrets, "alice", proxy.deployment.keys["alice"]]:
        assert secret not in text
    # The minimum group size can be raised per request, never lowered.
    assert (
        _get(proxy, "report.json", proxy.deployment.master_key, min_group_size=5).status_code == 422
    )
    big = _get(proxy, "report.json", proxy.deployment.master_key, min_group_size=1000).json()
    assert big["population"]["shown"] is False and "welfare" not in big


@pytest.mark.timeout(600)
def test_chromium_renders_the_page_for_the_master_key_only(
    admin_proxy: tuple[Proxy, list[str]],
) -> None:
    chromium_binary()
    proxy, secrets = admin_proxy
    url = proxy.url + "/palm/v1/admin/report"
    with browser() as tab:
        assert tab.open(url, {"Authorization": f"Bearer {proxy.deployment.keys['alice']}"}) == 403
        assert "master key" in tab.evaluate("document.body.innerText")
        status = tab.open(url, {"Authorization": f"Bearer {proxy.deployment.master_key}"})
        assert status == 200
        images = tab.evaluate(IMAGES_JS)
        colours = tab.evaluate(COLOURS_JS)
        text = tab.evaluate("document.body.innerText")
        requested = tab.requested()
    plots = {i["plot"] for i in images}
    assert {"marginals", "welfare", "bounds_cost", "evidence", "members"} <= plots
    assert "simplex" not in plots  # d = 4: marginals only
    assert all(i["complete"] and i["w"] > 100 and i["h"] > 100 for i in images), images
    assert all(c > 3 for c in colours), colours
    # Chromium may still be fetching the favicon of the 403 page (a JSON error body has no
    # <link rel=icon>); the report page itself inlines its icon and fetches nothing.
    fetched = [u for u in requested if not u.startswith("data:") and not u.endswith("/favicon.ico")]
    assert fetched == [url]
    assert "Population report" in text
    for secret in secrets:
        assert secret not in text
