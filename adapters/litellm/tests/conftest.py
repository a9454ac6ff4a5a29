"""Fixtures: a real LiteLLM proxy on 127.0.0.1 with tiny real ONNX members (session-wide)."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from collections.abc import Iterator

import pytest
from litellm_proxy_fixtures import (
    Deployment,
    Proxy,
    Stub,
    build_deployment,
    start_proxy,
    start_stub,
    stop_proxy,
    stop_stub,
)


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return build_deployment(tmp_path_factory.mktemp("proxy"))


@pytest.fixture(scope="session")
def proxy(deployment: Deployment) -> Iterator[Proxy]:
    p = start_proxy(deployment)
    yield p
    stop_proxy(p)


@pytest.fixture(scope="module")
def stub(request: pytest.FixtureRequest) -> Iterator[Stub]:
    """A stub OpenAI-compatible member server for the module, answering the module's
    ``STUB_REPLY`` (default "An answer.")."""
    s = start_stub({"STUB_REPLY": getattr(request.module, "STUB_REPLY", "An answer.")})
    yield s
    stop_stub(s)
