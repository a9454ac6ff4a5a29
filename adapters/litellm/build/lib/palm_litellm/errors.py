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
    InvalidWeightsError,
    ModelLoadError,
    PalmError,
    StoreUnavailable,
)

__all__ = ["http_exception", "status_for"]

_STATUS: tuple[tuple[type[PalmError], int], ...] = (
    (DecisionBlocked, 403),
    (IdentityError, 403),
    (InvalidEventError, 400),
    (InvalidWeightsError, 400),
    (InvalidParameterError, 400),
    (GenerationError, 400),
    (StoreUnavailable, 503),
    (ModelLoadError, 503),
    (ConfigError, 500),
)


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
    return f"palm: {type(exc).__name__}: {exc}"


def http_exception(exc: PalmError) -> Any:
    """A FastAPI ``HTTPException`` the proxy turns into an OpenAI-style error body."""
    from fastapi import HTTPException

    detail: dict[str, Any] = {"error": message_for(exc)}
    if isinstance(exc, DecisionBlocked):
        detail["rule_id"] = exc.rule_id
    return HTTPException(status_code=status_for(exc), detail=detail)
