"""Request body size limit, enforced in front of the whole proxy app before anything reads it.

LiteLLM reads and parses the body, authenticates and counts tokens before any callback runs, so
a size check in the pre-call hook comes too late (a 10 MB body took 30-60 s). This ASGI
middleware answers ``413`` in the OpenAI error shape from the ``Content-Length`` header alone,
or, for a chunked body, as soon as the bytes received pass the limit. The message and character
limits are checked by :func:`palm_middleware.inputs.request_messages` in the hook, before any
tokenization or classification.

:func:`install` wraps the app of the running proxy (the hook module calls it when LiteLLM loads
it): the middleware stack is already built by then, so the built stack is wrapped, which makes
this check the outermost one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from palm_middleware.inputs import RequestLimits

__all__ = ["RequestBodyLimit", "install", "too_large_body"]

_log = logging.getLogger("palm_litellm")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


#: Request paths whose JSON body must be an object (LiteLLM fails with 500 on ``null`` or ``[]``).
_OBJECT_SUFFIXES = ("/chat/completions", "/completions", "/responses", "/messages")


def _error(status: int, message: str) -> bytes:
    error = {
        "message": message,
        "type": "invalid_request_error",
        "param": None,
        "code": str(status),
    }
    return json.dumps({"error": error}, separators=(",", ":")).encode()


def too_large_body(limit: int) -> bytes:
    """The OpenAI error object of a refused body."""
    return _error(
        413,
        f"palm: the request body is over the limit of {limit} bytes "
        "(palm.yaml `limits.max_body_bytes`)",
    )


#: Body fields LiteLLM itself walks before any hook runs: a wrong shape there is its 500.
_ARRAY_OF_OBJECTS = ("tools", "functions")


def _array_fields_refusal(body: bytes) -> bytes | None:
    """400 for ``tools``/``functions`` that are not arrays of objects (read only if present)."""
    if not any(b'"' + f.encode() + b'"' in body for f in _ARRAY_OF_OBJECTS):
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None  # the app answers malformed JSON itself
    if not isinstance(doc, dict):
        return None
    for field in _ARRAY_OF_OBJECTS:
        value = doc.get(field)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            error = json.loads(_error(400, f"palm: `{field}` must be an array of objects"))
            error["error"]["param"] = field
            return json.dumps(error, separators=(",", ":")).encode()
    return None


def _wants_object(scope: Scope) -> bool:
    path = str(scope.get("path", "")).rstrip("/")
    return path.startswith("/palm/") or path.endswith(_OBJECT_SUFFIXES)


class RequestBodyLimit:
    """ASGI middleware refusing HTTP request bodies over ``max_body_bytes`` with 413.

    The body is read here (at most the limit, plus one chunk) and replayed to the app, so a
    refusal never depends on how the app handles errors raised while it reads. On the
    inference and ``/palm/`` routes a JSON body must also be an object (400 otherwise).

    Args:
        app: the wrapped ASGI app.
        max_body_bytes: the largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = RequestLimits(max_body_bytes=max_body_bytes).max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        json_body = True
        for name, value in scope.get("headers") or ():
            name = name.lower()
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                if declared is not None and declared > limit:
                    await _send(send, 413, too_large_body(limit))
                    return
            elif name == b"content-type":
                json_body = b"json" in value.lower()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay(b"", message, receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send(send, 413, too_large_body(limit))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if json_body and body.strip() and _wants_object(scope) and body.lstrip()[:1] != b"{":
            msg = "palm: the request body must be a JSON object"
            await _send(send, 400, _error(400, msg))
            return
        if json_body and _wants_object(scope):
            refusal = _array_fields_refusal(body)
            if refusal is not None:
                await _send(send, 400, refusal)
                return
        await self.app(scope, _replay(body, None, receive), send)


def _replay(body: bytes, pending: Message | None, receive: Receive) -> Receive:
    """A ``receive`` that yields the body already read, then defers to the server's."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if pending is not None:
                return pending
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _configured_limit() -> int:
    """``limits.max_body_bytes`` of the proxy's ``palm.yaml`` (the default if it cannot be read:
    the runtime reports that file's errors itself; the limit must hold meanwhile)."""
    from .config import CONFIG_ENV, PalmProxySettings

    path = os.environ.get(CONFIG_ENV)
    if path:
        try:
            return PalmProxySettings.from_file(path).limits.max_body_bytes
        except Exception as exc:
            _log.error("palm: %s: %s; using the default body limit", path, exc)
    return RequestLimits().max_body_bytes


def install(app: Any, max_body_bytes: int | None = None) -> bool:
    """Put :class:`RequestBodyLimit` in front of a Starlette/FastAPI ``app`` (once).

    Before the app has started this is ``app.add_middleware``; once started (the proxy loads
    its callbacks during startup) the built middleware stack is wrapped. Returns False if the
    app already has it.
    """
    if getattr(app.state, "palm_body_limit", False):
        return False
    limit = max_body_bytes if max_body_bytes is not None else _configured_limit()
    if app.middleware_stack is None:
        app.add_middleware(RequestBodyLimit, max_body_bytes=limit)
    else:
        app.middleware_stack = RequestBodyLimit(app.middleware_stack, limit)
    app.state.palm_body_limit = True
    return True
