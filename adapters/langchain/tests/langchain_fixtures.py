"""Shared pieces of the LangChain tests: a pipeline over three members and two kinds of members.

- ONNX members: tiny random GPT-2-shaped decoders from ``tests/engines/tiny.py`` (real ONNX
  Runtime generation standing in for a deployment's aligned members; their text is noise);
- tool-calling members: a small fake chat model (tiny local models cannot call tools).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool

from palm_langchain import OnnxChatModel
from palm_middleware import DecisionBlocked, MemoryStore, Palm, Portfolio
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.engines.registry import SessionRegistry
from palm_middleware.pipeline import Decision
from palm_middleware.policy import parse_policy
from tests.engines.tiny import train_tokenizer, write_model

POLICY = """\
version: 1
name: langchain-test
traits: [safety, helpfulness, humor, brevity]
defaults:
  weights: {safety: 0.3, helpfulness: 0.4, humor: 0.1, brevity: 0.2}
  prior_strength: 10
personalization: true
exploration: false
bounds:
  - {id: safety-floor, layer: law, min: {safety: 0.2}}
"""
REWARDS = {
    "balanced": [0.84, 0.78, 0.38, 0.55],
    "terse": [0.74, 0.50, 0.12, 0.96],
    "playful": [0.66, 0.64, 0.92, 0.40],
}
TRAITS = ["safety", "helpfulness", "humor", "brevity"]
BREVITY = {"safety": 0.2, "helpfulness": 0.1, "humor": 0.0, "brevity": 0.7}
BLOCK_WORD = "forbidden-topic"


class BlockingPalm(Palm):
    """Stand-in for a policy ``when:`` rule with ``action: block``."""

    def decide(
        self,
        user: str,
        messages: Sequence[Mapping[str, Any]] = (),
        metadata: Mapping[str, Any] | None = None,
        *,
        compare: str | None = None,
    ) -> Decision:
        last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        if last is not None and BLOCK_WORD in str(last.get("content", "")):
            raise DecisionBlocked("no-forbidden-topic", "I can't help with that topic.")
        return super().decide(user, messages, metadata, compare=compare)


def make_palm() -> Palm:
    portfolio = Portfolio.from_rewards(TRAITS, REWARDS, default_member="balanced")
    return BlockingPalm(portfolio, parse_policy(POLICY), MemoryStore(), random_state=0)


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
    """Calls the first bound tool with ``{"city": "Paris"}``, then answers with its result."""

    label: str

    @property
    def _llm_type(self) -> str:
        return "tool-fake"

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kw: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kw)

    def _reply(self, messages: list[BaseMessage], tools: Any) -> AIMessage:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if tools and not results:
            name = tools[0]["function"]["name"]
            return AIMessage(
                content="",
                tool_calls=[{"name": name, "args": {"city": "Paris"}, "id": f"call-{self.label}"}],
            )
        said = results[-1].content if results else "no tool"
        return AIMessage(content=f"{self.label} says {said}")

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: Any = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        tools: Any = None,
        **kw: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages, tools))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: Any = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        tools: Any = None,
        **kw: Any,
    ) -> Iterator[ChatGenerationChunk]:
        msg = self._reply(messages, tools)
        if msg.tool_calls:
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    tool_call_chunks=[
                        {"name": c["name"], "args": '{"city": "Paris"}', "id": c["id"], "index": 0}
                        for c in msg.tool_calls
                    ],
                )
            )
            return
        for word in str(msg.content).split(" "):
            yield ChatGenerationChunk(message=AIMessageChunk(content=word + " "))


def user(uid: str, **extra: Any) -> dict[str, Any]:
    return {"configurable": {"user_id": uid, **extra}}
