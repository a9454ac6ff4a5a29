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
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from palm_middleware.exceptions import IdentityError
from palm_middleware.identity import Principal

from .config import KeyEntry, get_runtime

__all__ = ["key_digest", "principal_of", "user_api_key_auth"]

_LITELLM_DEFAULT_USER = "default_user_id"


def key_digest(key: str) -> str:
    """SHA-256 hex digest of an API key, as ``palm.yaml`` stores it."""
    return hashlib.sha256(key.encode()).hexdigest()


async def user_api_key_auth(request: Any, api_key: str) -> Any:
    """LiteLLM ``custom_auth`` hook: authenticate the bearer key against ``palm.yaml``."""
    from litellm.proxy._types import LitellmUserRoles, ProxyException, UserAPIKeyAuth

    key = (api_key or "").strip()
    if key.lower().startswith("bearer "):
        key = key[7:].strip()
    runtime = get_runtime()
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
    return UserAPIKeyAuth(api_key=digest, user_id=principal.id, user_role=role)


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
    role = getattr(user_api_key_dict, "user_role", None)
    if str(getattr(role, "value", role)) == "proxy_admin" and master_key_app:
        return Principal(master_key_app, acts_for_end_users=True)
    user_id = getattr(user_api_key_dict, "user_id", None)
    if isinstance(user_id, str) and user_id and user_id != _LITELLM_DEFAULT_USER:
        return Principal(user_id)
    raise IdentityError("this API key is bound to no user and to no app; PALM cannot serve it")
