"""The operator's view on the proxy: the population report, for the master key only.

======  ================================  ==============================================
method  path                              what
======  ================================  ==============================================
GET     /palm/v1/admin/report             the page (HTML, self-contained, works offline)
GET     /palm/v1/admin/report.json        the same numbers as JSON
======  ================================  ==============================================

Only the proxy master key gets an answer: a personal key, an app key or a virtual key gets 403
in the OpenAI error shape, whatever its LiteLLM role. ``min_group_size`` may raise the
minimum group size for one request, never lower it below the default. The report itself is
computed by :mod:`palm_middleware.report` off the event loop.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at definition time.

import asyncio
import hashlib
import hmac
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from palm_middleware.report import DEFAULT_MIN_GROUP_SIZE

from .config import PalmRuntime, get_runtime

__all__ = ["ADMIN_PREFIX", "build_admin_router", "is_master_key", "mount"]

ADMIN_PREFIX = "/palm/v1/admin"


def _master_key() -> str | None:
    try:
        from litellm.proxy import proxy_server
    except ImportError:  # pragma: no cover - only inside the proxy
        return None
    value = getattr(proxy_server, "master_key", None)
    return value if isinstance(value, str) and value else None


def is_master_key(key: Any, master: str | None) -> bool:
    """Did the proxy authenticate this request with its master key?

    Both LiteLLM's own auth and ``palm_litellm.auth`` record the SHA-256 of the key and the
    ``proxy_admin`` role; both must match (a role alone can be given to other keys).
    """
    if not master:
        return False
    role = getattr(key, "user_role", None)
    if str(getattr(role, "value", role)) != "proxy_admin":
        return False
    api_key = getattr(key, "api_key", None)
    if not isinstance(api_key, str):
        return False
    digest = hashlib.sha256(master.encode()).hexdigest()
    return hmac.compare_digest(api_key.encode(), digest.encode())


def _forbidden() -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "message": "palm_identity: the population report is served to the proxy "
                "master key only",
                "type": "permission_error",
                "param": None,
                "code": "403",
            }
        },
        status_code=403,
    )


def build_admin_router(
    runtime: Callable[[], PalmRuntime] = get_runtime,
    auth: Callable[..., Any] | None = None,
    master_key: Callable[[], str | None] = _master_key,
) -> APIRouter:
    """The ``/palm/v1/admin`` routes; ``auth`` is the proxy's key check (a FastAPI dependency)."""
    if auth is None:
        from litellm.proxy.auth.user_api_key_auth import user_api_key_auth as auth
    router = APIRouter(prefix=ADMIN_PREFIX, tags=["palm-admin"])
    Key = Annotated[Any, Depends(auth)]
    MinGroup = Annotated[int, Query(ge=DEFAULT_MIN_GROUP_SIZE, le=1_000_000)]

    async def report(min_group_size: int) -> dict[str, Any]:
        from palm_middleware.report import compute_report

        rt = runtime()
        palm = rt.palm
        return await asyncio.to_thread(
            compute_report, palm.store, rt.portfolio, palm.policy, min_group_size=min_group_size
        )

    @router.get("/report", response_class=HTMLResponse)
    async def page(key: Key, min_group_size: MinGroup = DEFAULT_MIN_GROUP_SIZE) -> Response:
        if not is_master_key(key, master_key()):
            return _forbidden()
        from palm_middleware.report import render_html

        data = await report(min_group_size)
        text = await asyncio.to_thread(render_html, data)
        # The page inlines everything it shows: forbid every fetch, so it works offline as is.
        csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
        return HTMLResponse(text, headers={"content-security-policy": csp})

    @router.get("/report.json")
    async def data(key: Key, min_group_size: MinGroup = DEFAULT_MIN_GROUP_SIZE) -> Response:
        if not is_master_key(key, master_key()):
            return _forbidden()
        return JSONResponse(await report(min_group_size))

    return router


def mount(app: FastAPI, router: APIRouter | None = None) -> None:
    """Serve the admin routes on ``app`` ahead of every other route (idempotent).

    Call it after the ``/palm/v1`` routes are mounted: their mount looks for its prefix.
    """
    if any(getattr(r, "path", "").startswith(ADMIN_PREFIX) for r in app.router.routes):
        return
    router = router if router is not None else build_admin_router()
    app.router.routes[0:0] = router.routes
    app.openapi_schema = None
