"""Output rails: `on: [reply]` rules on whole and streamed replies (guard/replies.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from palm_middleware import DecisionBlocked, MemoryStore, Palm, load_policy, load_portfolio
from palm_middleware.data import bundled
from palm_middleware.exceptions import PolicyValidationError
from palm_middleware.guard.replies import StreamCheck

REPLY_POLICY = """\
version: 2
traits: [brevity, structure, formality]
topics:
  weapons: {keywords: [napalm, pipe bomb]}
  dosing: {keywords: [milligrams]}
bounds:
  - id: no-weapons
    layer: law
    when: {topic: weapons}
    action: block
    message: I can't help with that.
    on: [request, reply]
  - id: no-dosing-replies
    when: {topic: dosing}
    action: block
    message: Please ask a pharmacist.
    on: [reply]
"""


@pytest.fixture()
def palm(tmp_path: Path) -> Palm:
    p = tmp_path / "policy.yaml"
    p.write_text(REPLY_POLICY)
    return Palm(
        load_portfolio(bundled("smollm2/portfolio.yaml")),
        load_policy(p),
        MemoryStore(),
        embedder=None,
    )


def test_reply_only_rule_does_not_block_requests(palm: Palm) -> None:
    palm.decide("u", [{"role": "user", "content": "How many milligrams are in a gram?"}])
    with pytest.raises(DecisionBlocked):
        palm.decide("u", [{"role": "user", "content": "recipe for n4p4lm"}])


def test_whole_reply_is_checked_and_audited_without_text(palm: Palm) -> None:
    d = palm.decide("u", [{"role": "user", "content": "hi"}])
    assert palm.check_reply("u", d.decision_id, "Hello! How can I help?") is None
    reply = "Sure: take 800 milligrams twice."
    verdict = palm.check_reply("u", d.decision_id, reply)
    assert verdict is not None and verdict.rule_id == "no-dosing-replies"
    assert verdict.message == "Please ask a pharmacist."
    records = [r for r in palm.store.audit() if r.kind == "reply_block"]
    assert len(records) == 1
    payload = records[0].payload
    assert payload["rule_id"] == "no-dosing-replies" and payload["topics"] == ["dosing"]
    assert payload["decision_id"] == d.decision_id
    assert "800" not in str(payload) and "milligrams" not in str(payload)


def test_law_rule_wins_over_org_rule_on_a_reply(palm: Palm) -> None:
    verdict = palm.reply_rail().check("napalm, 5 milligrams")
    assert verdict is not None and verdict.rule_id == "no-weapons"


@pytest.mark.parametrize("chunk", [1, 3, 7, 50])
def test_stream_is_cut_when_a_phrase_split_across_chunks_appears(palm: Palm, chunk: int) -> None:
    text = (
        "Here is a long harmless preamble about chemistry class. " * 3 + "Now the pipe b0mb part."
    )
    check = palm.reply_rail().stream(window=120, stride=16)
    verdict = None
    sent = 0
    for i in range(0, len(text), chunk):
        verdict = check.feed(text[i : i + chunk])
        sent = i + chunk
        if verdict is not None:
            break
    verdict = verdict or check.finish()
    assert verdict is not None and verdict.rule_id == "no-weapons"
    assert sent <= len(text) + chunk


def test_harmless_stream_passes_and_checks_its_tail(palm: Palm) -> None:
    check = palm.reply_rail().stream(window=100, stride=50)
    for word in "A calm reply about gardening and the weather today.".split():
        assert check.feed(word + " ") is None
    assert check.finish() is None
    check = palm.reply_rail().stream(window=100, stride=50)
    assert check.feed("Take 5 milligrams") is None  # under one stride: not checked yet
    assert check.finish() is not None  # the end of the stream is always checked


def test_bad_window_is_refused(palm: Palm) -> None:
    with pytest.raises(ValueError, match="stride"):
        StreamCheck(palm.reply_rail(), window=10, stride=20)


def test_reply_rule_needs_block(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(
        textwrap.dedent(
            """\
            version: 2
            traits: [a, b]
            bounds:
              - {id: r, max: {a: 0.5}, on: [reply]}
            """
        )
    )
    with pytest.raises(PolicyValidationError, match=r"needs 'action: block'"):
        load_policy(p)
