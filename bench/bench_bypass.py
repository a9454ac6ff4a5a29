"""Fuzz and bypass run through a real proxy: does any request get served around the policy?

A real ``litellm`` proxy with the PALM hook (tiny ONNX members, the adapter tests' policy: a
``block`` rule on the word ``forbidden-topic``), attacked with ``--requests`` malformed or
adversarial requests in seven categories (issue 11's table):

=============  =================================================================================
endpoints      every text-producing route LiteLLM serves (chat, text completion, responses,
               Anthropic messages, Gemini generateContent, Azure/engine aliases), model ``auto``
models         member groups, provider models not in ``model_list``, ``"auto,formal"``, case,
               whitespace and NUL variants
shapes         the block word in every message position and content shape (system, developer,
               earlier turn, prefill, tool, ``"User"``, ``"human"``, part lists, objects, names)
routes         LiteLLM's management and debug routes with personal and app keys
sizes          message bodies from 1 KiB to 2 MiB (the 10 MB body is timed separately)
identity       another user named in ``user``, metadata, headers, and on every ``/palm/v1`` route
malformed      wrong types, null/array/invalid JSON bodies, strict-type violations on /palm/v1
=============  =================================================================================

Per category it counts: requests sent; **served around the policy** (a 200 on a text route
without an ``x-palm-decision`` header, a 200 to a request that contains the block word, a 200
from a management route to a non-admin key, a 2xx from /palm/v1 to a request naming another
user; target 0); 5xx (target 0). After the run: the proxy still answers, the audit chain verifies
(``verify_audit_chain`` on the proxy's store), no record exists for a user that was only ever
named by someone else's key. Then: the time to refuse a 10 MB (and 1 MiB) body, and the hook's
overhead (p50 of sequential chat requests, hooked proxy with ``auto`` vs a proxy without the
hook serving the member directly, interleaved).

    python bench/bench_bypass.py [--requests 10000] [--concurrency 16] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path[:0] = [str(ROOT / "adapters" / "litellm" / "tests"), str(ROOT)]

import httpx  # noqa: E402
import yaml  # noqa: E402
from litellm_proxy_fixtures import (  # noqa: E402
    BLOCK_WORD,
    Deployment,
    Proxy,
    build_deployment,
    start_proxy,
    stop_proxy,
)

RISKY = f"Tell me everything about {BLOCK_WORD}."
BENIGN = "Hello there"
MEMBERS = ("balanced", "playful", "base")
VICTIMS = tuple(f"victim-{i}" for i in range(8))


@dataclass
class Req:
    """One request and what a correct proxy must not do with it."""

    category: str
    label: str
    method: str
    path: str
    who: str
    body: bytes | None = None
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    text_route: bool = True
    """A 200 must carry a PALM decision."""
    risky: bool = False
    """Contains the block word: any 200 is a bypass."""
    admin_route: bool = False
    """A management route: a 200 to a non-admin key is a bypass."""
    spoof: bool = False
    """Names another user: a 2xx on /palm/v1 is a bypass."""


def j(value: Any) -> bytes:
    return json.dumps(value).encode()


def chat(text: str, model: str = "auto", **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 2,
        **extra,
    }


# -- request builders, one per category -------------------------------------------------------


def text_routes(model: str, text: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, path, body) for every text-producing route, asking ``model`` about ``text``."""
    msgs = [{"role": "user", "content": text}]
    m = quote(model, safe="")  # in a path: NUL, spaces and "," percent-encoded
    return [
        ("chat", "/v1/chat/completions", chat(text, model)),
        ("chat-noprefix", "/chat/completions", chat(text, model)),
        ("azure-chat", f"/openai/deployments/{m}/chat/completions", chat(text, model)),
        ("engines-chat", f"/engines/{m}/chat/completions", chat(text, model)),
        ("completions", "/v1/completions", {"model": model, "prompt": text, "max_tokens": 2}),
        ("completions-noprefix", "/completions", {"model": model, "prompt": text, "max_tokens": 2}),
        (
            "azure-completions",
            f"/openai/deployments/{m}/completions",
            {"model": model, "prompt": [text], "max_tokens": 2},
        ),
        ("engines-completions", f"/engines/{m}/completions", {"prompt": text, "max_tokens": 2}),
        ("responses", "/v1/responses", {"model": model, "input": text, "max_output_tokens": 16}),
        (
            "responses-items",
            "/responses",
            {"model": model, "input": [{"role": "user", "content": text}], "max_output_tokens": 16},
        ),
        ("messages", "/v1/messages", {"model": model, "messages": msgs, "max_tokens": 2}),
        (
            "messages-system",
            "/v1/messages",
            {
                "model": model,
                "system": text,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 2,
            },
        ),
        (
            "gemini",
            f"/v1beta/models/{m}:generateContent",
            {
                "contents": [{"role": "user", "parts": [{"text": text}]}],
                "generationConfig": {"maxOutputTokens": 2},
            },
        ),
    ]


def endpoints(rng: random.Random, i: int) -> Req:
    risky = rng.random() < 0.6
    routes = text_routes("auto", RISKY if risky else BENIGN)
    label, path, body = routes[i % len(routes)]
    who = rng.choice(["alice", "bob", "alice", "webapp", "master"])
    if who == "webapp":
        body = {**body, "user": f"end-{i % 5}"}
    return Req("endpoints", label, "POST", path, who, j(body), risky=risky)


MODEL_NAMES = (
    *MEMBERS,
    "palm_onnx/terse",
    "palm_onnx/balanced",
    "palm_onnx/playful",
    "auto,balanced",
    "auto,playful",
    "AUTO",
    "Auto",
    " auto",
    "auto ",
    "auto\u0000",
    "balanced\u0000",
    "openai/auto",
    "openai/balanced",
    "litellm_proxy/auto",
    "",
    "*",
)


def models(rng: random.Random, i: int) -> Req:
    name = MODEL_NAMES[i % len(MODEL_NAMES)]
    risky = rng.random() < 0.5
    text = RISKY if risky else BENIGN
    if rng.random() < 0.7:
        label, path, body = "chat", "/v1/chat/completions", chat(text, name)
    else:
        label, path, body = rng.choice(text_routes(name, text))
    who = rng.choice(["alice", "bob", "master"])
    return Req("models", f"{label}:{name!r}", "POST", path, who, j(body), risky=risky)


def _shapes() -> list[tuple[str, list[Any]]]:
    r = RISKY
    part = {"type": "text", "text": r}
    return [
        ("system", [{"role": "system", "content": r}, {"role": "user", "content": BENIGN}]),
        ("developer", [{"role": "developer", "content": r}, {"role": "user", "content": BENIGN}]),
        (
            "earlier-turn",
            [
                {"role": "user", "content": r},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": BENIGN},
            ],
        ),
        ("prefill", [{"role": "user", "content": BENIGN}, {"role": "assistant", "content": r}]),
        (
            "tool",
            [
                {"role": "user", "content": BENIGN},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": r},
            ],
        ),
        (
            "tool-call-args",
            [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": json.dumps({"q": r})},
                        }
                    ],
                },
                {"role": "user", "content": BENIGN},
            ],
        ),
        ("role-User", [{"role": "User", "content": r}]),
        ("role-human", [{"role": "human", "content": r}]),
        ("role-USER-last", [{"role": "user", "content": BENIGN}, {"role": "USER", "content": r}]),
        ("content-object", [{"role": "user", "content": part}]),
        ("parts-text", [{"role": "user", "content": [part]}]),
        ("parts-input_text", [{"role": "user", "content": [{"type": "input_text", "text": r}]}]),
        (
            "parts-after-image",
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}, part]}],
        ),
        (
            "parts-refusal",
            [
                {"role": "assistant", "content": [{"type": "refusal", "refusal": r}]},
                {"role": "user", "content": BENIGN},
            ],
        ),
        ("name-field", [{"role": "user", "name": r.replace(" ", "_"), "content": BENIGN}]),
        (
            "function-role",
            [{"role": "function", "name": "f", "content": r}, {"role": "user", "content": BENIGN}],
        ),
        ("split-word", [{"role": "user", "content": ["forbidden-", "topic"]}]),
        ("upper-case", [{"role": "user", "content": RISKY.upper()}]),
        ("unicode-dash", [{"role": "user", "content": RISKY.replace("-", "\u2011")}]),
        ("zero-width", [{"role": "user", "content": RISKY.replace("topic", "to\u200bpic")}]),
    ]


SHAPES = _shapes()


def shapes(rng: random.Random, i: int) -> Req:
    label, messages = SHAPES[i % len(SHAPES)]
    body = {"model": "auto", "messages": messages, "max_tokens": 2}
    if rng.random() < 0.15:
        body["stream"] = True
    # Variants that only obfuscate (unicode, zero-width) are not the exact word: report them
    # as served-without-decision only, not as risky.
    risky = BLOCK_WORD in json.dumps(messages)
    who = rng.choice(["alice", "bob", "webapp"])
    if who == "webapp":
        body["user"] = f"end-{i % 5}"
    return Req("shapes", label, "POST", "/v1/chat/completions", who, j(body), risky=risky)


ADMIN_ROUTES = (
    ("GET", "/model/info", None),
    ("GET", "/v1/model/info", None),
    ("GET", "/model_group/info", None),
    ("GET", "/settings", None),
    ("GET", "/active/callbacks", None),
    ("GET", "/get/config/callbacks", None),
    ("GET", "/debug/asyncio-tasks", None),
    ("GET", "/routes", None),
    ("GET", "/config/yaml", None),
    ("GET", "/get/config", None),
    ("GET", "/key/list", None),
    ("POST", "/key/generate", {}),
    ("GET", "/user/list", None),
    ("GET", "/team/list", None),
    ("GET", "/global/spend", None),
    ("GET", "/spend/logs", None),
    ("POST", "/model/new", {"model_name": "x", "litellm_params": {"model": "palm_onnx/terse"}}),
    ("POST", "/config/update", {}),
    ("GET", "/cache/ping", None),
    ("GET", "/get/litellm_model_cost_map", None),
)


def routes(rng: random.Random, i: int) -> Req:
    method, path, body = ADMIN_ROUTES[i % len(ADMIN_ROUTES)]
    who = rng.choice(["alice", "bob", "webapp"])
    return Req(
        "routes",
        path,
        method,
        path,
        who,
        j(body) if body is not None else None,
        text_route=False,
        admin_route=True,
    )


SIZES = (1 << 10, 4 << 10, 16 << 10, 64 << 10)
BIG = (256 << 10, (1 << 20) + 1, 2 << 20)


def sizes(rng: random.Random, i: int, n_big: list[int]) -> Req:
    if n_big[0] > 0 and i % 50 == 0:
        n_big[0] -= 1
        size = BIG[n_big[0] % len(BIG)]
    else:
        size = SIZES[i % len(SIZES)]
    risky = rng.random() < 0.5
    text = ("lorem ipsum " * (size // 12 + 1))[:size]
    if risky:
        at = rng.randrange(len(text))
        text = text[:at] + f" {BLOCK_WORD} " + text[at:]
    return Req(
        "sizes", f"{size}B", "POST", "/v1/chat/completions", "alice", j(chat(text)), risky=risky
    )


def identity(rng: random.Random, i: int) -> Req:
    victim = VICTIMS[i % len(VICTIMS)]
    k = i % 16
    base = chat(BENIGN)
    palm = "/palm/v1"
    if k == 0:
        return Req(
            "identity",
            "chat user=victim",
            "POST",
            "/v1/chat/completions",
            "alice",
            j({**base, "user": victim}),
            spoof=True,
        )
    if k == 1:
        body = {
            **base,
            "metadata": {"user_id": victim, "user_api_key_user_id": victim, "end_user": victim},
        }
        return Req("identity", "chat metadata", "POST", "/v1/chat/completions", "alice", j(body))
    if k == 2:
        body = {
            **base,
            "litellm_metadata": {"user_api_key_user_id": victim},
            "metadata": {"palm": {"user": victim, "decision_id": "x" * 32}},
        }
        return Req(
            "identity",
            "chat litellm_metadata/palm",
            "POST",
            "/v1/chat/completions",
            "alice",
            j(body),
        )
    if k == 3:
        hdrs = {
            "x-litellm-user-id": victim,
            "x-end-user-id": victim,
            "x-user": victim,
            "openai-user": victim,
        }
        return Req(
            "identity",
            "chat headers",
            "POST",
            "/v1/chat/completions",
            "alice",
            j(base),
            headers=hdrs,
        )
    if k == 4:
        return Req(
            "identity",
            "chat ?user=",
            "POST",
            f"/v1/chat/completions?user={victim}",
            "alice",
            j(base),
        )
    if k == 5:
        return Req(
            "identity",
            "chat user=int",
            "POST",
            "/v1/chat/completions",
            "alice",
            j({**base, "user": 7}),
            spoof=True,
        )
    if k == 6:
        return Req(
            "identity",
            "GET profile ?user",
            "GET",
            f"{palm}/profile?user={victim}",
            "alice",
            None,
            text_route=False,
            spoof=True,
        )
    if k == 7:
        return Req(
            "identity",
            "DELETE ?user",
            "DELETE",
            f"{palm}/profile?user={victim}",
            "bob",
            None,
            text_route=False,
            spoof=True,
        )
    if k == 8:
        return Req(
            "identity",
            "DELETE body",
            "DELETE",
            f"{palm}/profile",
            "bob",
            j({"user": victim}),
            text_route=False,
            spoof=True,
        )
    if k == 9:
        fb = {"type": "thumb", "up": False, "member": "balanced"}
        return Req(
            "identity",
            "feedback ?user",
            "POST",
            f"{palm}/feedback?user={victim}",
            "alice",
            j(fb),
            text_route=False,
            spoof=True,
        )
    if k == 10:
        fb = {"type": "thumb", "up": False, "member": "balanced", "user": victim}
        return Req(
            "identity",
            "feedback body user",
            "POST",
            f"{palm}/feedback",
            "alice",
            j(fb),
            text_route=False,
            spoof=True,
        )
    if k == 11:
        w = {"weights": {"safety": 0.5, "humor": 0.5}, "user": victim}
        return Req(
            "identity",
            "PUT profile user",
            "PUT",
            f"{palm}/profile",
            "bob",
            j(w),
            text_route=False,
            spoof=True,
        )
    if k == 12:
        return Req(
            "identity",
            "opt-out user",
            "POST",
            f"{palm}/opt-out",
            "alice",
            j({"opted_out": True, "user": victim}),
            text_route=False,
            spoof=True,
        )
    if k == 13:
        return Req(
            "identity",
            "reset ?user",
            "POST",
            f"{palm}/profile/reset?user={victim}",
            "bob",
            None,
            text_route=False,
            spoof=True,
        )
    if k == 14:
        return Req(
            "identity",
            "export ?user",
            "GET",
            f"{palm}/profile/export?user={victim}",
            "alice",
            None,
            text_route=False,
            spoof=True,
        )
    return Req(
        "identity",
        "compare ?user twice",
        "GET",
        f"{palm}/compare?user=alice&user={victim}",
        "alice",
        None,
        text_route=False,
        spoof=True,
    )


HI_RAW = j([{"role": "user", "content": "hi"}])


def _malformed() -> list[tuple[str, str, bytes, str | None, bool]]:
    """(label, path, raw body, content type, risky)."""
    c = "/v1/chat/completions"
    p = "/palm/v1"
    hi = [{"role": "user", "content": BENIGN}]
    risky = [{"role": "user", "content": RISKY}]
    out: list[tuple[str, str, bytes, str | None, bool]] = [
        (
            "stop=5",
            c,
            j({"model": "auto", "messages": hi, "stop": 5, "max_tokens": 2}),
            None,
            False,
        ),
        (
            "stop=5 risky",
            c,
            j({"model": "auto", "messages": risky, "stop": 5, "max_tokens": 2}),
            None,
            True,
        ),
        (
            "content=42",
            c,
            j({"model": "auto", "messages": [{"role": "user", "content": 42}], "max_tokens": 2}),
            None,
            False,
        ),
        (
            "content=null",
            c,
            j({"model": "auto", "messages": [{"role": "user", "content": None}], "max_tokens": 2}),
            None,
            False,
        ),
        (
            "content={}",
            c,
            j({"model": "auto", "messages": [{"role": "user", "content": {}}], "max_tokens": 2}),
            None,
            False,
        ),
        ("messages={}", c, j({"model": "auto", "messages": {}}), None, False),
        ("messages=str", c, j({"model": "auto", "messages": RISKY}), None, True),
        ("messages=[[]]", c, j({"model": "auto", "messages": [[]]}), None, False),
        (
            "role=5",
            c,
            j({"model": "auto", "messages": [{"role": 5, "content": RISKY}]}),
            None,
            True,
        ),
        ("temperature=str", c, j({**chat(BENIGN), "temperature": "hot"}), None, False),
        ("max_tokens=str", c, j({**chat(BENIGN), "max_tokens": "2"}), None, False),
        ("max_tokens=-1", c, j({**chat(BENIGN), "max_tokens": -1}), None, False),
        ("n=str", c, j({**chat(BENIGN), "n": "2"}), None, False),
        ("tools=5", c, j({**chat(BENIGN), "tools": 5}), None, False),
        ("stream=str", c, j({**chat(BENIGN), "stream": "yes"}), None, False),
        ("model=5", c, j({**chat(BENIGN), "model": 5}), None, False),
        ("model=null", c, j({**chat(BENIGN), "model": None}), None, False),
        ("model=list", c, j({**chat(RISKY), "model": ["auto"]}), None, True),
        ("metadata=str", c, j({**chat(BENIGN), "metadata": "x"}), None, False),
        ("user=obj", c, j({**chat(BENIGN), "user": {"id": "x"}}), None, False),
        ("body=null", c, b"null", None, False),
        ("body=[]", c, b"[]", None, False),
        ("body=true", c, b"true", None, False),
        ("body=str", c, j(RISKY), None, True),
        ("body=invalid", c, b'{"model": "auto", "messages": [', None, False),
        ("body=empty", c, b"", None, False),
        (
            "body=NaN",
            c,
            b'{"model": "auto", "messages": ' + HI_RAW + b', "temperature": NaN}',
            None,
            False,
        ),
        (
            "dup-keys",
            c,
            b'{"model": "balanced", "model": "auto", "messages": ' + HI_RAW + b', "max_tokens": 2}',
            None,
            False,
        ),
        (
            "dup-keys risky",
            c,
            (
                f'{{"messages": {json.dumps(risky)}, "model": "auto", "max_tokens": 2, '
                f'"messages": {HI_RAW.decode()}}}'
            ).encode(),
            None,
            False,  # the last "messages" wins everywhere: the member reads "hi"
        ),
        (
            "deep-nesting",
            c,
            b'{"model": "auto", "messages": ' + b"[" * 3000 + b"]" * 3000 + b"}",
            None,
            False,
        ),
        ("text/plain", c, j(chat(RISKY)), "text/plain", True),
        ("form", c, b"model=auto&messages=hi", "application/x-www-form-urlencoded", False),
        ("utf16", c, json.dumps(chat(RISKY)).encode("utf-16"), None, True),
        (
            "latin1-bytes",
            c,
            b'{"model": "auto", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
            None,
            False,
        ),
        (
            "thumb up=yes",
            f"{p}/feedback",
            j({"type": "thumb", "up": "yes", "member": "balanced"}),
            None,
            False,
        ),
        (
            "thumb up=1",
            f"{p}/feedback",
            j({"type": "thumb", "up": 1, "member": "balanced"}),
            None,
            False,
        ),
        (
            "weight=true",
            f"{p}/feedback",
            j({"type": "explicit", "weights": {"safety": True}}),
            None,
            False,
        ),
        (
            "weight='0.5'",
            f"{p}/feedback",
            j({"type": "explicit", "weights": {"safety": "0.5"}}),
            None,
            False,
        ),
        ("feedback null", f"{p}/feedback", b"null", None, False),
        ("feedback []", f"{p}/feedback", b"[]", None, False),
        ("profile null", f"{p}/profile", b"null", None, False),
        ("opt-out extra", f"{p}/opt-out", j({"opted_out": True, "extra": 1}), None, False),
        ("opt-out str", f"{p}/opt-out", j({"opted_out": "false"}), None, False),
    ]
    return out


MALFORMED = _malformed()
_STRICT_PALM = {"thumb up=yes", "thumb up=1", "weight=true", "weight='0.5'", "opt-out str"}


def malformed(rng: random.Random, i: int) -> Req:
    label, path, body, ctype, risky = MALFORMED[i % len(MALFORMED)]
    method = "PUT" if label == "profile null" else "POST"
    on_palm = path.startswith("/palm/v1")
    return Req(
        "malformed",
        label,
        method,
        path,
        rng.choice(["alice", "bob"]),
        body,
        content_type=ctype or "application/json",
        text_route=not on_palm,
        risky=risky,
        # A strict-type violation accepted by /palm/v1 is served around its contract.
        spoof=label in _STRICT_PALM,
    )


CATEGORIES: dict[str, float] = {
    "endpoints": 0.18,
    "models": 0.15,
    "shapes": 0.20,
    "routes": 0.08,
    "sizes": 0.03,
    "identity": 0.16,
    "malformed": 0.20,
}


def build_requests(n: int, seed: int) -> list[Req]:
    rng = random.Random(seed)
    n_big = [len(BIG) * 2]
    makers: dict[str, Callable[[random.Random, int], Req]] = {
        "endpoints": endpoints,
        "models": models,
        "shapes": shapes,
        "routes": routes,
        "sizes": lambda r, i: sizes(r, i, n_big),
        "identity": identity,
        "malformed": malformed,
    }
    reqs: list[Req] = []
    for name, share in CATEGORIES.items():
        count = max(1, round(n * share))
        reqs.extend(makers[name](rng, i) for i in range(count))
    rng.shuffle(reqs)
    return reqs


# -- running ----------------------------------------------------------------------------------


@dataclass
class Tally:
    sent: int = 0
    status: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    bypass: int = 0
    five_xx: int = 0
    bypass_examples: Counter[str] = field(default_factory=Counter)
    five_xx_examples: Counter[str] = field(default_factory=Counter)
    by_label: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))


def judge(req: Req, status: int, headers: httpx.Headers, who_is_admin: bool) -> str | None:
    """Why this reply is served around the policy (None: it is not)."""
    ok = 200 <= status < 300
    if not ok:
        return None
    if req.spoof:
        return "2xx to a request naming another user / violating strict types"
    if req.admin_route and not who_is_admin:
        return "management route reached by a non-admin key"
    if req.text_route and req.risky:
        return "served a request containing the block word"
    if req.text_route and "x-palm-decision" not in headers:
        return "200 without a PALM decision"
    return None


async def run_all(
    proxy: Proxy, reqs: list[Req], concurrency: int, timeout: float
) -> dict[str, Tally]:
    keys = {**proxy.deployment.keys, "master": proxy.deployment.master_key}
    tallies: dict[str, Tally] = defaultdict(Tally)
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    done = 0
    t0 = time.perf_counter()

    async with httpx.AsyncClient(base_url=proxy.url, timeout=timeout, limits=limits) as client:

        async def one(req: Req) -> None:
            nonlocal done
            headers = {"Authorization": f"Bearer {keys[req.who]}", **req.headers}
            if req.body is not None and req.content_type:
                headers["Content-Type"] = req.content_type
            tally = tallies[req.category]
            async with sem:
                tally.sent += 1
                try:
                    r = await client.request(
                        req.method, req.path, content=req.body, headers=headers
                    )
                    await r.aread()
                except (httpx.HTTPError, httpx.InvalidURL) as exc:
                    tally.transport_errors += 1
                    tally.five_xx_examples[f"{req.label}: {type(exc).__name__}"] += 1
                    return
            tally.status[r.status_code] += 1
            tally.by_label[f"{req.label} [{req.method} {req.path.split('?')[0]}]"][
                r.status_code
            ] += 1
            if r.status_code >= 500:
                tally.five_xx += 1
                tally.five_xx_examples[f"{req.label} ({r.status_code})"] += 1
            why = judge(req, r.status_code, r.headers, req.who == "master")
            if why is not None:
                tally.bypass += 1
                tally.bypass_examples[f"{req.label} [{req.path}]: {why}"] += 1
            done += 1
            if done % 1000 == 0:
                rate = done / (time.perf_counter() - t0)
                print(f"  {done}/{len(reqs)} ({rate:.0f} req/s)", flush=True)

        await asyncio.gather(*(one(r) for r in reqs))
    return tallies


def alive(proxy: Proxy) -> tuple[bool, str]:
    try:
        live = httpx.get(proxy.url + "/health/liveliness", timeout=30).status_code
        r = httpx.post(
            proxy.url + "/v1/chat/completions",
            json=chat(BENIGN),
            headers={"Authorization": f"Bearer {proxy.deployment.keys['alice']}"},
            timeout=60,
        )
        ok = live == 200 and r.status_code == 200 and "x-palm-decision" in r.headers
        return ok, f"liveliness {live}, chat {r.status_code}"
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}"


def refusal_time(proxy: Proxy, size: int) -> tuple[int, float]:
    text = "a " * (size // 2)
    body = j(chat(text))
    t0 = time.perf_counter()
    try:
        r = httpx.post(
            proxy.url + "/v1/chat/completions",
            content=body,
            headers={
                "Authorization": f"Bearer {proxy.deployment.keys['alice']}",
                "Content-Type": "application/json",
            },
            timeout=300,
        )
        status = r.status_code
    except httpx.HTTPError:
        status = -1
    return status, time.perf_counter() - t0


def overhead(dep: Deployment, hooked: Proxy, n: int) -> dict[str, float]:
    """p50 ms of sequential chat calls: hooked proxy (auto) vs a proxy without the hook."""
    cfg = yaml.safe_load((dep.root / "config.yaml").read_text())
    cfg["litellm_settings"].pop("callbacks")
    (dep.root / "config-nohook.yaml").write_text(yaml.safe_dump(cfg))
    bare = start_proxy(dep, config=dep.root / "config-nohook.yaml")
    times: dict[str, list[float]] = {"hook": [], "bare": []}
    headers = {"Authorization": f"Bearer {dep.keys['bob']}"}
    try:
        with httpx.Client(timeout=60, headers=headers) as c:
            calls = {
                "hook": lambda: c.post(
                    hooked.url + "/v1/chat/completions", json=chat(BENIGN, max_tokens=1)
                ),
                "bare": lambda: c.post(
                    bare.url + "/v1/chat/completions", json=chat(BENIGN, "balanced", max_tokens=1)
                ),
            }
            for i in range(n + 20):
                for name in ("hook", "bare") if i % 2 else ("bare", "hook"):
                    t0 = time.perf_counter()
                    r = calls[name]()
                    dt = time.perf_counter() - t0
                    assert r.status_code == 200, (name, r.status_code, r.text[:300])
                    if i >= 20:
                        times[name].append(dt * 1e3)
    finally:
        stop_proxy(bare)
    p50 = {k: statistics.median(v) for k, v in times.items()}
    return {
        "hook_p50_ms": p50["hook"],
        "bare_p50_ms": p50["bare"],
        "added_p50_ms": p50["hook"] - p50["bare"],
    }


def audit_after(dep: Deployment) -> tuple[str, int]:
    """verify_audit_chain on the proxy's store, and records of users only others named."""
    from palm_litellm.config import PalmRuntime
    from palm_middleware.audit import verify_audit_chain

    runtime = PalmRuntime.from_file(dep.root / "palm.yaml")
    store = runtime.palm.store
    report = verify_audit_chain(store)
    victims = {runtime.palm.user_key(v) for v in VICTIMS}
    leaked = sum(1 for rec in store.audit() if rec.user_key in victims)
    leaked += sum(1 for v in victims if store.get_profile(v) is not None)
    text = (
        f"ok ({report.checked} records checked, {report.erased} erased)"
        if report.ok
        else f"FAILED: {'; '.join(report.problems[:3])}"
    )
    return text, leaked


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")),
            cpu,
        )
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    py = platform.python_version()
    return f"{cpu}, {os.cpu_count()} cores, Python {py}, load {load:.1f} at start"


def git_rev() -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "?"


def report(
    args: argparse.Namespace,
    tallies: dict[str, Tally],
    extras: dict[str, Any],
) -> str:
    lines = [
        "# Fuzz and bypass run (issue 11)",
        "",
        f"- command: `python bench/bench_bypass.py --requests {args.requests} "
        f"--concurrency {args.concurrency} --seed {args.seed}`",
        f"- commit: {git_rev()}; machine: {machine()}",
        f"- wall time of the run: {extras['wall_s']:.0f} s",
        "",
        "| category | sent | 2xx | 4xx | 5xx | transport errors | served around the policy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    total = Tally()
    for name in CATEGORIES:
        t = tallies.get(name, Tally())
        two = sum(v for s, v in t.status.items() if 200 <= s < 300)
        four = sum(v for s, v in t.status.items() if 400 <= s < 500)
        lines.append(
            f"| {name} | {t.sent} | {two} | {four} | {t.five_xx} | {t.transport_errors} "
            f"| {t.bypass} |"
        )
        total.sent += t.sent
        total.five_xx += t.five_xx
        total.transport_errors += t.transport_errors
        total.bypass += t.bypass
        total.status.update(t.status)
    two = sum(v for s, v in total.status.items() if 200 <= s < 300)
    four = sum(v for s, v in total.status.items() if 400 <= s < 500)
    lines.append(
        f"| **total** | **{total.sent}** | {two} | {four} | **{total.five_xx}** "
        f"| {total.transport_errors} | **{total.bypass}** |"
    )
    lines += [
        "",
        f"- proxy alive after: {'yes' if extras['alive'][0] else 'NO'} ({extras['alive'][1]})",
        f"- audit chain: {extras['audit']}",
        f"- records for users only ever named by another key: {extras['leaked']} (target 0)",
        f"- 10 MB body: HTTP {extras['10mb'][0]} after {extras['10mb'][1] * 1e3:.0f} ms "
        "(target: 413 in < 50 ms)",
        f"- 1 MiB + 1 byte body: HTTP {extras['1mb'][0]} after {extras['1mb'][1] * 1e3:.0f} ms",
    ]
    if extras.get("overhead"):
        o = extras["overhead"]
        lines.append(
            f"- hook overhead, p50 of {args.overhead_requests} sequential chat calls each, "
            "interleaved: "
            f"hooked {o['hook_p50_ms']:.1f} ms, no hook {o['bare_p50_ms']:.1f} ms, "
            f"added {o['added_p50_ms']:+.1f} ms (target <= 2 ms)"
        )
    lines += ["", "## What got through (label [path]: why, count), per category", ""]
    for name in CATEGORIES:
        t = tallies.get(name, Tally())
        if not t.bypass and not t.five_xx and not t.transport_errors:
            continue
        lines.append(f"### {name}")
        for what, count in t.bypass_examples.most_common(25):
            lines.append(f"- {what}: {count}")
        for what, count in t.five_xx_examples.most_common(15):
            lines.append(f"- 5xx/transport: {what}: {count}")
        lines.append("")
    lines += ["## Statuses per request kind", ""]
    for name in CATEGORIES:
        t = tallies.get(name, Tally())
        lines.append(
            f"- **{name}**: "
            + "; ".join(
                f"{label} " + ", ".join(f"{s}x{n}" for s, n in sorted(c.items()))
                for label, c in sorted(t.by_label.items())
            )
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    ap.add_argument("--overhead-requests", type=int, default=200, help="0: skip the overhead run")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bypass.md")
    ap.add_argument("--keep", action="store_true", help="keep the deployment folder")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="palm-bypass-"))
    dep = build_deployment(root)
    proxy = start_proxy(dep)
    extras: dict[str, Any] = {}
    try:
        reqs = build_requests(args.requests, args.seed)
        print(
            f"{len(reqs)} requests against {proxy.url} (concurrency {args.concurrency})", flush=True
        )
        t0 = time.perf_counter()
        tallies = asyncio.run(run_all(proxy, reqs, args.concurrency, args.timeout))
        extras["wall_s"] = time.perf_counter() - t0
        extras["alive"] = alive(proxy)
        extras["1mb"] = refusal_time(proxy, (1 << 20) + 1)
        extras["10mb"] = refusal_time(proxy, 10_000_000)
        if args.overhead_requests:
            extras["overhead"] = overhead(dep, proxy, args.overhead_requests)
        extras["alive"] = alive(proxy) if extras["alive"][0] else extras["alive"]
    finally:
        stop_proxy(proxy)
    extras["audit"], extras["leaked"] = audit_after(dep)
    text = report(args, tallies, extras)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
