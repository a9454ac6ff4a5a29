"""The one place that maps errors to HTTP statuses and bodies for the proxy.

Every error PALM answers has the OpenAI error object, the shape LiteLLM gives its own routes,
so one client-side handler reads them all::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "up", "code": "422"}}

``code`` is the HTTP status as a string, as LiteLLM sends it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from palm_middleware.exceptions import (
    ComparisonUnavailable,
    ConfigError,
    DecisionBlocked,
    GenerationError,
    IdentityError,
    InvalidEventError,
    InvalidParameterError,
    InvalidRequestError,
    InvalidWeightsError,
    ModelLoadError,
    PalmError,
    RequestTooLargeError,
    StoreUnavailable,
    TopicLabelError,
)

__all__ = [
    "AccessDenied",
    "NotReady",
    "error_body",
    "error_response",
    "error_type",
    "RETRY_AFTER_S",
    "http_exception",
    "message_for",
    "palm_error_response",
    "param_for",
    "proxy_exception",
    "status_for",
    "unsupported_exception",
    "validation_error_response",
]


class AccessDenied(IdentityError):
    """A key reaching for a model or route the deployment does not give it (HTTP 403)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class NotReady(PalmError):
    """No valid runtime (policy, portfolio, store) is in force: nothing is served (HTTP 503)."""


#: ``Retry-After`` (seconds) sent with a 503 for a retryable error (store busy or down).
RETRY_AFTER_S = 1

_STATUS: tuple[tuple[type[PalmError], int], ...] = (
    (DecisionBlocked, 403),
    (ComparisonUnavailable, 409),
    (IdentityError, 403),
    (RequestTooLargeError, 413),
    (TopicLabelError, 503),
    (InvalidEventError, 400),
    (InvalidWeightsError, 400),
    (InvalidParameterError, 400),
    (GenerationError, 400),
    (StoreUnavailable, 503),
    (ModelLoadError, 503),
    (NotReady, 503),
    (ConfigError, 500),
)

#: OpenAI's ``error.type`` per HTTP status (LiteLLM uses the same names on its routes).
_TYPES: Mapping[int, str] = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


def status_for(exc: PalmError) -> int:
    """HTTP status of a palm-middleware error (500 for anything unexpected)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_type(status: int) -> str:
    """OpenAI's ``error.type`` for an HTTP status."""
    if status in _TYPES:
        return _TYPES[status]
    return "invalid_request_error" if status < 500 else "internal_server_error"


def message_for(exc: PalmError) -> str:
    """What the client sees: a block names its rule; other errors their class and text."""
    if isinstance(exc, DecisionBlocked):
        return f"palm_policy_violation: rule {exc.rule_id!r}: {exc.user_message}"
    if isinstance(exc, IdentityError):
        return f"palm_identity: {exc}"
    if isinstance(exc, InvalidRequestError | NotReady):
        return str(exc) if str(exc).startswith("palm") else f"palm: {exc}"
    return f"palm: {type(exc).__name__}: {exc}"


def param_for(exc: PalmError) -> str | None:
    """The request field an error is about (OpenAI error ``param``), if it names one."""
    param = getattr(exc, "param", None)
    return param if isinstance(param, str) else None


def proxy_exception(exc: PalmError) -> Any:
    """A LiteLLM ``ProxyException``: the proxy answers it as the OpenAI error object as is."""
    from litellm.proxy._types import ProxyException

    status = status_for(exc)
    return ProxyException(
        message=message_for(exc),
        type=error_type(status),
        param=param_for(exc),
        code=status,
        headers=_retry_after(exc),
    )


def unsupported_exception(exc: Any) -> Any:
    """LiteLLM's ``UnsupportedParamsError`` as the proxy's 400 OpenAI error, naming the field."""
    from litellm.proxy._types import ProxyException

    param = getattr(exc, "param", None)
    return ProxyException(
        message=str(getattr(exc, "message", exc)),
        type="invalid_request_error",
        param=param if isinstance(param, str) else None,
        code=400,
    )


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """The OpenAI error object for ``status``."""
    return {
        "error": {
            "message": message,
            "type": error_type(status),
            "param": param,
            "code": str(status),
        }
    }


def error_response(
    status: int,
    message: str,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """A ``JSONResponse`` carrying :func:`error_body`."""
    from starlette.responses import JSONResponse

    return JSONResponse(error_body(status, message, param), status, headers=headers)


def palm_error_response(exc: PalmError) -> Any:
    """The response for a palm-middleware error (the field it names, if any, as ``param``)."""
    param = param_for(exc)
    if status_for(exc) >= 500:
        # Server-side trouble: name the class, keep internals (paths, SQL) out of the reply.
        return error_response(
            status_for(exc), f"palm: {type(exc).__name__}", headers=_retry_after(exc)
        )
    return error_response(status_for(exc), message_for(exc), param)


def _param(loc: Sequence[str | int], tags: Iterable[str]) -> str | None:
    """``("body", "thumb", "weights", "safety")`` -> ``"weights.safety"``.

    The leading source (body, query) goes; so does a discriminated union's tag.
    """
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    if parts and parts[0] in set(tags):
        parts = parts[1:]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


def validation_error_response(errors: Sequence[Mapping[str, Any]], tags: Iterable[str] = ()) -> Any:
    """422 for pydantic/FastAPI validation errors; ``param`` is the first offending field.

    ``tags`` are the discriminator values of the body's union, dropped from field paths.
    """
    tags = tuple(tags)
    lines: list[str] = []
    first: str | None = None
    for err in errors:
        kind = str(err.get("type", ""))
        param = _param(err.get("loc", ()), tags)
        if kind.startswith("union_tag"):
            param = "type"
        first = first if first is not None else param
        lines.append(f"{param or 'body'}: {err.get('msg', 'invalid')}")
    return error_response(422, "; ".join(lines) or "invalid request", first)


def _retry_after(exc: PalmError) -> dict[str, str] | None:
    """``Retry-After`` for a retryable store error (a full pool, an unreachable database)."""
    return {"Retry-After": str(RETRY_AFTER_S)} if isinstance(exc, StoreUnavailable) else None


def http_exception(exc: PalmError) -> Any:
    """A FastAPI ``HTTPException`` the proxy turns into an OpenAI-style error body."""
    from fastapi import HTTPException

    detail: dict[str, Any] = {"error": message_for(exc)}
    if isinstance(exc, DecisionBlocked):
        detail["rule_id"] = exc.rule_id
    # A full pool or an unreachable database: tell clients when to come back instead of
    # inviting an immediate retry storm.
    http = HTTPException(status_code=status_for(exc), detail=detail, headers=_retry_after(exc))
    if isinstance(exc, InvalidRequestError):  # the proxy copies these into the OpenAI error
        http.param = exc.param  # type: ignore[attr-defined]
        http.type = "invalid_request_error"  # type: ignore[attr-defined]
    return http
