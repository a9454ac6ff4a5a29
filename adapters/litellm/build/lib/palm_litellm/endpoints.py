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
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at definition time
# (the dependency alias `Key` is local to build_router).

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Body, Depends, FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field

from palm_middleware import (
    ExplicitWeights,
    Pairwise,
    PalmError,
    Regenerate,
    Thumb,
)
from palm_middleware.identity import resolve_user
from palm_middleware.preferences.events import FeedbackEvent

from .auth import principal_of
from .config import PalmRuntime, get_runtime
from .errors import http_exception

__all__ = ["PREFIX", "build_router", "mount"]

PREFIX = "/palm/v1"
T = TypeVar("T")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str | None = Field(default=None, max_length=256)
    """End user, for app keys only (a personal key may omit it or repeat its own id)."""
    event_id: str | None = Field(default=None, min_length=1, max_length=128)
    """Client id of the event: sending it twice records it once."""


class ThumbIn(_In):
    type: Literal["thumb"]
    up: bool
    decision_id: str | None = Field(default=None, max_length=64)
    member: str | None = Field(default=None, max_length=128)


class RegenerateIn(_In):
    type: Literal["regenerate"]
    decision_id: str | None = Field(default=None, max_length=64)
    member: str | None = Field(default=None, max_length=128)


class PairwiseIn(_In):
    type: Literal["pairwise"]
    winner: str = Field(max_length=128)
    loser: str = Field(max_length=128)


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


def _event(body: ThumbIn | RegenerateIn | PairwiseIn | ExplicitIn) -> FeedbackEvent:
    ids: dict[str, Any] = {"event_id": body.event_id} if body.event_id else {}
    if isinstance(body, ThumbIn):
        return Thumb(up=body.up, decision_id=body.decision_id, member=body.member, **ids)
    if isinstance(body, RegenerateIn):
        return Regenerate(decision_id=body.decision_id, member=body.member, **ids)
    if isinstance(body, PairwiseIn):
        return Pairwise(winner=body.winner, loser=body.loser, **ids)
    return ExplicitWeights(weights=body.weights, confidence=body.confidence, **ids)


def build_router(
    runtime: Callable[[], PalmRuntime] = get_runtime, auth: Callable[..., Any] | None = None
) -> APIRouter:
    """The ``/palm/v1`` routes; ``auth`` is the proxy's key check (a FastAPI dependency)."""
    if auth is None:
        from litellm.proxy.auth.user_api_key_auth import user_api_key_auth as auth
    router = APIRouter(prefix=PREFIX, tags=["palm"])
    Key = Annotated[Any, Depends(auth)]

    async def call(
        key: Any, asserted: str | None, fn: Callable[[PalmRuntime, str], Awaitable[T]]
    ) -> T:
        rt = runtime()
        try:
            principal = principal_of(
                key, master_key_app=rt.settings.auth.master_key_app, keys=rt.keys
            )
            return await fn(rt, resolve_user(principal, asserted))
        except PalmError as exc:
            raise http_exception(exc) from exc

    def run(fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        import asyncio

        return asyncio.to_thread(fn, *args)

    @router.post("/feedback")
    async def feedback(key: Key, body: Annotated[FeedbackIn, Body()]) -> dict[str, Any]:
        event = _event(body)

        async def go(rt: PalmRuntime, user: str) -> dict[str, Any]:
            added = await rt.palm.arecord_feedback(user, event)
            return {"recorded": added, "event_id": event.event_id}

        return await call(key, body.user, go)

    @router.get("/profile")
    async def profile(
        key: Key, user: Annotated[str | None, Query(max_length=256)] = None
    ) -> dict[str, Any]:
        return await call(key, user, lambda rt, u: run(lambda: rt.palm.profile(u).to_dict()))

    @router.put("/profile")
    async def edit(key: Key, body: WeightsIn) -> dict[str, Any]:
        async def go(rt: PalmRuntime, user: str) -> dict[str, Any]:
            ids: dict[str, Any] = {"event_id": body.event_id} if body.event_id else {}
            event = ExplicitWeights(weights=body.weights, confidence=body.confidence, **ids)
            await rt.palm.arecord_feedback(user, event)
            return await run(lambda: rt.palm.profile(user).to_dict())

        return await call(key, body.user, go)

    @router.post("/profile/reset")
    async def reset(
        key: Key, user: Annotated[str | None, Query(max_length=256)] = None
    ) -> dict[str, Any]:
        async def go(rt: PalmRuntime, u: str) -> dict[str, Any]:
            await run(rt.palm.reset, u)
            return {"reset": True}

        return await call(key, user, go)

    @router.get("/profile/export")
    async def export(
        key: Key, user: Annotated[str | None, Query(max_length=256)] = None
    ) -> dict[str, Any]:
        return await call(key, user, lambda rt, u: run(rt.palm.export, u))

    @router.delete("/profile")
    async def delete(
        key: Key, user: Annotated[str | None, Query(max_length=256)] = None
    ) -> dict[str, Any]:
        async def go(rt: PalmRuntime, u: str) -> dict[str, Any]:
            await run(rt.palm.forget, u)
            return {"deleted": True}

        return await call(key, user, go)

    @router.post("/opt-out")
    async def opt_out(key: Key, body: OptOutIn) -> dict[str, Any]:
        async def go(rt: PalmRuntime, u: str) -> dict[str, Any]:
            await run(rt.palm.set_opt_out, u, body.opted_out)
            return {"opted_out": body.opted_out}

        return await call(key, body.user, go)

    @router.get("/compare")
    async def compare(
        key: Key, user: Annotated[str | None, Query(max_length=256)] = None
    ) -> dict[str, Any]:
        async def go(rt: PalmRuntime, u: str) -> dict[str, Any]:
            a, b = await run(rt.palm.compare_candidates, u)
            return {"candidates": [a, b]}

        return await call(key, user, go)

    return router


def mount(app: FastAPI, router: APIRouter | None = None) -> None:
    """Serve the routes on ``app`` ahead of its catch-all routes (idempotent)."""
    if any(getattr(r, "path", "").startswith(PREFIX) for r in app.router.routes):
        return
    router = router if router is not None else build_router()
    before = len(app.router.routes)
    app.include_router(router)
    added = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[0:0] = added
