"""Fixtures of the LangChain tests (helpers in langchain_fixtures.py)."""

from __future__ import annotations

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_fixtures import REWARDS, ToolFake, build_onnx_members, make_palm

from palm_middleware import Palm


@pytest.fixture
def palm() -> Palm:
    return make_palm()


@pytest.fixture(scope="session")
def onnx_members(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BaseChatModel]:
    return build_onnx_members(tmp_path_factory.mktemp("lc-models"))


@pytest.fixture
def tool_members() -> dict[str, BaseChatModel]:
    return {name: ToolFake(label=name) for name in REWARDS}
