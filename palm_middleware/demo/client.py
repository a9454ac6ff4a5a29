"""A minimal client of a PALM LiteLLM proxy: chat completions, feedback, profile (stdlib HTTP)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import PalmError

__all__ = ["ChatReply", "ProxyClient", "ProxyError"]


class ProxyError(PalmError):
    """The proxy answered with an error other than a policy block."""


@dataclass(frozen=True)
class ChatReply:
    """One chat completion, or the policy's refusal of it."""

    text: str
    member: str | None
    """``x-palm-member``: the portfolio member that served (None when blocked)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    blocked_by: str | None = None
    """Rule id when the bounds policy blocked the request (HTTP 403)."""
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def decision_id(self) -> str | None:
        """``x-palm-decision``: what feedback on this reply refers to."""
        return self.headers.get("x-palm-decision")


class ProxyClient:
    """Talks to ``url`` with one API key (which is what identifies the user).

    Args:
        url: Proxy base URL, e.g. ``http://127.0.0.1:4000``.
        key: The caller's API key.
        timeout: Seconds per request (local CPU generation can take a while).
    """

    def __init__(self, url: str, key: str, *, timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        self._key = key
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = {"error": raw.decode(errors="replace")}
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, payload

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        model: str = "auto",
        compare: str | None = None,
        max_tokens: int | None = None,
    ) -> ChatReply:
        """A chat completion; ``compare`` asks for that member (one side of an A/B question)."""
        body: dict[str, Any] = {"model": model, "messages": messages}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if compare is not None:
            body["metadata"] = {"palm_compare": compare}
        t0 = time.perf_counter()
        status, headers, payload = self._call("POST", "/v1/chat/completions", body)
        took = time.perf_counter() - t0
        if status == 403 and "palm_policy_violation" in json.dumps(payload):
            rule, message = _blocked(payload)
            return ChatReply(
                text=message, member=None, headers=headers, blocked_by=rule, seconds=took
            )
        if status != 200:
            raise ProxyError(f"POST /v1/chat/completions: HTTP {status}: {payload}")
        text = payload["choices"][0]["message"]["content"] or ""
        usage = payload.get("usage") or {}
        return ChatReply(
            text=text,
            member=headers.get("x-palm-member"),
            headers=headers,
            completion_tokens=int(usage.get("completion_tokens") or 0),
            seconds=took,
        )

    def compare(self, served: str | None = None) -> tuple[str, str] | None:
        """The member the user was shown (``served``) and the one worth comparing it with;
        None when the proxy says no A/B question may be asked now (HTTP 409)."""
        path = "/palm/v1/compare"
        if served is not None:
            path += "?" + urllib.parse.urlencode({"served": served})
        status, _, payload = self._call("GET", path)
        if status == 409:
            return None
        if status != 200:
            raise ProxyError(f"GET {path}: HTTP {status}: {payload}")
        a, b = payload["candidates"]
        return str(a), str(b)

    def feedback(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Record a feedback event (``{"type": "pairwise", "winner": ..., "loser": ...}``)."""
        out: dict[str, Any] = self._json("POST", "/palm/v1/feedback", dict(event))
        return out

    def profile(self) -> dict[str, Any]:
        """What the deployment holds about this user."""
        out: dict[str, Any] = self._json("GET", "/palm/v1/profile")
        return out

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        status, _, payload = self._call(method, path, body)
        if status != 200:
            raise ProxyError(f"{method} {path}: HTTP {status}: {payload}")
        return payload


def _blocked(payload: Any) -> tuple[str | None, str]:
    """Rule id and user-facing message from a 403 block body (LiteLLM nests it variously)."""
    text = json.dumps(payload)
    rule = None
    marker = "rule '"
    if marker in text:
        rule = text.split(marker, 1)[1].split("'", 1)[0]
    err = payload.get("error") if isinstance(payload, dict) else None
    message = err.get("message") if isinstance(err, dict) else err
    message = str(message or text)
    if ": " in message and "palm_policy_violation" in message:
        message = message.split("palm_policy_violation: ", 1)[1]
        message = message.split(": ", 1)[1] if message.startswith("rule ") else message
    return rule, message.strip().strip("'\"}")
