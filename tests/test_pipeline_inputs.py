"""Palm reads every text of a request: topics from all messages, cues from the user's own last
turn; topic labelling fails closed; limits hold; the event loop stays free while it works."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from palm_middleware import MemoryStore, Palm, load_portfolio
from palm_middleware.data import bundled
from palm_middleware.exceptions import DecisionBlocked, RequestTooLargeError, TopicLabelError
from palm_middleware.inputs import RequestLimits
from palm_middleware.policy import parse_policy
from palm_middleware.policy.models import TopicSpec
from palm_middleware.policy.topics import TopicClassifier
from palm_middleware.types import FloatArray

PORTFOLIO = load_portfolio(bundled("portfolio.yaml"))
WORD = "forbidden-topic"
POLICY = parse_policy(
    f"""\
version: 2
name: inputs-test
traits: [safety, helpfulness, humor, brevity]
defaults:
  weights: {{safety: 0.3, helpfulness: 0.4, humor: 0.1, brevity: 0.2}}
topics:
  forbidden: {{keywords: [{WORD}]}}
bounds:
  - {{id: floor, layer: law, min: {{safety: 0.2}}}}
  - id: no-forbidden
    when: {{topic: forbidden}}
    action: block
    message: Not that topic.
"""
)
RISKY = f"something about {WORD}"


def palm(**kw: Any) -> Palm:
    return Palm(PORTFOLIO, POLICY, MemoryStore(), embedder=None, **kw)


POSITIONS: dict[str, list[dict[str, Any]]] = {
    "earlier user turn": [
        {"role": "user", "content": RISKY},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and?"},
    ],
    "system": [{"role": "system", "content": RISKY}, {"role": "user", "content": "hi"}],
    "developer": [{"role": "developer", "content": RISKY}, {"role": "user", "content": "hi"}],
    "assistant prefill": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": RISKY},
    ],
    "tool result": [{"role": "user", "content": "hi"}, {"role": "tool", "content": RISKY}],
    "role User": [{"role": "User", "content": RISKY}],
    "input_text part": [{"role": "user", "content": [{"type": "input_text", "text": RISKY}]}],
}


@pytest.mark.parametrize("where", sorted(POSITIONS))
def test_topic_rules_see_every_message(where: str) -> None:
    p = palm()
    with pytest.raises(DecisionBlocked) as info:
        p.decide("u", POSITIONS[where])
    assert info.value.rule_id == "no-forbidden"
    (record,) = p.store.audit()
    assert record.kind == "block" and record.payload["topics"] == ["forbidden"]
    assert WORD not in repr(record.payload.get("rules_active"))  # labels only


class Counting:
    """A deterministic bag-of-characters embedder that counts the texts it embeds."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> FloatArray:
        self.texts.extend(texts)
        out = np.zeros((len(texts), 26))
        for i, t in enumerate(texts):
            for ch in t.lower():
                if "a" <= ch <= "z":
                    out[i, ord(ch) - 97] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


def test_each_distinct_text_is_classified_once() -> None:
    emb = Counting()
    topics = TopicClassifier(
        {"t": TopicSpec(prototypes=["zzzz qqqq"], threshold=0.99)}, embedder=emb
    )
    p = palm(topics=topics)
    same = {"role": "user", "content": "hello there"}
    p.decide(
        "u",
        [same, {"role": "assistant", "content": "hi"}, same, {"role": "system", "content": "hi"}],
    )
    assert sorted(emb.texts[1:]) == ["hello there", "hi"]


def test_cues_come_only_from_the_users_last_message() -> None:
    p = palm()
    d = p.decide(
        "u", [{"role": "system", "content": "shorter please"}, {"role": "user", "content": "hi"}]
    )
    assert d.cues == ()
    d = p.decide("u", [{"role": "tool", "content": "too long"}, {"role": "user", "content": "hi"}])
    assert d.cues == ()
    d = p.decide("u", [{"role": "user", "content": "shorter please"}])
    assert d.cues == ("shorter",)


class Breaking(Counting):
    """Embeds the prototypes, then fails: a fault injected into a real classifier."""

    def embed(self, texts: Sequence[str]) -> FloatArray:
        if self.texts:
            raise RuntimeError("embedder exploded")
        return super().embed(texts)


def test_a_failing_topic_classifier_refuses_the_request_and_audits_labels_only() -> None:
    topics = TopicClassifier(
        {"forbidden": TopicSpec(keywords=[WORD], prototypes=["zzz"])}, embedder=Breaking()
    )
    p = palm(topics=topics)
    with pytest.raises(TopicLabelError, match="embedder exploded"):
        p.decide("u", [{"role": "user", "content": "a harmless question"}])
    (record,) = p.store.audit()
    assert record.kind == "refused"
    assert record.payload["reason"] == "topic_labelling_failed"
    assert record.payload["error"] == "RuntimeError"  # the cause's class, never its text
    assert "harmless" not in repr(record.payload)


def test_limits_are_checked_before_any_work() -> None:
    emb = Counting()
    topics = TopicClassifier({"t": TopicSpec(prototypes=["zz"])}, embedder=emb)
    p = palm(topics=topics, limits=RequestLimits(max_message_chars=100))
    with pytest.raises(RequestTooLargeError) as info:
        p.decide("u", [{"role": "user", "content": "x" * 101}])
    assert info.value.param == "messages[0]"
    assert emb.texts == ["zz"]  # the prototype only: the message was never embedded
    assert p.store.audit() == []


class WaitsForTheLoop(Counting):
    """Blocks inside ``embed`` until the event loop sets ``ready``.

    If classification ran on the event loop, the loop could not set it: the wait would time
    out and ``saw_loop`` stay False. No timing is asserted, only that the loop ran meanwhile.
    """

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.ready = threading.Event()
        self.saw_loop = False

    def embed(self, texts: Sequence[str]) -> FloatArray:
        if self.texts:  # a message (the first call embeds the prototypes)
            self.started.set()
            self.saw_loop = self.ready.wait(timeout=30)
        return super().embed(texts)


def test_adecide_keeps_the_event_loop_free_while_classifying() -> None:
    emb = WaitsForTheLoop()
    topics = TopicClassifier({"t": TopicSpec(prototypes=["zz"])}, embedder=emb)
    p = palm(topics=topics)
    big = [{"role": "user", "content": "word " * 40_000}]  # 200 k characters, under the limit

    async def main() -> int:
        task = asyncio.create_task(p.adecide("u", big))
        ticks = 0
        while not emb.started.is_set():
            await asyncio.sleep(0.001)
        while ticks < 5:  # the loop keeps running while embed() is blocked in its thread
            ticks += 1
            await asyncio.sleep(0)
        emb.ready.set()
        await task
        return ticks

    assert asyncio.run(main()) == 5
    assert emb.saw_loop
