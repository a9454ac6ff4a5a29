"""Issue 11, fail fast and closed: a broken policy stops ``palm proxy`` with its file:line:col;
a proxy started around ``palm proxy`` with one reports not ready and serves nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litellm_proxy_fixtures import (
    Deployment,
    Proxy,
    build_deployment,
    free_port,
    start_proxy,
    stop_proxy,
)

BROKEN = "version: 2\nname: broken\ntraits: [safety, helpfulness, humor, brevity]\nbounds: 7\n"


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    dep = build_deployment(tmp_path_factory.mktemp("broken"))
    (dep.root / "policy.yaml").write_text(BROKEN)
    return dep


def test_palm_proxy_refuses_to_start(broken: Deployment) -> None:
    cmd = [sys.executable, "-m", "palm_middleware.cli", "proxy", "--config"]
    cmd += [str(broken.root / "config.yaml"), "--port", str(free_port())]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert re.search(r"policy\.yaml:\d+:\d+", out.stderr), out.stderr
    assert "serving on" not in out.stderr


@pytest.fixture(scope="module")
def broken_proxy(broken: Deployment) -> Iterator[Proxy]:
    p = start_proxy(broken)  # litellm directly: nothing stops it, PALM must fail closed
    yield p
    stop_proxy(p)


def test_not_ready_and_serves_nothing(broken_proxy: Proxy) -> None:
    url, dep = broken_proxy.url, broken_proxy.deployment
    assert httpx.get(url + "/health/liveliness", timeout=30).status_code == 200
    ready = httpx.get(url + "/health/readiness", timeout=30)
    assert ready.status_code == 503
    assert re.search(r"policy\.yaml:\d+:\d+", ready.text), ready.text
    r = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {dep.master_key}"},
        timeout=60,
    )
    assert r.status_code == 503, r.text
    assert r.json()["error"]["type"] == "service_unavailable"


def test_valid_deployment_is_ready(tmp_path: Path) -> None:
    # The same check passes for a good deployment (no model load in the parent).
    from palm_middleware.cli.proxy import check_runtime

    dep = build_deployment(tmp_path)
    check_runtime(dep.root / "palm.yaml")
