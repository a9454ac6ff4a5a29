"""Who is calling: the proxy's authentication, as a :class:`~palm_middleware.identity.Principal`.

Two ways to authenticate, both decided by the proxy before any PALM code runs:

* ``general_settings.custom_auth: palm_litellm.auth.user_api_key_auth`` checks the bearer key
  against the SHA-256 digests in ``palm.yaml`` (no database needed). A personal key acts for its
  user; an app key acts for the end users it names in ``user``. The master key acts as the app
  ``auth.master_key_app``.
* Without it, LiteLLM's own auth runs: the master key (role ``proxy_admin``) acts as that app,
  and a virtual key bound to a ``user_id`` (needs the proxy database) acts for that user.

A request body can never choose whose profile it reaches beyond what :func:`resolve_user`
allows its principal.

What a non-admin key may reach is enforced here, because LiteLLM skips its own route and
model checks under ``custom_auth``:

* routes: only :data:`USER_ROUTES` (inference, model listing, ``/palm/v1``, health); LiteLLM's
  management and debug routes (``/model/info``, ``/settings``, ``/routes``, ...) need the
  master key;
* models: the key's ``models`` in ``palm.yaml`` (default: ``route_models``), checked on the
  request body's ``model`` before any PALM or LiteLLM work.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from palm_middleware.exceptions import IdentityError, PalmError
from palm_middleware.identity import Principal

from .config import KeyEntry, get_runtime

__all__ = [
    "INFERENCE_ROUTES",
    "USER_ROUTES",
    "allowed_models",
    "is_admin",
    "key_digest",
    "principal_of",
    "user_api_key_auth",
]

_LITELLM_DEFAULT_USER = "default_user_id"

#: Routes that make a member generate text; the body's ``model`` must be one the key may call.
INFERENCE_ROUTES = frozenset(
    {
        "/chat/completions",
        "/v1/chat/completions",
        "/completions",
        "/v1/completions",
        "/responses",
        "/v1/responses",
        "/v1/messages",
    }
)
#: Every route a non-admin key may reach (besides ``/palm/v1/...``).
USER_ROUTES = INFERENCE_ROUTES | {
    "/models",
    "/v1/models",
    "/health/liveliness",
    "/health/readiness",
}
_USER_PREFIXES = ("/palm/v1/", "/v1/models/", "/models/")


def key_digest(key: str) -> str:
    """SHA-256 hex digest of an API key, as ``palm.yaml`` stores it."""
    return hashlib.sha256(key.encode()).hexdigest()


async def user_api_key_auth(request: Any, api_key: str) -> Any:
    """LiteLLM ``custom_auth`` hook: authenticate the bearer key against ``palm.yaml``."""
    from litellm.proxy._types import LitellmUserRoles, ProxyException, UserAPIKeyAuth

    key = (api_key or "").strip()
    if key.lower().startswith("bearer "):
        key = key[7:].strip()
    try:
        runtime = get_runtime()
    except PalmError as exc:  # no valid policy in force: serve nothing, say why
        raise ProxyException(
            message=f"palm: not ready: {exc}",
            type="service_unavailable",
            param=None,
            code=503,
        ) from exc
    digest = key_digest(key)
    principal: Principal | None = None
    role = LitellmUserRoles.INTERNAL_USER
    master = _master_key()
    app = runtime.settings.auth.master_key_app
    if key and master and app and hmac.compare_digest(key.encode(), master.encode()):
        principal, role = Principal(app, acts_for_end_users=True), LitellmUserRoles.PROXY_ADMIN
    elif key and digest in runtime.keys:
        principal = runtime.keys[digest].principal
    if principal is None:
        raise ProxyException(
            message="Authentication Error: invalid API key",
            type="auth_error",
            param="api_key",
            code=401,
        )
    if role != LitellmUserRoles.PROXY_ADMIN:
        await _check_user_request(request, runtime.key_models(runtime.keys[digest]))
    return UserAPIKeyAuth(api_key=digest, user_id=principal.id, user_role=role)


async def _check_user_request(request: Any, models: frozenset[str]) -> None:
    """Refuse a non-admin key on a route outside :data:`USER_ROUTES` or a model it may not call."""
    from litellm.proxy._types import ProxyException

    path = _route(request)
    if path not in USER_ROUTES and not path.startswith(_USER_PREFIXES):
        raise ProxyException(
            message=f"palm: route {path} needs the proxy master key",
            type="permission_error",
            param="route",
            code=403,
        )
    if path not in INFERENCE_ROUTES:
        return
    from litellm.proxy.common_utils.http_parsing_utils import read_request_body

    body = await read_request_body(request)  # parsed once; LiteLLM reuses the cached body
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str) or model not in models:
        raise ProxyException(
            message=(
                f"palm: this key may call the models {sorted(models)}; got {model!r}"
                if isinstance(model, str)
                else "palm: the request needs a `model` (a string)"
            ),
            type="permission_error" if isinstance(model, str) else "invalid_request_error",
            param="model",
            code=403 if isinstance(model, str) else 400,
        )


def _route(request: Any) -> str:
    """The request path without the app's root path, normalised (no trailing slash)."""
    scope = getattr(request, "scope", {}) or {}
    path = str(scope.get("path") or getattr(getattr(request, "url", None), "path", "") or "/")
    root = str(scope.get("root_path") or "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return "/.."  # never on the allow-list
    return "/" + "/".join(parts)


def is_admin(user_api_key_dict: Any) -> bool:
    """True for the proxy master key (LiteLLM's ``proxy_admin`` role)."""
    role = getattr(user_api_key_dict, "user_role", None)
    return str(getattr(role, "value", role)) == "proxy_admin"


def allowed_models(user_api_key_dict: Any, runtime: Any) -> frozenset[str]:
    """Model names a non-admin key may call (its ``models``, else ``route_models``)."""
    entry = runtime.keys.get(getattr(user_api_key_dict, "api_key", None))
    models: frozenset[str] = (
        runtime.key_models(entry) if entry is not None else runtime.route_models
    )
    return models


def _master_key() -> str | None:
    try:
        from litellm.proxy import proxy_server
    except ImportError:  # pragma: no cover - only inside the proxy
        return None
    value = getattr(proxy_server, "master_key", None)
    return value if isinstance(value, str) else None


def principal_of(
    user_api_key_dict: Any,
    *,
    master_key_app: str | None = "admin",
    keys: Mapping[str, KeyEntry] | None = None,
) -> Principal:
    """The principal of an authenticated proxy request (``UserAPIKeyAuth``).

    Decided only by what the proxy authenticated: the key itself (its digest looked up in
    ``keys`` from ``palm.yaml``), the admin role, or the user a virtual key is bound to. Key
    metadata is never trusted: whoever creates a virtual key can write it.

    Raises:
        IdentityError: the key identifies nobody PALM can serve (no user, not an app).
    """
    api_key = getattr(user_api_key_dict, "api_key", None)
    if keys is not None and isinstance(api_key, str) and api_key in keys:
        return keys[api_key].principal
    if is_admin(user_api_key_dict) and master_key_app:
        return Principal(master_key_app, acts_for_end_users=True)
    user_id = getattr(user_api_key_dict, "user_id", None)
    if isinstance(user_id, str) and user_id and user_id != _LITELLM_DEFAULT_USER:
        return Principal(user_id)
    raise IdentityError("this API key is bound to no user and to no app; PALM cannot serve it")
