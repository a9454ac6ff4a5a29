"""A/B pairs through a real LiteLLM proxy (issue 17, item 4): ``/palm/v1/compare`` starts the
pair from the member the user was served (``served=``, else the caller's own latest decision),
refuses a bad ``served`` with a 400 naming it, answers 409 when no question may be asked, and
never pairs, nor serves through ``palm_compare``, a member past the pair cost bound.
The members are a real second server process (an OpenAI-compatible stub)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from litellm_proxy_fixtures import (
    Proxy,
    Stub,
    build_stub_deployment,
    client_for,
    start_proxy,
    stop_proxy,
)

pytestmark = pytest.mark.timeout(300)

POLICY = """\
version: 2
name: ab-pairs
traits: [safety, helpfulness, humor]
defaults:
  weights: {safety: 0.4, helpfulness: 0.4, humor: 0.2}
  prior_strength: 10
exploration: true
bounds:
  - {id: no-risky, when: {member: risky}, action: use_default}
"""
# Values under the default weights (the bound: at most 20% below the best, steady's 0.70):
# chatty 0.68 and bland 0.58 are within it; jester 0.44 is not; risky 0.62 is within it but
# triggers the rule `no-risky`, so the policy never serves it as a second choice.
MEMBERS = {
    "steady": {"safety": 0.8, "helpfulness": 0.8, "humor": 0.3},
    "chatty": {"safety": 0.7, "helpfulness": 0.7, "humor": 0.6},
    "bland": {"safety": 0.9, "helpfulness": 0.5, "humor": 0.1},
    "jester": {"safety": 0.3, "helpfulness": 0.3, "humor": 1.0},
    "risky": {"safety": 0.55, "helpfulness": 0.75, "humor": 0.5},
}
CHEAP = {"steady", "chatty", "bland"}  # within the bound for the default weights
USERS = ("alice", "bob", "carol", "dora")


@pytest.fixture(scope="module")
def proxy(stub: Stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    root = tmp_path_factory.mktemp("ab-pairs")
    dep = build_stub_deployment(root, stub, POLICY, MEMBERS)
    # More personal keys than the stub deployment's one: the pair is each caller's own.
    palm = yaml.safe_load((root / "palm.yaml").read_text())
    for name in USERS[1:]:
        key = f"sk-palm-{name}-{secrets.token_hex(8)}"
        dep.keys[name] = key
        digest = hashlib.sha256(key.encode()).hexdigest()
        palm["auth"]["keys"].append({"sha256": digest, "user": name})
    # The bound these tests probe: 20% (tighter than the default 40%), set in palm.yaml.
    palm["pair_cost"] = 0.2
    (root / "palm.yaml").write_text(yaml.safe_dump(palm, sort_keys=False))
    p = start_proxy(dep)
    yield p
    stop_proxy(p)


def ask(client: httpx.Client, compare: str | None = None) -> str:
    """One `auto` request; the member that served it (``x-palm-member``)."""
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "Hi"}]}
    if compare is not None:
        body["metadata"] = {"palm_compare": compare}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.headers["x-palm-member"]


def pair(client: httpx.Client, **params: str) -> list[str]:
    r = client.get("/palm/v1/compare", params=params)
    assert r.status_code == 200, r.text
    out: list[str] = r.json()["candidates"]
    return out


def lean(client: httpx.Client, weights: dict[str, float]) -> None:
    r = client.put("/palm/v1/profile", json={"weights": weights, "confidence": 20})
    assert r.status_code == 200, r.text


def test_the_pair_starts_from_the_member_served(proxy: Proxy) -> None:
    with client_for(proxy, "alice") as alice:
        served = ask(alice)
        assert served == "steady"
        assert pair(alice, served=served)[0] == "steady"
        for _ in range(3):
            a, b = pair(alice)  # without `served`: alice's own latest decision
            assert a == "steady" and b in CHEAP - {"steady"}
        # Her profile moves: the mean now routes to chatty, but she was shown steady.
        lean(alice, {"safety": 0.3, "helpfulness": 0.3, "humor": 0.4})
        assert pair(alice)[0] == "steady"
        assert pair(alice, served="chatty")[0] == "chatty"  # an explicit `served` wins
        # The second side of an A/B question is not "what was served".
        assert ask(alice, compare="steady") == "steady"
        assert pair(alice)[0] == "steady"
        assert ask(alice) == "chatty"  # a new decision: now the pair starts from it
        assert pair(alice)[0] == "chatty"


@pytest.mark.parametrize(
    ("served", "why"),
    [
        ("nobody", "not a member"),
        ("Steady", "not a member"),
        (" steady", "not a member"),
        ("steady\x00", "not a member"),
        ("", "must name a member"),
        ("x" * 5000, "must name a member"),
        ("risky", "rules conditioned on the member apply to 'risky'"),
    ],
)
def test_a_bad_served_is_a_400_naming_the_field(proxy: Proxy, served: str, why: str) -> None:
    with client_for(proxy, "bob") as bob:
        r = bob.get("/palm/v1/compare", params={"served": served})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "served" and err["type"] == "invalid_request_error"
        assert err["code"] == "400" and why in err["message"]
        assert pair(bob)[1] in CHEAP  # and the proxy keeps serving


def test_served_given_twice_is_refused(proxy: Proxy) -> None:
    with client_for(proxy, "bob") as bob:
        r = bob.get("/palm/v1/compare?served=steady&served=chatty")
        assert r.status_code == 422 and r.json()["error"]["param"] == "served"


def test_another_users_member_is_only_a_member_name(proxy: Proxy) -> None:
    with client_for(proxy, "carol") as carol, client_for(proxy, "dora") as dora:
        lean(dora, {"safety": 0.0, "helpfulness": 0.0, "humor": 1.0})
        assert ask(dora) == "jester"  # what dora was served
        before = dora.get("/palm/v1/profile/export").json()
        # carol names it: her pair is about her own profile, within her own bound ...
        a, b = pair(carol, served="jester")
        assert a == "jester" and b in CHEAP
        # ... her default is her own record (none yet: the member routed for her), and
        # nothing of dora's was read or written.
        assert pair(carol)[0] == "steady"
        assert carol.get("/palm/v1/compare", params={"user": "dora"}).status_code == 403
        after = dora.get("/palm/v1/profile/export").json()
        assert after["events"] == before["events"]
        new = after["audit"][len(before["audit"]) :]
        assert [a["kind"] for a in new] == ["export"]  # dora's own export, nothing of carol's


def test_no_member_within_the_bound_is_a_409_and_no_comparison_is_served(
    proxy: Proxy,
) -> None:
    with client_for(proxy, "dora") as dora:
        # Dora is all humor: jester is her best member, every other loses over 20% of it.
        assert ask(dora) == "jester"
        r = dora.get("/palm/v1/compare")
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert err["code"] == "409" and err["param"] is None
        assert "no member but 'jester' is within the pair cost bound" in err["message"]
        # Asking for a costly member anyway: the proxy routes as usual instead.
        assert ask(dora, compare="steady") == "jester"


def test_palm_compare_serves_only_members_within_the_bound(proxy: Proxy) -> None:
    with client_for(proxy, "bob") as bob:
        assert ask(bob, compare="chatty") == "chatty"
        assert ask(bob, compare="jester") == "steady"  # 37% below the best: not shown
        assert ask(bob, compare="risky") == "steady"  # the rule keeps it from bob
