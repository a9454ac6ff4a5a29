"""The one place that maps palm-middleware errors to HTTP statuses for the proxy."""

from __future__ import annotations

from typing import Any

from palm_middleware.exceptions import (
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
    "http_exception",
    "message_for",
    "param_for",
    "proxy_exception",
    "status_for",
]


class AccessDenied(IdentityError):
    """A key reaching for a model or route the deployment does not give it (HTTP 403)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class NotReady(PalmError):
    """No valid runtime (policy, portfolio, store) is in force: nothing is served (HTTP 503)."""


_STATUS: tuple[tuple[type[PalmError], int], ...] = (
    (DecisionBlocked, 403),
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

_TYPES = {
    400: "invalid_request_error",
    403: "permission_error",
    413: "invalid_request_error",
    503: "service_unavailable",
}


def status_for(exc: PalmError) -> int:
    """HTTP status of a palm-middleware error (500 for anything unexpected)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


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
        type=_TYPES.get(status, "internal_server_error"),
        param=param_for(exc),
        code=status,
    )


def http_exception(exc: PalmError) -> Any:
    """A FastAPI ``HTTPException`` the proxy turns into an OpenAI-style error body."""
    from fastapi import HTTPException

    detail: dict[str, Any] = {"error": message_for(exc)}
    if isinstance(exc, DecisionBlocked):
        detail["rule_id"] = exc.rule_id
    http = HTTPException(status_code=status_for(exc), detail=detail)
    if isinstance(exc, InvalidRequestError):  # the proxy copies these into the OpenAI error
        http.param = exc.param  # type: ignore[attr-defined]
        http.type = "invalid_request_error"  # type: ignore[attr-defined]
    return http
