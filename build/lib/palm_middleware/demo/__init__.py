"""The main job: scripted users personalizing a real portfolio through the LiteLLM proxy.

``palm demo`` prepares the default portfolio (SmolLM2-135M-Instruct members, cached), writes a
proxy deployment, starts the LiteLLM proxy with PALM on 127.0.0.1 and runs a
:class:`~palm_middleware.demo.session.Session` of :class:`~palm_middleware.demo.users.ScriptedUser`
whose hidden weights the proxy has to learn from their A/B choices. ``palm chat`` is the
interactive twin (in-process, no proxy).
"""

from __future__ import annotations

from typing import Any

from .._lazy import load

__all__ = [
    "ChatReply",
    "Deployment",
    "ProxyClient",
    "ProxyProcess",
    "ScriptedUser",
    "Session",
    "SessionResult",
    "default_users",
    "write_deployment",
]

_EXPORTS = {
    "ChatReply": ".client",
    "ProxyClient": ".client",
    "Deployment": ".deployment",
    "write_deployment": ".deployment",
    "ProxyProcess": ".proxy",
    "ScriptedUser": ".users",
    "default_users": ".users",
    "Session": ".session",
    "SessionResult": ".session",
}


def __getattr__(name: str) -> Any:
    return load(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return sorted(__all__)
