"""External guard sources (palm_middleware/guard/external.py): a LiteLLM model served by a real
second server process (tests/openai_stub.py in guard mode), and plain callables."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from palm_middleware.exceptions import ConfigError
from palm_middleware.guard.external import ExternalSource, import_callable
from palm_middleware.policy.models import BoundRule, ExternalRef, TopicSpec
from palm_middleware.policy.topics import TopicClassifier, law_topics

REPO = Path(__file__).resolve().parents[2]
# The stub takes any key; the policy names the variable, never the key itself.
os.environ.setdefault("PALM_TEST_GUARD_KEY", "stub-key")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "openai_stub.py"), str(port)],
        env={**os.environ, "STUB_GUARD": "1", **env},
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url, timeout=0.5)
            return url, proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("guard stub did not start")


@pytest.fixture(scope="module")
def guard_server() -> Iterator[str]:
    url, proc = _start({})
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def slow_server() -> Iterator[str]:
    url, proc = _start({"STUB_DELAY": "3"})
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def _model(url: str, **kw: object) -> TopicSpec:
    ref = {"model": "openai/guard", "api_base": url + "/v1", "api_key_env": "PALM_TEST_GUARD_KEY"}
    return TopicSpec(external=ExternalRef.model_validate({**ref, **kw}))


@pytest.mark.timeout(120)
def test_litellm_guard_model_labels_what_it_calls_unsafe(guard_server: str) -> None:
    # A generous timeout: the first litellm call loads its HTTP client (seconds on a busy CI).
    clf = TopicClassifier({"violence": _model(guard_server, timeout=30)})
    assert clf.classify("how do I build a bomb") == {"violence"}
    assert clf.classify("how do I bake bread") == frozenset()


@pytest.mark.timeout(120)
def test_timeout_fails_closed_for_law_topics_and_open_otherwise(slow_server: str) -> None:
    closed = TopicClassifier({"v": _model(slow_server, timeout=0.3)}, law_topics=frozenset({"v"}))
    opened = TopicClassifier({"v": _model(slow_server, timeout=0.3)})
    assert closed.classify("how do I bake bread") == {"v"}
    assert opened.classify("how do I bake bread") == frozenset()
    explicit = TopicClassifier({"v": _model(slow_server, timeout=0.3, on_error="open")},
                               law_topics=frozenset({"v"}))  # fmt: skip
    assert explicit.classify("how do I bake bread") == frozenset()


@pytest.mark.timeout(60)
def test_unreachable_model_fails_closed_and_is_not_cached() -> None:
    port = _free_port()  # nothing listens here
    clf = TopicClassifier(
        {"v": _model(f"http://127.0.0.1:{port}", timeout=5)}, law_topics=frozenset({"v"})
    )
    assert clf.classify("hello") == {"v"}
    assert len(clf._cache) == 0


def is_fraud(text: str) -> bool:
    return "wire the money" in text


def fraud_score(text: str) -> float:
    return 0.9 if "gift cards" in text else 0.1


def broken(text: str) -> bool:
    raise RuntimeError("guard crashed")


def test_callables_as_sources() -> None:
    mod = __name__
    clf = TopicClassifier(
        {
            "fraud": TopicSpec(external=ExternalRef(callable=f"{mod}:is_fraud")),
            "scam": TopicSpec(external=ExternalRef(callable=f"{mod}:fraud_score", threshold=0.5)),
            "law": TopicSpec(external=ExternalRef(callable=f"{mod}:broken")),
        },
        law_topics=frozenset({"law"}),
    )
    assert clf.classify("please wire the money today") == {"fraud", "law"}
    assert clf.classify("pay with gift cards") == {"scam", "law"}


def test_bad_references_are_refused() -> None:
    with pytest.raises(ConfigError, match="package.module:function"):
        import_callable("nocolon")
    with pytest.raises(ConfigError, match="cannot import"):
        import_callable("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="exactly one of"):
        ExternalRef(model="m", callable="a:b")
    src = ExternalSource.build("t", ExternalRef(callable=f"{__name__}:is_fraud"), law=True)
    assert src.fail_closed


def test_law_topics_are_found_in_nested_conditions() -> None:
    rules = [
        BoundRule(
            id="a",
            layer="law",
            when={"any": [{"topic": "x"}, {"cohort": "m"}]},
            action="block",
            message="no",
        ),  # fmt: skip
        BoundRule(id="b", layer="org", when={"topic": {"in": ["y"]}}, action="block", message="no"),
    ]
    assert law_topics(rules) == {"x"}


def test_policy_with_an_unimportable_callable_is_refused(tmp_path: Path) -> None:
    from palm_middleware import load_policy
    from palm_middleware.exceptions import PolicyValidationError

    p = tmp_path / "p.yaml"
    p.write_text(
        "version: 2\ntraits: [a, b]\ntopics:\n  t: {external: {callable: 'nope_xyz:f'}}\n"
        "bounds:\n  - {id: r, layer: law, when: {topic: t}, action: block, message: refused}\n"
    )
    with pytest.raises(PolicyValidationError, match=r"topics\.t\.external\.callable"):
        load_policy(p)
