"""Issue 11 through a real proxy: safe policy reload and an audit log that never cries wolf.

A proxy of its own (its policy file is rewritten by these tests), on the tiny real members.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from litellm_proxy_fixtures import (
    BLOCK_WORD,
    POLICY,
    RULE_ID,
    Deployment,
    Proxy,
    build_deployment,
    client_for,
    start_proxy,
    stop_proxy,
)

from palm_middleware import SQLiteStore
from palm_middleware.audit import verify_audit_chain

#: The test policy with its block rule in the law layer: what a reload must never drop.
LAW_POLICY = POLICY.replace(f"  - id: {RULE_ID}\n", f"  - id: {RULE_ID}\n    layer: law\n")
NEW_WORD = "verboten"
STRICTER = LAW_POLICY.replace(f"[{BLOCK_WORD}]", f"[{BLOCK_WORD}, {NEW_WORD}]")
INTERVAL = 0.2  # reload_interval of this deployment


@pytest.fixture(scope="module")
def audited(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    root = tmp_path_factory.mktemp("audit-proxy")
    for shared in ("tok", "models"):  # the session deployment's tiny models, not rebuilt
        os.symlink(deployment.root / shared, root / shared)
    dep = build_deployment(root)
    assert "layer: law\n    when: {topic: forbidden}" in LAW_POLICY
    (root / "policy.yaml").write_text(LAW_POLICY)
    palm = yaml.safe_load((root / "palm.yaml").read_text())
    palm.update({"reload": True, "reload_interval": INTERVAL})
    (root / "palm.yaml").write_text(yaml.safe_dump(palm, sort_keys=False))
    proxy = start_proxy(dep)
    yield proxy
    stop_proxy(proxy)


def chat(c: httpx.Client, text: str) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}], "max_tokens": 4}
    return c.post("/v1/chat/completions", json=body)


def store_of(proxy: Proxy) -> SQLiteStore:
    """The proxy's own SQLite file, opened by this process (a second, real reader)."""
    return SQLiteStore(proxy.deployment.root / "palm.db")


def assert_chain_ok(proxy: Proxy) -> None:
    with store_of(proxy) as store:
        report = verify_audit_chain(store)
    assert report.ok, report.problems


def test_delete_profile_twice_keeps_the_chain_verifiable(audited: Proxy) -> None:
    with client_for(audited, "alice") as alice:
        assert chat(alice, "Hello there").status_code == 200
        assert alice.delete("/palm/v1/profile").json() == {"deleted": True}
        assert alice.delete("/palm/v1/profile").json() == {"deleted": True}
        assert_chain_ok(audited)
        assert chat(alice, "Hello again").status_code == 200  # alice comes back, leaves again
        assert alice.delete("/palm/v1/profile").status_code == 200
        kinds = [a["kind"] for a in alice.get("/palm/v1/profile/export").json()["audit"]]
    assert kinds == ["forget", "forget", "forget"]
    assert_chain_ok(audited)


def test_feedback_edits_resets_and_opt_outs_are_audited(audited: Proxy) -> None:
    with client_for(audited, "bob") as bob:
        r = chat(bob, "Hello there")
        decision = r.headers["x-palm-decision"]
        thumb = {"type": "thumb", "up": True, "decision_id": decision, "event_id": "bob-1"}
        assert bob.post("/palm/v1/feedback", json=thumb).status_code == 200
        weights = {"safety": 0.3, "helpfulness": 0.3, "humor": 0.1, "brevity": 0.3}
        assert bob.put("/palm/v1/profile", json={"weights": weights}).status_code == 200
        assert bob.post("/palm/v1/profile/reset").status_code == 200
        assert bob.post("/palm/v1/opt-out", json={"opted_out": True}).status_code == 200
        assert bob.post("/palm/v1/opt-out", json={"opted_out": False}).status_code == 200
        audit = bob.get("/palm/v1/profile/export").json()["audit"]
        assert bob.delete("/palm/v1/profile").status_code == 200
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for a in audit:
        by_kind.setdefault(a["kind"], []).append(a["payload"])
    assert {"decision", "feedback", "edit", "reset", "opt_out", "opt_in"} <= set(by_kind)
    (fb,) = by_kind["feedback"]
    assert fb["event_kind"] == "thumb" and fb["decision_id"] == decision and fb["up"] is True
    assert by_kind["edit"][0]["weights"] == weights
    assert "Hello" not in str(audit)  # ids and labels, never text
    assert_chain_ok(audited)


def wait_for(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(INTERVAL)


def policy_records(proxy: Proxy) -> list[tuple[str, dict[str, Any]]]:
    with store_of(proxy) as store:
        return [(r.kind, r.payload) for r in store.audit("system")]


def test_a_policy_caught_mid_write_is_not_swapped_in(audited: Proxy) -> None:
    path: Path = audited.deployment.root / "policy.yaml"
    cut = LAW_POLICY.index(f"  - id: {RULE_ID}")  # truncated before the block rule: valid YAML
    before = len(policy_records(audited))
    with client_for(audited, "alice") as app:
        version = chat(app, "Hello").headers["x-palm-policy"]
        with open(path, "w") as f:  # the writer stalls mid-write, long enough to look complete
            f.write(LAW_POLICY[:cut])

        def refusals() -> list[dict[str, Any]]:
            # The policy file is looked at on the request path (at most every interval).
            assert chat(app, f"tell me about {BLOCK_WORD}").status_code == 403
            return [p for k, p in policy_records(audited)[before:] if k == "policy_refused"]

        refused = wait_for(refusals)
        assert refused, audited.log.read_text()[-3000:]
        assert refused[0]["rule_ids"] == [RULE_ID]
        assert refused[0]["old_version"] == version and refused[0]["new_version"] != version
        assert refused[0]["old_sha256"] != refused[0]["new_sha256"]
        blocked = chat(app, f"tell me about {BLOCK_WORD}")
        assert blocked.status_code == 403 and RULE_ID in blocked.text
        assert chat(app, "Hello").headers["x-palm-policy"] == version
        assert chat(app, f"about {NEW_WORD}").status_code == 200
        with open(path, "w") as f:  # the writer finishes, with a stricter version
            f.write(STRICTER)
        assert wait_for(lambda: chat(app, f"about {NEW_WORD}").status_code == 403)
        assert chat(app, f"tell me about {BLOCK_WORD}").status_code == 403
        assert chat(app, "Hello").headers["x-palm-policy"] != version
    swaps = [p for k, p in policy_records(audited)[before:] if k == "policy_swap"]
    assert len(swaps) == 1 and swaps[0]["old_version"] == version
    assert swaps[0]["old_sha256"] == refused[0]["old_sha256"]
    assert_chain_ok(audited)
