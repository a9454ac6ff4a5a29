"""Shared pieces of the LangChain tests: a pipeline over three members and two kinds of members.

- ONNX members: tiny random GPT-2-shaped decoders from ``tests/engines/tiny.py`` (real ONNX
  Runtime generation standing in for a deployment's aligned members; their text is noise);
- tool-calling members: a small fake chat model (it follows instructions; random tiny models
  cannot).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.output_parsers import (
    JsonOutputKeyToolsParser,
    JsonOutputParser,
    PydanticOutputParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

from palm_langchain import OnnxChatModel
from palm_middleware import MemoryStore, Palm, Portfolio
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.engines.registry import SessionRegistry
from palm_middleware.policy import parse_policy
from tests.engines.tiny import train_tokenizer, write_model

POLICY = """\
version: 2
name: langchain-test
traits: [safety, helpfulness, humor, brevity]
defaults:
  weights: {safety: 0.3, helpfulness: 0.4, humor: 0.1, brevity: 0.2}
  prior_strength: 10
personalization: true
exploration: false
topics:
  forbidden:
    keywords: [forbidden-topic]
bounds:
  - {id: safety-floor, layer: law, min: {safety: 0.2}}
  - id: no-forbidden-topic
    layer: law
    when: {topic: forbidden}
    action: block
    message: I can't help with that topic.
"""
REWARDS = {
    "balanced": [0.84, 0.78, 0.38, 0.55],
    "terse": [0.74, 0.50, 0.12, 0.96],
    "playful": [0.66, 0.64, 0.92, 0.40],
}
TRAITS = ["safety", "helpfulness", "humor", "brevity"]
BREVITY = {"safety": 0.2, "helpfulness": 0.1, "humor": 0.0, "brevity": 0.7}
BLOCK_WORD = "forbidden-topic"


def make_palm() -> Palm:
    portfolio = Portfolio.from_rewards(TRAITS, REWARDS, default_member="balanced")
    return Palm(portfolio, parse_policy(POLICY), MemoryStore(), embedder=None, random_state=0)


def build_onnx_members(root: Path) -> dict[str, BaseChatModel]:
    train_tokenizer(root / "tok")
    registry = SessionRegistry()
    out: dict[str, BaseChatModel] = {}
    for seed, name in enumerate(REWARDS):
        write_model(root / name, root / "tok" / "tokenizer.json", seed=seed)
        out[name] = OnnxChatModel(
            engine=OnnxEngine(root / name, registry=registry, name=name), max_tokens=6
        )
    return out


class ToolFake(BaseChatModel):
    """An offline stand-in for an instruction-following, tool-calling chat model.

    Deterministic rules instead of a network model, so the standard suites can run offline:

    - with tools bound and a user turn last, it calls one tool (``tool_choice``'s, else the
      first one the user names, else the first): integers are the first number the user wrote,
      strings the first quoted text (else the first capitalized word after the first word,
      else the whole request); after a tool result it answers ``"<label> says <result>"``;
    - ``response_format`` json_schema / json_object: a JSON object filling the schema's fields
      (or the quoted keys the user asked for) the same way;
    - everything it was bound with (``strict``, ``parallel_tool_calls``, ``tool_choice``,
      ``temperature``, ``max_tokens``) is echoed in ``response_metadata["received"]``, so tests
      see what reached the member.
    """

    label: str

    @property
    def _llm_type(self) -> str:
        return "tool-fake"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "fake"
        params["ls_model_name"] = self.label
        return params

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: Any = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kw: Any,
    ) -> Any:
        extra = {
            k: v
            for k, v in (
                ("tool_choice", tool_choice),
                ("strict", strict),
                ("parallel_tool_calls", parallel_tool_calls),
            )
            if v is not None
        }
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **extra, **kw)

    def with_structured_output(
        self,
        schema: Any,
        *,
        include_raw: bool = False,
        method: str = "function_calling",
        strict: bool | None = None,
        **kw: Any,
    ) -> Any:
        fmt = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        if method == "function_calling":
            name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools(
                [schema], tool_choice=name, strict=strict, ls_structured_output_format=fmt
            )
            parser: Any = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)
                if pydantic
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
            return llm | parser
        if method == "json_schema":
            rf: dict[str, Any] = {
                "type": "json_schema",
                "json_schema": {"schema": convert_to_json_schema(schema), "strict": strict},
            }
        elif method == "json_mode":
            rf = {"type": "json_object"}
        else:
            raise ValueError(f"unknown method {method!r}")
        llm = self.bind(response_format=rf, ls_structured_output_format=fmt)
        return llm | (
            PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()
        )

    def _reply(
        self, messages: list[BaseMessage], stop: list[str] | None, kw: dict[str, Any]
    ) -> AIMessage:
        tools = kw.get("tools")
        received = {k: v for k, v in kw.items() if k not in ("tools",)}
        asked = next((str(m.text) for m in reversed(messages) if isinstance(m, HumanMessage)), "")
        meta = {"model_name": self.label, "received": received}
        usage = UsageMetadata(input_tokens=len(asked.split()), output_tokens=3, total_tokens=0)
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        if tools and not isinstance(messages[-1], ToolMessage):
            spec = _pick_tool(tools, kw.get("tool_choice"), asked)
            args = _fill(spec.get("parameters", {}), asked)
            call = {"name": spec["name"], "args": args, "id": f"call-{self.label}-{len(asked)}"}
            return AIMessage(
                content="", tool_calls=[call], response_metadata=meta, usage_metadata=usage
            )
        rf = kw.get("response_format")
        if rf is not None:
            schema = rf.get("json_schema", {}).get("schema") or {
                "properties": {k: {"type": "string"} for k in re.findall(r"'(\w+)'", asked)}
            }
            text = json.dumps(_fill(schema, asked), ensure_ascii=False)
        else:
            results = [m for m in messages if isinstance(m, ToolMessage)]
            said = results[-1].content if results else "no tool"
            text = f"{self.label} says {said}"
        for s in stop or []:
            text = text.split(s)[0] or text
        return AIMessage(content=text, response_metadata=meta, usage_metadata=usage)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kw: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages, stop, kw))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kw: Any,
    ) -> Iterator[ChatGenerationChunk]:
        msg = self._reply(messages, stop, kw)
        if msg.tool_calls or kw.get("response_format"):  # one piece: parsers see it whole
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content=msg.content,
                    tool_call_chunks=[
                        {
                            "name": c["name"],
                            "args": json.dumps(c["args"]),
                            "id": c["id"],
                            "index": 0,
                        }
                        for c in msg.tool_calls
                    ],
                    response_metadata=msg.response_metadata,
                    usage_metadata=msg.usage_metadata,
                    chunk_position="last",
                )
            )
            return
        words = str(msg.content).split(" ")
        for i, word in enumerate(words):
            last = i == len(words) - 1
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content=word if last else word + " ",
                    response_metadata=msg.response_metadata if last else {},
                    usage_metadata=msg.usage_metadata if last else None,
                    chunk_position="last" if last else None,
                )
            )


def _pick_tool(tools: list[dict[str, Any]], choice: Any, asked: str) -> dict[str, Any]:
    specs: list[dict[str, Any]] = [t["function"] for t in tools]
    if isinstance(choice, dict):
        choice = choice.get("function", {}).get("name")
    named = [s for s in specs if s["name"] == choice]
    if named:
        return named[0]
    mentioned = [s for s in specs if s["name"] in asked]
    return (mentioned or specs)[0]


def _fill(schema: dict[str, Any], asked: str) -> dict[str, Any]:
    """Arguments for a JSON schema's properties, taken from the request text."""
    numbers = re.findall(r"-?\d+", asked)
    quoted = re.findall(r"'([^']+)'", asked)
    words = asked.split()
    capital = next((w.strip(".,?!") for w in words[1:] if w[:1].isupper()), None)
    text = quoted[0] if quoted else capital or asked or "text"
    out: dict[str, Any] = {}
    for name, prop in schema.get("properties", {}).items():
        kind = prop.get("type") or next(
            (a.get("type") for a in prop.get("anyOf", []) if a.get("type") != "null"), "string"
        )
        if kind in ("integer", "number"):
            out[name] = int(numbers[0]) if numbers else 0
        elif kind == "boolean":
            out[name] = True
        elif kind == "array":
            out[name] = []
        elif kind == "object":
            out[name] = {}
        else:
            out[name] = text
    return out


class UserContext(TypedDict):
    """The agent runtime context the tests pass: who the user is."""

    user_id: str


def user(uid: str, **extra: Any) -> RunnableConfig:
    return {"configurable": {"user_id": uid, **extra}}


# The fixtures live here, not in conftest.py: conftest.py only re-exports them, so that one
# mypy run can check both adapters' test folders (it holds a single module named ``conftest``).
@pytest.fixture
def palm() -> Palm:
    return make_palm()


@pytest.fixture(scope="session")
def onnx_members(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BaseChatModel]:
    return build_onnx_members(tmp_path_factory.mktemp("lc-models"))


@pytest.fixture
def tool_members() -> dict[str, BaseChatModel]:
    return {name: ToolFake(label=name) for name in REWARDS}
