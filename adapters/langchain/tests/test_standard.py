"""LangChain's standard conformance suites (langchain-tests 1.1.9) on both chat models, offline.

- ``OnnxChatModel``: real ONNX Runtime generation with tiny random decoders (tests/engines/tiny.py);
  tools and structured output in the unit suite (binding), generation with them in
  test_langchain_structured.py.
- ``PalmChatModel`` over those ONNX members: everything but tools and structured output (they
  bind, test_palm_chat_model_contract.py, but the tiny members' 128 positions are too few).
- ``PalmChatModel`` over tool-calling members: the offline ``ToolFake`` (langchain_fixtures.py)
  stands in for an instruction-following chat model, so the tool-calling, structured-output
  (``json_schema``) and JSON-mode tests exercise PalmChatModel's plumbing.

The suites call the models without a user: the PalmChatModel classes are built with
``anonymous="default"`` (the deployment default within the bounds, nothing stored). Per-class
properties below say what each model supports; every test passes or is skipped by the suite
with its reason ("Test requires tool calling.", "Model does not support image message.", ...).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_fixtures import REWARDS, ToolFake, build_onnx_members, make_palm
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from palm_langchain import OnnxChatModel, PalmChatModel
from palm_middleware.engines.onnx import OnnxEngine


@functools.cache
def _onnx_root() -> Path:
    """Three tiny ONNX members, written once per test session (properties take no fixtures)."""
    root = Path(tempfile.mkdtemp(prefix="palm-lc-standard-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    build_onnx_members(root)
    return root


@functools.cache
def _engine(name: str) -> OnnxEngine:
    return OnnxEngine(_onnx_root() / name, name=name)


def _onnx_members() -> dict[str, BaseChatModel]:
    root = _onnx_root()
    return {
        name: OnnxChatModel(engine=OnnxEngine(root / name, name=name), max_tokens=6)
        for name in REWARDS
    }


def _local_params(params: dict[str, Any]) -> dict[str, Any]:
    """The suite's standard constructor arguments minus those with no meaning for local models:
    ``timeout``, ``max_retries`` and ``api_key`` configure a network client, which neither
    model has. Both models refuse unknown arguments (``extra="forbid"``) rather than ignore them;
    ``temperature``, ``max_tokens`` and ``stop`` stay and reach the engine / the members."""
    return {k: v for k, v in params.items() if k not in ("timeout", "max_retries", "api_key")}


class _OnnxSupport:
    """What OnnxChatModel supports (it overrides ``bind_tools``/``with_structured_output`` only to
    refuse them with a clear message, so the suite's inference from overrides is corrected)."""

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return OnnxChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"engine": _engine("balanced")}

    @property
    def has_tool_calling(self) -> bool:
        # The unit suite binds tools and schemas (a grammar constrains the answer). The
        # integration suite's tool/structured tests need a 500-token prompt and a model that
        # ends free-text strings within 6 tokens; a 128-position random decoder cannot, so they
        # run in test_langchain_structured.py, with bounded schemas and a longer context.
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_model_override(self) -> bool:
        return False  # one engine per member: another ``model`` is refused


class TestOnnxChatModelUnit(_OnnxSupport, ChatModelUnitTests):
    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        return _local_params(super().standard_chat_model_params)


class TestOnnxChatModelIntegration(_OnnxSupport, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {**super().chat_model_params, "max_tokens": 6}


class _PalmSupport:
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return PalmChatModel

    @property
    def supports_model_override(self) -> bool:
        return False  # the member is chosen per user within the bounds: ``model`` is refused


class TestPalmChatModelUnit(_PalmSupport, ChatModelUnitTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "palm": make_palm(),
            "members": {name: ToolFake(label=name) for name in REWARDS},
            "anonymous": "default",
        }

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        return _local_params(super().standard_chat_model_params)


class TestPalmChatModelOnnxIntegration(_PalmSupport, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"palm": make_palm(), "members": _onnx_members(), "anonymous": "default"}

    @property
    def has_tool_calling(self) -> bool:
        return False  # as for OnnxChatModel: 128 positions and 6 tokens are too few

    @property
    def has_structured_output(self) -> bool:
        return False


class TestPalmChatModelToolsIntegration(_PalmSupport, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "palm": make_palm(),
            "members": {name: ToolFake(label=name) for name in REWARDS},
            "anonymous": "default",
        }

    @property
    def structured_output_kwargs(self) -> dict[str, Any]:
        return {"method": "json_schema"}

    @property
    def supports_json_mode(self) -> bool:
        return True
