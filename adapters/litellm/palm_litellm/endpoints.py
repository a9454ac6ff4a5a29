"""Feedback and profile endpoints, served on the proxy's own port under ``/palm/v1``.

Every route authenticates with the proxy's own dependency (``user_api_key_auth``: the master
key, ``custom_auth`` keys, or virtual keys), then :func:`~palm_middleware.identity.resolve_user`
decides whose profile it touches. A personal key reaches only its own profile; an app key names
its end user in ``user`` (query or body) and reaches ``"<app>/<user>"``. No field lets one caller
reach another caller's profile.

=======  ==========================  ===============================================
method   path                        what
=======  ==========================  ===============================================
POST     /palm/v1/feedback           thumb, pairwise, regenerate, explicit weights
GET      /palm/v1/profile            view (weights, intervals, what the policy applies)
PUT      /palm/v1/profile            edit: set weights explicitly
POST     /palm/v1/profile/reset      forget learned preferences (audit kept)
GET      /palm/v1/profile/export     everything stored about the caller
DELETE   /palm/v1/profile            delete everything (only a deletion record remains)
POST     /palm/v1/opt-out            personalization off (``{"opted_out": false}``: on)
GET      /palm/v1/compare            two members worth an A/B question to this user
=======  ==========================  ===============================================

``/compare?served=<member>`` pairs the member the user was shown with a second one within the
exploration cost bound (the default: the member of the user's latest decision on record). An
unknown ``served``, or one the policy would not serve this user, is a 400 naming ``served``; when
no second member may be shown (no exploration here, a pinning rule, nothing within the bound)
the answer is a 409 saying why: ask no A/B question this time.

The edges are strict, because a field the server ignores is a field a client believes in:

* bodies are JSON objects validated in pydantic strict mode (no ``"yes"`` for a boolean, no
  ``"0.5"`` or ``true`` for a number, no NaN), unknown fields and duplicate keys refused;
* a route refuses query parameters it does not declare (422), and a body if it takes none (400:
  ``DELETE`` with ``{"user": ...}`` is an error, not a silent act on the caller's own profile);
* ``user``, wherever a route takes it, goes through :func:`~palm_middleware.identity.resolve_user`;
* every error, including 404/405 under the prefix, is the OpenAI error object
  (:mod:`palm_litellm.errors`); unexpected failures are a 500 of that shape with no internals.

These rules live in :class:`PalmRoute` and the prefix's catch-all route, so they hold for these
routes only: LiteLLM's own routes and exception handlers are untouched.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at definition time
# (the dependency alias `Key` is local to build_router).

import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, Literal, TypeVar, cast

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match

from palm_middleware import (
    ExplicitWeights,
    InvalidRequestError,
    Pairwise,
    PalmError,
    Regenerate,
    Thumb,
)
from palm_middleware.identity import MAX_USER_ID_LENGTH, resolve_user
from palm_middleware.preferences.events import FeedbackEvent

from .auth import principal_of
from .config import PalmRuntime, get_runtime
from .errors import error_response, palm_error_response, validation_error_response

__all__ = ["MAX_BODY_BYTES", "PREFIX", "PalmRoute", "build_router", "mount"]

PREFIX = "/palm/v1"
#: Longest member name a field takes (as ``member``, ``winner`` and ``loser`` in feedback).
MAX_MEMBER_LENGTH = 128
#: Largest request body the routes read (the biggest valid one, 64 weights, is ~3 KiB).
MAX_BODY_BYTES = 64 * 1024
T = TypeVar("T")
_log = logging.getLogger(__name__)
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
#: Discriminator values of the feedback body (dropped from the field path of an error).
_TAGS = ("thumb", "regenerate", "pairwise", "explicit")


class _Refused(Exception):
    """A request refused before its handler runs (status, message, offending field)."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


# -- request bodies ---------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    user: str | None = Field(default=None, min_length=1, max_length=MAX_USER_ID_LENGTH)
    """End user, for app keys only (a personal key may omit it or repeat its own id)."""
    event_id: str | None = Field(default=None, min_length=1, max_length=128)
    """Client id of the event: sending it twice records it once."""


class ThumbIn(_In):
    type: Literal["thumb"]
    up: bool
    decision_id: str | None = Field(default=None, max_length=64)
    member: str | None = Field(default=None, max_length=MAX_MEMBER_LENGTH)


class RegenerateIn(_In):
    type: Literal["regenerate"]
    decision_id: str | None = Field(default=None, max_length=64)
    member: str | None = Field(default=None, max_length=MAX_MEMBER_LENGTH)


class PairwiseIn(_In):
    type: Literal["pairwise"]
    winner: str = Field(max_length=MAX_MEMBER_LENGTH)
    loser: str = Field(max_length=MAX_MEMBER_LENGTH)


class ExplicitIn(_In):
    type: Literal["explicit"]
    weights: dict[str, float] = Field(max_length=64)
    confidence: float = 1.0


FeedbackIn = Annotated[
    ThumbIn | RegenerateIn | PairwiseIn | ExplicitIn, Field(discriminator="type")
]


class WeightsIn(_In):
    weights: dict[str, float] = Field(max_length=64)
    confidence: float = 1.0


class OptOutIn(_In):
    opted_out: bool = True


# -- responses ---------------------------------------------------------------------------------


class FeedbackOut(BaseModel):
    recorded: bool
    """False when this ``event_id`` was already recorded."""
    event_id: str


class ResetOut(BaseModel):
    reset: bool


class DeletedOut(BaseModel):
    deleted: bool


class OptOutOut(BaseModel):
    opted_out: bool


class CompareOut(BaseModel):
    candidates: list[str] = Field(min_length=2, max_length=2)


class ErrorObject(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorOut(BaseModel):
    """The OpenAI error object: every error of these routes has this shape."""

    error: ErrorObject


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": what}
    for status, what in (
        (400, "Not one JSON object, a body where none is taken, or invalid feedback/weights"),
        (401, "No valid API key"),
        (403, "The key may not act for this user"),
        (413, f"Body over {MAX_BODY_BYTES} bytes"),
        (422, "Wrong types, unknown fields or unknown query parameters"),
        (503, "Store unavailable"),
    )
}


def _event(body: ThumbIn | RegenerateIn | PairwiseIn | ExplicitIn) -> FeedbackEvent:
    ids: dict[str, Any] = {"event_id": body.event_id} if body.event_id else {}
    if isinstance(body, ThumbIn):
        return Thumb(up=body.up, decision_id=body.decision_id, member=body.member, **ids)
    if isinstance(body, RegenerateIn):
        return Regenerate(decision_id=body.decision_id, member=body.member, **ids)
    if isinstance(body, PairwiseIn):
        return Pairwise(winner=body.winner, loser=body.loser, **ids)
    return ExplicitWeights(weights=body.weights, confidence=body.confidence, **ids)


# -- the strict route --------------------------------------------------------------------------


def _check_query(request: Request, allowed: frozenset[str]) -> None:
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name not in allowed:
            takes = ", ".join(sorted(allowed)) or "none"
            raise _Refused(
                422, f"unknown query parameter {name!r} (this route takes: {takes})", name
            )
        if name in seen:
            raise _Refused(422, f"query parameter {name!r} given more than once", name)
        seen.add(name)


async def _read_body(request: Request) -> bytes:
    """The body, refused with 413 past :data:`MAX_BODY_BYTES` before it is all read."""
    length = request.headers.get("content-length")
    too_large = f"request body over {MAX_BODY_BYTES} bytes"
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise _Refused(413, too_large, "body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _Refused(413, too_large, "body")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # Starlette's cache: the handler and the key check read it from here
    return body


_JSON_NAMES = {
    type(None): "null",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
}


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def _check_body(request: Request, takes_body: bool) -> None:
    """A body only where the route takes one, and then a JSON object.

    Checked before the key check runs: LiteLLM's reads the body as a dict and fails on
    ``null`` or ``[]``.
    """
    body = await _read_body(request)
    if not takes_body:
        if body.strip():
            raise _Refused(400, f"{request.method} {request.url.path} takes no body", "body")
        return
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise _Refused(400, "send the body as JSON (Content-Type: application/json)", "body")
    try:
        value = json.loads(body, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise _Refused(400, f"the body is not valid JSON: {exc}", "body") from exc
    if not isinstance(value, dict):
        got = _JSON_NAMES.get(type(value), type(value).__name__)
        raise _Refused(400, f"the body must be a JSON object; got {got}", "body")


def _query_names(dependant: Dependant) -> set[str]:
    """Query parameters a route declares, its dependencies' included."""
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


class PalmRoute(APIRoute):
    """An ``APIRoute`` with the strict edges of ``/palm/v1`` and OpenAI-shaped errors."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        from litellm.proxy._types import ProxyException

        handler = super().get_route_handler()
        allowed = frozenset(_query_names(self.dependant))
        takes_body = self.body_field is not None

        async def app(request: Request) -> Response:
            try:
                _check_query(request, allowed)
                await _check_body(request, takes_body)
                return await handler(request)
            except _Refused as exc:
                response: Response = error_response(exc.status, exc.message, exc.param)
            except RequestValidationError as exc:
                response = validation_error_response(exc.errors(), _TAGS)
            except PalmError as exc:
                response = palm_error_response(exc)
            except ProxyException:
                raise  # the key check's refusal: LiteLLM renders it in the same shape
            except HTTPException as exc:
                response = error_response(exc.status_code, str(exc.detail), headers=exc.headers)
            except Exception:
                _log.exception("palm: %s %s failed", request.method, request.url.path)
                response = error_response(500, "palm: internal error (logged by the proxy)")
            return response

        return app


def build_router(
    runtime: Callable[[], PalmRuntime] = get_runtime, auth: Callable[..., Any] | None = None
) -> APIRouter:
    """The ``/palm/v1`` routes; ``auth`` is the proxy's key check (a FastAPI dependency)."""
    if auth is None:
        from litellm.proxy.auth.user_api_key_auth import user_api_key_auth as auth
    router = APIRouter(prefix=PREFIX, tags=["palm"], route_class=PalmRoute, responses=_ERRORS)
    Key = Annotated[Any, Depends(auth)]
    UserQuery = Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_USER_ID_LENGTH,
            description="End user, for app keys only (a personal key: absent or its own id).",
        ),
    ]

    async def call(
        key: Any, asserted: str | None, fn: Callable[[PalmRuntime, str], Awaitable[T]]
    ) -> T:
        rt = runtime()
        principal = principal_of(key, master_key_app=rt.settings.auth.master_key_app, keys=rt.keys)
        return await fn(rt, resolve_user(principal, asserted))

    @router.post("/feedback")
    async def feedback(key: Key, body: Annotated[FeedbackIn, Body()]) -> FeedbackOut:
        event = _event(body)

        async def go(rt: PalmRuntime, user: str) -> FeedbackOut:
            added = await rt.palm.arecord_feedback(user, event)
            return FeedbackOut(recorded=added, event_id=event.event_id)

        return await call(key, body.user, go)

    @router.get("/profile")
    async def profile(key: Key, user: UserQuery = None) -> dict[str, Any]:
        async def go(rt: PalmRuntime, u: str) -> dict[str, Any]:
            return (await rt.palm.aprofile(u)).to_dict()

        return await call(key, user, go)

    @router.put("/profile")
    async def edit(key: Key, body: WeightsIn) -> dict[str, Any]:
        async def go(rt: PalmRuntime, user: str) -> dict[str, Any]:
            ids: dict[str, Any] = {"event_id": body.event_id} if body.event_id else {}
            event = ExplicitWeights(weights=body.weights, confidence=body.confidence, **ids)
            await rt.palm.arecord_feedback(user, event)
            return (await rt.palm.aprofile(user)).to_dict()

        return await call(key, body.user, go)

    @router.post("/profile/reset")
    async def reset(key: Key, user: UserQuery = None) -> ResetOut:
        async def go(rt: PalmRuntime, u: str) -> ResetOut:
            await rt.palm.areset(u)
            return ResetOut(reset=True)

        return await call(key, user, go)

    @router.get("/profile/export")
    async def export(key: Key, user: UserQuery = None) -> dict[str, Any]:
        return await call(key, user, lambda rt, u: rt.palm.aexport(u))

    @router.delete("/profile")
    async def delete(key: Key, user: UserQuery = None) -> DeletedOut:
        async def go(rt: PalmRuntime, u: str) -> DeletedOut:
            await rt.palm.aforget(u)
            return DeletedOut(deleted=True)

        return await call(key, user, go)

    @router.post("/opt-out")
    async def opt_out(key: Key, body: OptOutIn) -> OptOutOut:
        async def go(rt: PalmRuntime, u: str) -> OptOutOut:
            await rt.palm.aset_opt_out(u, body.opted_out)
            return OptOutOut(opted_out=body.opted_out)

        return await call(key, body.user, go)

    @router.get(
        "/compare",
        responses={
            409: {"model": ErrorOut, "description": "No A/B question may be asked now (why)"}
        },
    )
    async def compare(
        key: Key,
        user: UserQuery = None,
        served: Annotated[
            str | None,
            Query(
                description="The member whose reply the user was shown (its `x-palm-member`); "
                "default: the member of the user's latest decision on record.",
            ),
        ] = None,
    ) -> CompareOut:
        if served is not None and not 0 < len(served) <= MAX_MEMBER_LENGTH:
            raise InvalidRequestError(
                f"served must name a member (1-{MAX_MEMBER_LENGTH} characters)", param="served"
            )

        async def go(rt: PalmRuntime, u: str) -> CompareOut:
            a, b = await rt.palm.acompare_candidates(u, served)
            return CompareOut(candidates=[a, b])

        return await call(key, user, go)

    async def unknown(request: Request) -> Response:
        """404, or 405 naming the allowed methods, in the OpenAI error shape."""
        allowed = sorted(
            {
                method
                for route in router.routes
                if isinstance(route, PalmRoute) and route.matches(request.scope)[0] is Match.PARTIAL
                for method in route.methods or ()
            }
        )
        if allowed:
            message = f"{request.method} not allowed on {request.url.path}"
            allow = {"Allow": ", ".join(allowed)}
            return cast(Response, error_response(405, message, headers=allow))
        return cast(Response, error_response(404, f"no route {request.url.path}"))

    # Last, so that every declared route matches first; a plain APIRoute (no query checks).
    for path in ("", "/{path:path}"):
        router.add_api_route(
            path, unknown, methods=_METHODS, include_in_schema=False, route_class_override=APIRoute
        )
    return router


def mount(app: FastAPI, router: APIRouter | None = None) -> None:
    """Serve the routes on ``app`` ahead of its catch-all routes (idempotent)."""
    if any(isinstance(r, PalmRoute) for r in app.router.routes):
        return
    router = router if router is not None else build_router()
    # The routes themselves (they carry the prefix), not an included-router wrapper: their
    # PalmRoute class and order (declared routes, then the prefix's catch-all) are kept.
    app.router.routes[0:0] = router.routes
    app.openapi_schema = None  # regenerate /openapi.json with these routes
