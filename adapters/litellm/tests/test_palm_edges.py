"""Strict edges of ``/palm/v1`` through a real proxy (issue 11 item 8, issue 14 error bodies).

Every refusal here is checked for the OpenAI error object, and every refused write for leaving
the profile it aimed at untouched. Writes that succeed use the app key's own end users
(``webapp/edge-*``), so the personal keys' profiles other tests rely on stay as they are.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from litellm_proxy_fixtures import Deployment, Proxy

from palm_litellm.auth import key_digest
from palm_litellm.config import PalmRuntime
from palm_litellm.endpoints import MAX_BODY_BYTES, build_router, mount
from palm_middleware import Palm
from palm_middleware.stores.sqlite import SQLiteStore

_OPEN: dict[str, httpx.Client] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    for c in _OPEN.values():
        c.close()
    _OPEN.clear()


def api(proxy: Proxy, who: str) -> httpx.Client:
    """An httpx client on ``/palm/v1`` with ``who``'s key (a raw string: sent as is)."""
    if who not in _OPEN:
        key = proxy.deployment.keys.get(who, who)
        _OPEN[who] = httpx.Client(
            base_url=proxy.url + "/palm/v1", timeout=60, headers={"Authorization": f"Bearer {key}"}
        )
    return _OPEN[who]


class _Response(Protocol):
    """An httpx response, or one of the TestClient (which uses httpx2)."""

    @property
    def status_code(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    def json(self) -> Any: ...


def assert_error(r: _Response, status: int, param: str | None = "any") -> dict[str, Any]:
    """``r`` is the OpenAI error object with ``status`` (and ``param``, unless "any")."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"message", "type", "param", "code"} <= set(err), err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    assert err["code"] == str(status)
    if param != "any":
        assert err["param"] == param, err
    return err  # type: ignore[no-any-return]


def n_events(proxy: Proxy, who: str, user: str | None = None) -> int:
    params = {"user": user} if user else None
    r = api(proxy, who).get("/profile", params=params)
    assert r.status_code == 200, r.text
    return int(r.json()["n_events"])


# -- the table rows --------------------------------------------------------------------


def test_delete_with_a_body_is_refused_and_deletes_nothing(proxy: Proxy) -> None:
    app = api(proxy, "webapp")
    keep = {"user": "edge-keep", "weights": {"safety": 0.4, "helpfulness": 0.6}}
    assert app.put("/profile", json=keep).status_code == 200
    # bob's key, body naming alice: refused (it used to delete bob's own profile).
    before = n_events(proxy, "alice")
    err = assert_error(
        api(proxy, "bob").request("DELETE", "/profile", json={"user": "alice"}), 400, "body"
    )
    assert "takes no body" in err["message"]
    assert n_events(proxy, "alice") == before
    # The app key, a body naming its own end user: refused too; nothing deleted.
    r = app.request("DELETE", "/profile", params={"user": "edge-keep"}, json={"user": "x"})
    assert_error(r, 400, "body")
    assert n_events(proxy, "webapp", "edge-keep") == 1
    # Bodies are refused on every route that takes none.
    for method, path in [
        ("GET", "/profile"),
        ("POST", "/profile/reset"),
        ("GET", "/profile/export"),
        ("GET", "/compare"),
    ]:
        assert_error(app.request(method, path, params={"user": "edge-keep"}, json={}), 400, "body")
    assert n_events(proxy, "webapp", "edge-keep") == 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/feedback", {"type": "thumb", "up": True, "member": "balanced"}),
        ("PUT", "/profile", {"weights": {"safety": 0.5, "helpfulness": 0.5}}),
        ("POST", "/opt-out", {"opted_out": True}),
    ],
)
def test_user_in_the_query_of_a_body_route_is_refused(
    proxy: Proxy, method: str, path: str, body: dict[str, Any]
) -> None:
    before = n_events(proxy, "bob")
    err = assert_error(
        api(proxy, "bob").request(method, path, params={"user": "alice"}, json=body), 422, "user"
    )
    assert "unknown query parameter 'user'" in err["message"]
    assert n_events(proxy, "bob") == before
    assert api(proxy, "bob").get("/profile").json()["opted_out"] is False


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/profile", None),
        ("PUT", "/profile", {"weights": {"safety": 0.5, "helpfulness": 0.5}}),
        ("POST", "/profile/reset", None),
        ("GET", "/profile/export", None),
        ("DELETE", "/profile", None),
        ("POST", "/opt-out", {"opted_out": True}),
        ("GET", "/compare", None),
        ("POST", "/feedback", {"type": "regenerate", "member": "playful"}),
    ],
)
def test_another_user_is_refused_on_every_method(
    proxy: Proxy, method: str, path: str, body: dict[str, Any] | None
) -> None:
    """bob naming alice (query or body) gets 403; bob naming himself is served."""
    bob = api(proxy, "bob")
    before = n_events(proxy, "alice")
    if body is None:
        r = bob.request(method, path, params={"user": "alice"})
    else:
        r = bob.request(method, path, json={**body, "user": "alice"})
    assert "cannot act for another" in assert_error(r, 403)["message"]
    assert n_events(proxy, "alice") == before
    if method == "GET":  # a personal key may repeat its own id
        # (no A/B question under the test policy, which allows no exploration: 409)
        ok = 409 if path == "/compare" else 200
        assert bob.request(method, path, params={"user": "bob"}).status_code == ok


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"type": "thumb", "up": "yes", "member": "balanced"}, "up"),
        ({"type": "thumb", "up": 1, "member": "balanced"}, "up"),
        ({"type": "thumb", "up": None, "member": "balanced"}, "up"),
        ({"type": "explicit", "weights": {"safety": True}}, "weights.safety"),
        ({"type": "explicit", "weights": {"safety": "0.5"}}, "weights.safety"),
        ({"type": "explicit", "weights": {"safety": 0.5}, "confidence": "2"}, "confidence"),
        ({"type": "pairwise", "winner": 1, "loser": "balanced"}, "winner"),
        ({"type": "thumb", "up": True, "member": "balanced", "extra": 1}, "extra"),
        ({"type": "thumb", "up": True, "member": "balanced", "user": ""}, "user"),
        ({"type": "nope"}, "type"),
        ({"up": True}, "type"),
    ],
)
def test_feedback_types_are_strict(proxy: Proxy, body: dict[str, Any], param: str) -> None:
    before = n_events(proxy, "webapp", "edge-strict")
    r = api(proxy, "webapp").post("/feedback", json={"user": "edge-strict", **body})
    assert_error(r, 422, param)
    assert n_events(proxy, "webapp", "edge-strict") == before


def test_strict_but_valid_bodies_are_served(proxy: Proxy) -> None:
    """Strict is not stricter than JSON: an integer is a number."""
    app = api(proxy, "webapp")
    r = app.put("/profile", json={"user": "edge-ok", "weights": {"safety": 1, "brevity": 0}})
    assert r.status_code == 200, r.text
    r = app.post(
        "/feedback", json={"user": "edge-ok", "type": "thumb", "up": False, "member": "terse"}
    )
    assert r.status_code == 200 and r.json()["recorded"] is True
    assert app.post("/opt-out", json={"user": "edge-ok", "opted_out": False}).json() == {
        "opted_out": False
    }


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("POST", "/feedback", b"null"),
        ("POST", "/feedback", b"[]"),
        ("POST", "/feedback", b'[{"type": "thumb", "up": true}]'),
        ("PUT", "/profile", b"null"),
        ("PUT", "/profile", b"42"),
        ("POST", "/opt-out", b'"on"'),
        ("POST", "/opt-out", b""),
        ("POST", "/opt-out", b"{not json"),
        ("POST", "/opt-out", b'{"opted_out": NaN}'),
        ("POST", "/opt-out", b'{"opted_out": true, "opted_out": false}'),
        ("POST", "/opt-out", b"\xff\xfe{"),
        ("POST", "/opt-out", b"[" * 5000 + b"]" * 5000),
    ],
)
def test_bodies_that_are_not_one_json_object(
    proxy: Proxy, method: str, path: str, content: bytes
) -> None:
    r = api(proxy, "bob").request(
        method, path, content=content, headers={"Content-Type": "application/json"}
    )
    # 400 from the route, or from the proxy's body check in front of it (limits.py, no param).
    assert assert_error(r, 400)["param"] in (None, "body")


def test_a_body_must_be_sent_as_json(proxy: Proxy) -> None:
    r = api(proxy, "bob").post(
        "/opt-out", content=b'{"opted_out": true}', headers={"Content-Type": "text/plain"}
    )
    assert_error(r, 400, "body")


def test_unknown_and_repeated_query_parameters(proxy: Proxy) -> None:
    bob = api(proxy, "bob")
    assert_error(bob.get("/profile", params={"foo": "1"}), 422, "foo")
    assert_error(bob.get("/profile", params=[("user", "bob"), ("user", "alice")]), 422, "user")
    assert_error(bob.get("/profile", params={"user": ""}), 422, "user")
    assert_error(bob.request("DELETE", "/profile", params={"force": "1"}), 422, "force")


def test_every_status_has_the_openai_shape(proxy: Proxy) -> None:
    bob = api(proxy, "bob")
    assert_error(api(proxy, "sk-not-a-key").get("/profile"), 401)
    assert_error(api(proxy, "webapp").get("/profile"), 403)  # an app key names its end user
    assert_error(bob.get("/no-such-route"), 404)
    assert_error(bob.get(""), 404)
    r = bob.patch("/profile", json={})
    assert_error(r, 405)
    assert set(r.headers["allow"].split(", ")) == {"GET", "PUT", "DELETE"}
    assert_error(bob.post("/feedback", json={"type": "pairwise", "winner": "x", "loser": "y"}), 400)
    big = b'{"opted_out": true, "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    r = bob.post("/opt-out", content=big, headers={"Content-Type": "application/json"})
    assert_error(r, 413, "body")

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while read
        yield big

    r = bob.post("/opt-out", content=chunked(), headers={"Content-Type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "body")


def test_openapi_documents_the_error_object(proxy: Proxy) -> None:
    doc = httpx.get(proxy.url + "/openapi.json", timeout=60).json()
    ops = [
        op
        for p, item in doc["paths"].items()
        if p.startswith("/palm/v1") and not p.startswith("/palm/v1/admin")  # the report's router
        for op in item.values()
    ]
    assert len(ops) == 8
    for op in ops:
        for status in ("401", "403", "422"):
            ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorOut")


# -- 503 and unexpected failures, in-process (same router, a store held locked) -----------------


@pytest.fixture
def locked_app(deployment: Deployment, tmp_path: Path) -> Iterator[tuple[FastAPI, Path]]:
    """The /palm/v1 routes over a real SQLite store whose write lock another connection holds."""
    runtime = PalmRuntime.from_file(deployment.root / "palm.yaml")
    db = tmp_path / "locked.db"
    runtime.palm = Palm(runtime.portfolio, runtime.palm.policy, SQLiteStore(db, timeout=0.2))
    runtime.palm.profile("warm-up")  # creates the schema

    def auth() -> Any:  # the proxy's key check, already passed: bob's key
        return SimpleNamespace(api_key=key_digest(deployment.keys["bob"]))

    app = FastAPI()
    mount(app, build_router(runtime=lambda: runtime, auth=auth))
    yield app, db


def test_store_unavailable_is_503_in_the_openai_shape(locked_app: tuple[FastAPI, Path]) -> None:
    app, db = locked_app
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with TestClient(app) as client:
            r = client.post("/palm/v1/opt-out", json={"opted_out": True})
        err = assert_error(r, 503)
        assert err["type"] == "service_unavailable"
        assert str(db) not in err["message"]  # no internals in a server-side error
    finally:
        holder.execute("ROLLBACK")
        holder.close()
