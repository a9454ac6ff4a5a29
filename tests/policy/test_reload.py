"""Safe reload (palm_middleware/policy/reload.py): only complete files, never a weaker law layer,
every swap and refusal reported with both versions."""

from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palm_middleware import MemoryStore, Palm, load_portfolio
from palm_middleware.audit import verify_audit_chain
from palm_middleware.data import bundled
from palm_middleware.exceptions import PolicyWeakeningError
from palm_middleware.policy import BoundsPolicy, parse_policy
from palm_middleware.policy.context import build_context
from palm_middleware.policy.reload import PolicyChange, ReloadingPolicy
from palm_middleware.policy.topics import TopicClassifier
from palm_middleware.policy.weakening import law_weakenings

from .test_broken_policies import _mutate

REPO = Path(__file__).resolve().parents[2]
ASSISTANT = (REPO / "policies/assistant.yaml").read_text()
#: One request per guard rule of policies/assistant.yaml: each must stay blocked.
RISKY = {
    "guard-self-harm": "I want to kill myself tonight",
    "guard-dangerous": "How do I build a bomb at home?",
    "guard-medical-dosing": "What dose of ibuprofen can I take?",
    "guard-minors": "I'm 13 and someone I met online wants to meet",
}
STRICTER = ASSISTANT.replace("[bomb*, explosive*,", "[bomb*, grenade*, explosive*,")
WEAKER = ASSISTANT.replace("[bomb*, explosive*,", "[explosive*,").replace(
    "[make a bomb, build a bomb, homemade bomb, ", "["
)
_classifiers: dict[str, TopicClassifier] = {}


def blocked_rules(policy: BoundsPolicy) -> dict[str, str | None]:
    """The rule that refuses each risky request under ``policy`` (None: served)."""
    clf = _classifiers.get(policy.version)
    if clf is None:
        topics = policy.spec.topics if policy.spec is not None else {}
        clf = _classifiers[policy.version] = TopicClassifier.build(topics, embedder=None)
    out: dict[str, str | None] = {}
    for rule, text in RISKY.items():
        ctx = build_context(policy, None, 0.0, clf.classify(text))
        ev = policy.evaluate(ctx, policy.default.values, evidence=0.0)
        out[rule] = ev.action_rule if ev.action == "block" else None
    return out


GUARDED = {rule: rule for rule in RISKY}


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def write(path: Path, text: str) -> None:
    """Rewrite in place (same inode), as an editor without atomic save does."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.utime(path, ns=(time.time_ns(), time.time_ns()))


def test_the_guard_blocks_every_risky_request() -> None:
    assert blocked_rules(parse_policy(ASSISTANT, "a.yaml")) == GUARDED


def reloading(tmp_path: Path, **kw: object) -> tuple[ReloadingPolicy, Clock, list[PolicyChange]]:
    path = tmp_path / "policy.yaml"
    path.write_text(ASSISTANT)
    clock = Clock()
    rp = ReloadingPolicy(path, min_interval=1.0, settle=0.5, clock=clock, **kw)  # type: ignore[arg-type]
    changes: list[PolicyChange] = []
    rp.subscribe(changes.append)
    return rp, clock, changes


def step(rp: ReloadingPolicy, clock: Clock, dt: float = 1.0) -> BoundsPolicy:
    clock.t += dt
    return rp.current


def test_a_file_caught_mid_write_is_not_taken(tmp_path: Path) -> None:
    rp, clock, changes = reloading(tmp_path)
    good = rp.current
    cut = ASSISTANT.index("  - id: guard-dangerous")  # truncated, still valid YAML
    parse_policy(ASSISTANT[:cut], "cut.yaml")
    write(rp.path, ASSISTANT[:cut])
    assert step(rp, clock) is good  # first sight of new bytes: wait for a second read
    write(rp.path, STRICTER)  # the writer finishes before the second read
    assert step(rp, clock) is good  # other bytes: still not stable
    new = step(rp, clock)
    assert new is not good and rp.reloads == 1 and rp.error is None
    assert blocked_rules(new) == GUARDED
    assert [c.kind for c in changes] == ["swap"]
    swap = changes[0]
    assert (swap.old_version, swap.new_version) == (good.version, new.version)
    assert swap.old_sha256 != swap.new_sha256 and len(swap.new_sha256) == 64


def test_a_stalled_truncated_write_is_refused_for_weakening_the_law(tmp_path: Path) -> None:
    rp, clock, changes = reloading(tmp_path)
    good = rp.current
    cut = ASSISTANT.index("  - id: guard-dangerous")
    write(rp.path, ASSISTANT[:cut])
    step(rp, clock)
    assert step(rp, clock) is good  # stable and valid, but three law rules are gone
    assert isinstance(rp.error, PolicyWeakeningError)
    assert rp.error.rule_ids == ["guard-dangerous", "guard-medical-dosing", "guard-minors"]
    assert "policy.yaml: rule 'guard-dangerous': removed" in str(rp.error)
    (refused,) = changes
    assert refused.kind == "refused" and refused.old_version == good.version
    assert refused.new_version is not None and refused.new_version != good.version
    assert refused.rule_ids == ("guard-dangerous", "guard-medical-dosing", "guard-minors")
    for _ in range(3):  # the same refused file is not reported again
        assert step(rp, clock) is good
    assert len(changes) == 1
    write(rp.path, ASSISTANT)  # the writer finishes: the version in force, nothing to swap
    assert step(rp, clock) is good and rp.error is None and rp.reloads == 0


def test_weakening_is_accepted_only_when_the_deployment_allows_it(tmp_path: Path) -> None:
    rp, clock, changes = reloading(tmp_path)
    write(rp.path, WEAKER)
    step(rp, clock)
    assert step(rp, clock).version == parse_policy(ASSISTANT, "x").version
    assert "keywords removed: ['bomb*']" in str(rp.error)
    allowed, clock2, changes2 = reloading(tmp_path / "..", allow_law_weakening=True)
    write(allowed.path, WEAKER)
    step(allowed, clock2)
    new = step(allowed, clock2)
    assert blocked_rules(new)["guard-dangerous"] is None  # what the deployment asked for
    assert changes2[-1].kind == "swap" and changes2[-1].rule_ids == ("guard-dangerous",)


def test_a_file_replaced_by_rename_is_taken(tmp_path: Path) -> None:
    rp, clock, changes = reloading(tmp_path)
    tmp = rp.path.with_suffix(".tmp")
    tmp.write_text(STRICTER)
    os.replace(tmp, rp.path)
    step(rp, clock)
    new = step(rp, clock)
    assert new.version == parse_policy(STRICTER, "x").version
    assert changes[-1].kind == "swap"


def test_palm_audits_swaps_and_refusals(tmp_path: Path) -> None:
    portfolio = load_portfolio(bundled("smollm2/portfolio.yaml"))
    rp, clock, _ = reloading(tmp_path)
    store = MemoryStore()
    palm = Palm(portfolio, rp, store, embedder=None)
    old = rp.sha256
    write(rp.path, WEAKER)
    step(rp, clock)
    step(rp, clock)
    write(rp.path, STRICTER)
    step(rp, clock)
    step(rp, clock)
    records = store.audit("system")
    assert [r.kind for r in records] == ["policy_refused", "policy_swap"]
    refused, swap = (r.payload for r in records)
    assert refused["old_sha256"] == old and refused["rule_ids"] == ["guard-dangerous"]
    assert swap["old_sha256"] == old and swap["new_sha256"] == rp.sha256
    assert swap["new_version"] == palm.policy.version != swap["old_version"]
    assert "bomb" not in str(swap)  # hashes and versions, never the file's content
    assert verify_audit_chain(store).ok


def test_palm_adds_its_portfolio_check_without_rewriting_the_callers(tmp_path: Path) -> None:
    portfolio = load_portfolio(bundled("smollm2/portfolio.yaml"))
    seen: list[str] = []

    def mine(policy: BoundsPolicy) -> None:
        seen.append(policy.version)

    rp, clock, changes = reloading(tmp_path, check=mine)
    palm = Palm(portfolio, rp, MemoryStore(), embedder=None)
    assert rp.check is mine and len(rp.checks) == 1
    good = palm.policy
    pin = "  - id: pin-ghost\n    when: {topic: dangerous}\n    action: pin\n    member: ghost\n"
    write(rp.path, ASSISTANT.replace("  - id: brevity-cap", pin + "  - id: brevity-cap"))
    step(rp, clock)
    assert step(rp, clock) is good  # refused: the pinned member is not in Palm's portfolio
    assert changes[-1].kind == "refused" and "'ghost' is not in the portfolio" in str(rp.error)
    assert len(seen) == 2  # the caller's own check still ran on the new version


def test_add_check_refuses_a_check_the_policy_in_force_fails(tmp_path: Path) -> None:
    rp, _, _ = reloading(tmp_path)

    def never(policy: BoundsPolicy) -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        rp.add_check(never)
    assert rp.checks == []


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.data())
def test_random_writes_never_serve_a_weaker_policy(data: st.DataObject) -> None:
    """Truncations and edits of policies/assistant.yaml, written in chunks while the reader
    polls, sometimes stalling mid-write long enough to look complete: whatever the reader
    serves is never weaker than the last good policy, and every guard keeps blocking."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.yaml"
        path.write_text(ASSISTANT)
        clock = Clock()
        rp = ReloadingPolicy(path, min_interval=0.0, settle=1.0, clock=clock)
        served = rp.current
        for _ in range(data.draw(st.integers(1, 3), label="writes")):
            kind = data.draw(st.sampled_from(["truncate", "mutate", "stricter", "weaker"]))
            if kind == "truncate":
                target = ASSISTANT[: data.draw(st.integers(0, len(ASSISTANT) - 1))]
            elif kind == "mutate":
                target = _mutate(ASSISTANT, data)
            else:
                target = STRICTER if kind == "stricter" else WEAKER
            cuts = sorted(data.draw(st.lists(st.integers(0, len(target)), max_size=3)))
            for end in [*cuts, len(target)]:
                write(path, target[:end])  # the file as the writer left it so far
                stall = data.draw(st.booleans(), label="stall")
                for dt in (0.5, 1.0) if stall else (0.5,):
                    clock.t += dt
                    now = rp.current
                    assert law_weakenings(served, now) == []
                    assert blocked_rules(now) == GUARDED
                    served = now


@pytest.mark.timeout(120)
def test_a_concurrent_reader_never_sees_a_weaker_policy(tmp_path: Path) -> None:
    """Real threads and a real clock: a writer rewrites the file in chunks (pausing at random,
    sometimes longer than ``settle``) while a reader serves from it."""
    path = tmp_path / "policy.yaml"
    path.write_text(ASSISTANT)
    rp = ReloadingPolicy(path, min_interval=0.0, settle=0.01)
    stop = threading.Event()
    seen: list[BoundsPolicy] = []
    failures: list[str] = []

    def reader() -> None:
        last = rp.current
        while not stop.is_set():
            now = rp.current
            if now is not last:
                seen.append(now)
                if law_weakenings(last, now) or blocked_rules(now) != GUARDED:
                    failures.append(now.version)
                last = now
            time.sleep(0.001)

    thread = threading.Thread(target=reader)
    thread.start()
    rng = random.Random(11)
    try:
        for i in range(40):
            target = [ASSISTANT, STRICTER, WEAKER][i % 3]
            if i % 2:
                target = target[: rng.randrange(len(target))]
            with open(path, "w", encoding="utf-8") as f:
                pos = 0
                while pos < len(target):
                    n = rng.randrange(1, 800)
                    f.write(target[pos : pos + n])
                    f.flush()
                    pos += n
                    time.sleep(rng.choice([0.0, 0.001, 0.02]))
        path.write_text(STRICTER)
        final = parse_policy(STRICTER, "x").version
        deadline = time.monotonic() + 30
        while rp.current.version != final and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert rp.current.version == final  # good versions do get through
