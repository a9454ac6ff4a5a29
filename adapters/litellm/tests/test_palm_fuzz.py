"""Fuzzing through a real proxy: no malformed request gets a 5xx.

* ``/palm/v1``: schemathesis reads the proxy's own ``/openapi.json`` (only the ``/palm/v1``
  paths) and sends schema-valid and schema-violating requests with a personal and an app key;
  each reply must be no 5xx, a documented status, and match the documented schema (errors: the
  OpenAI error object).
* ``/v1/chat/completions``: hypothesis builds chat bodies (random JSON values, wrong types, nested
  garbage in every field and message position); each reply must be no 5xx, and a 200 must carry
  a PALM decision.

Both run against their own proxy (the fuzz writes profiles), with bounded example counts.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litellm_proxy_fixtures import (
    BLOCK_WORD,
    Deployment,
    Proxy,
    build_deployment,
    start_proxy,
    stop_proxy,
)
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.timeout(240)

#: A personal key (the fuzz's ``user`` values are someone else: 403) and an app key (its end users).
WHO = st.sampled_from(["alice", "webapp"])
FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzz_proxy(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    root = tmp_path_factory.mktemp("fuzz")
    for folder in ("tok", "models"):  # the session's tiny models: same files, own store and keys
        shutil.copytree(deployment.root / folder, root / folder)
    p = start_proxy(build_deployment(root))
    yield p
    stop_proxy(p)


@pytest.fixture(scope="module")
def palm_schema(fuzz_proxy: Proxy) -> Any:
    doc = httpx.get(fuzz_proxy.url + "/openapi.json", timeout=60).json()
    # The /palm/v1 routes (the operator's /palm/v1/admin report is another router's).
    doc["paths"] = {
        p: v
        for p, v in doc["paths"].items()
        if p.startswith("/palm/v1") and not p.startswith("/palm/v1/admin")
    }
    assert len(doc["paths"]) == 6
    schema = schemathesis.openapi.from_dict(doc)
    schema.config.update(base_url=fuzz_proxy.url)
    return schema


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
OPERATIONS = [
    ("POST", "/palm/v1/feedback"),
    ("GET", "/palm/v1/profile"),
    ("PUT", "/palm/v1/profile"),
    ("DELETE", "/palm/v1/profile"),
    ("POST", "/palm/v1/profile/reset"),
    ("GET", "/palm/v1/profile/export"),
    ("POST", "/palm/v1/opt-out"),
    ("GET", "/palm/v1/compare"),
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_palm_v1_conforms_to_its_openapi(
    palm_schema: Any, fuzz_proxy: Proxy, method: str, path: str, mode: GenerationMode
) -> None:
    """Schema-valid requests (positive) and schema-violating ones (negative, must be 4xx)."""
    checks = [*CHECKS, *([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])]
    keys = fuzz_proxy.deployment.keys

    @FUZZ
    @given(case=palm_schema[path][method].as_strategy(generation_mode=mode), who=WHO)
    def run(case: Any, who: str) -> None:
        # The security scheme LiteLLM documents for its routes (negative cases may drop it).
        case.call_and_validate(
            headers={"x-litellm-api-key": f"Bearer {keys[who]}"}, checks=checks, timeout=60
        )

    run()


# -- chat bodies ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
ROLES = st.sampled_from(["user", "system", "assistant", "tool", "developer", "User", "human", ""])
PARTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "input_text", "image_url", "refusal", "nope"])},
    optional={"text": json_values | st.just(f"about {BLOCK_WORD}")},
)
CONTENT = (
    st.text(max_size=20)
    | st.just(f"tell me about {BLOCK_WORD}")
    | json_values
    | st.lists(PARTS, max_size=3)
)
MESSAGE = st.fixed_dictionaries({"role": ROLES}, optional={"content": CONTENT, "name": json_values})
FIELDS = st.sampled_from(
    [
        "model",
        "messages",
        "stop",
        "temperature",
        "top_p",
        "user",
        "metadata",
        "stream",
        "n",
        "tools",
        "response_format",
        "seed",
        "logprobs",
        "stream_options",
        "extra",
    ]
)


@st.composite
def chat_bodies(draw: st.DrawFn) -> Any:
    """A valid small request, then garbage: whole bodies, fields, or messages."""
    kind = draw(st.sampled_from(["body", "fields", "messages"]))
    if kind == "body":
        return draw(json_values)
    body: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 2,
    }
    if kind == "fields":
        for field in draw(st.lists(FIELDS, min_size=1, max_size=3, unique=True)):
            body[field] = draw(json_values)
    else:
        body["messages"] = draw(st.lists(MESSAGE | json_values, max_size=4))
    return body


@FUZZ
@given(body=chat_bodies())
def test_chat_bodies_never_5xx(fuzz_proxy: Proxy, body: Any) -> None:
    key = fuzz_proxy.deployment.keys["bob"]
    r = httpx.post(
        fuzz_proxy.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert r.status_code < 500, (body, r.status_code, r.text[:500])
    if r.status_code == 200:
        assert "x-palm-decision" in r.headers, (body, r.text[:300])
        assert BLOCK_WORD not in str(body), (body, r.text[:300])
