"""Readiness of a PALM proxy: not ready while no valid runtime (policy, portfolio) is in force.

LiteLLM's ``/health/readiness`` knows nothing of PALM; :func:`gate_readiness` wraps that route
so it answers 503 (with the reason) while the runtime could not be built, and LiteLLM's own
answer otherwise. Liveness is untouched: the process is alive, it just serves nothing.
"""

from __future__ import annotations

from typing import Any

from .config import get_runtime

__all__ = ["gate_readiness", "not_ready_reason"]

_PATH = "/health/readiness"


def not_ready_reason() -> str | None:
    """Why PALM cannot serve (the runtime's build error), or None when it can."""
    from palm_middleware.exceptions import PalmError

    try:
        get_runtime()
    except PalmError as exc:
        return str(exc)
    return None


def gate_readiness(app: Any) -> None:
    """Serve ``/health/readiness`` ahead of LiteLLM's own route (idempotent)."""
    from fastapi import Response
    from fastapi.responses import JSONResponse
    from starlette.routing import Route

    if any(getattr(r, "_palm_readiness", False) for r in app.router.routes):
        return

    async def readiness(request: Any) -> Any:
        reason = not_ready_reason()
        if reason is not None:
            return JSONResponse({"status": "unhealthy", "palm": reason}, status_code=503)
        from litellm.proxy.health_endpoints._health_endpoints import health_readiness

        response = Response()
        content = await health_readiness(response)
        status = response.status_code or 200
        return JSONResponse(content, status_code=status)

    route = Route(_PATH, readiness, methods=["GET"])
    route._palm_readiness = True  # type: ignore[attr-defined]
    app.router.routes.insert(0, route)
