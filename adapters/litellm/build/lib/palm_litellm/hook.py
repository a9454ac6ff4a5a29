"""The proxy callback: route each request to the caller's member, enforce bounds, record outcomes.

Reference it in the proxy config by package path, so that it shares its runtime with the
provider (a file next to the config would be executed once per reference)::

    litellm_settings:
      callbacks: [palm_litellm.hook.instance]
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from palm_middleware.exceptions import PalmError
from palm_middleware.identity import resolve_user

from .auth import principal_of
from .config import PalmRuntime, RuntimeUser, Target
from .errors import http_exception

__all__ = ["COMPARE_KEY", "PalmProxyHook", "apply_target", "instance"]

_ROUTED_CALLS = frozenset({"completion", "acompletion"})
#: Request metadata key naming the member to serve for an A/B comparison (``/palm/v1/compare``).
COMPARE_KEY = "palm_compare"
#: Member generation parameters that have an OpenAI request field of the same meaning.
_OPENAI_PARAMS = ("max_tokens", "temperature", "top_p", "seed", "stop")


def apply_target(data: dict[str, Any], target: Target) -> None:
    """Re-target ``data`` to the member's model group with its system prompt and parameters.

    The member's system prompt and few-shot turns go before the client's messages; its
    decoding parameters replace the client's (they are what makes the member), except that
    ``max_tokens`` keeps the smaller of the two and stop sequences are merged.
    """
    data["model"] = target.group
    added: list[dict[str, Any]] = []
    if target.system_prompt is not None:
        added.append({"role": "system", "content": target.system_prompt})
    added.extend(dict(m) for m in target.few_shot)
    if added:
        data["messages"] = [*added, *data["messages"]]
    for name in _OPENAI_PARAMS:
        if not target.generation or name not in target.generation:
            continue
        value = target.generation[name]
        if name == "max_tokens" and isinstance(data.get("max_tokens"), int):
            value = min(int(value), data["max_tokens"])
        elif name == "stop" and data.get("stop"):
            theirs = [data["stop"]] if isinstance(data["stop"], str) else list(data["stop"])
            ours = [value] if isinstance(value, str) else list(value)
            value = list(dict.fromkeys([*ours, *theirs]))
        data[name] = value


def _check_messages(messages: object) -> list[Mapping[str, Any]]:
    from fastapi import HTTPException

    if not isinstance(messages, list) or not messages:
        raise HTTPException(400, detail={"error": "palm: `messages` must be a non-empty list"})
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise HTTPException(
                400, detail={"error": f"palm: messages[{i}] must be an object with a `role`"}
            )
    return messages


class PalmProxyHook(RuntimeUser, CustomLogger):
    """Pre-call routing and bounds, post-call outcome records, ``x-palm-*`` response headers."""

    def __init__(self, runtime: PalmRuntime | None = None) -> None:
        super().__init__()
        self._runtime = runtime

    # The proxy looks this up on the leaf class (integration.md §4.3): keep it defined here.
    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any]:
        """Decide the member for this user; re-target ``data``; raise HTTP 4xx to refuse."""
        runtime = self.runtime
        # The hook keeps its per-request state under metadata["palm"]; a client may have sent
        # that key itself, so drop it before anything else (the post-call hooks trust it).
        for holder in (data.get("metadata"), data.get("litellm_metadata")):
            if isinstance(holder, dict):
                holder.pop("palm", None)
                requester = holder.get("requester_metadata")
                if isinstance(requester, dict):
                    requester.pop("palm", None)
        if call_type not in _ROUTED_CALLS or data.get("model") not in runtime.route_models:
            return data
        messages = _check_messages(data.get("messages"))
        asserted = data.get("user")
        try:
            principal = principal_of(
                user_api_key_dict,
                master_key_app=runtime.settings.auth.master_key_app,
                keys=runtime.keys,
            )
            user = resolve_user(
                principal,
                asserted if asserted is None or isinstance(asserted, str) else str(asserted),
            )
            decision = await runtime.palm.adecide(
                user, messages, self._policy_metadata(data), compare=self._compare(data)
            )
        except PalmError as exc:
            raise http_exception(exc) from exc
        apply_target(data, runtime.targets[decision.member])
        metadata = data.get("metadata")
        if not isinstance(metadata, dict):
            metadata = data["metadata"] = {}
        metadata["palm"] = {
            "decision_id": decision.decision_id,
            "user": user,
            "member": decision.member,
            "headers": decision.headers(),
            "t0": time.perf_counter(),
        }
        return data

    @staticmethod
    def _compare(data: Mapping[str, Any]) -> str | None:
        """``metadata.palm_compare``: the member the client asks for, for an A/B question.

        Not identity, and the pipeline honours it only where the policy allows exploration.
        """
        theirs = data.get("metadata")
        if not isinstance(theirs, dict):
            return None
        requester = theirs.get("requester_metadata")
        source = requester if isinstance(requester, dict) else theirs
        member = source.get(COMPARE_KEY)
        return member if isinstance(member, str) and member else None

    def _policy_metadata(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Request metadata the policy may see: only the keys the deployment allows."""
        theirs = data.get("metadata")
        requester = theirs.get("requester_metadata") if isinstance(theirs, dict) else None
        source = requester if isinstance(requester, dict) else theirs
        if not isinstance(source, dict):
            return {}
        return {k: source[k] for k in self.runtime.settings.client_metadata if k in source}

    async def async_post_call_success_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, response: Any
    ) -> Any:
        """Record the outcome of a non-streaming request (usage, latency)."""
        usage = getattr(response, "usage", None)
        await self._record(data, "success", _usage_dict(usage))
        return response

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        """Pass the stream through; record its outcome when it ends."""
        usage: dict[str, int] | None = None
        outcome = "success"
        try:
            async for chunk in response:
                found = _usage_dict(getattr(chunk, "usage", None))
                usage = found or usage
                yield chunk
        except BaseException:
            outcome = "failure"
            raise
        finally:
            await self._record(request_data, outcome, usage)

    async def async_post_call_failure_hook(
        self,
        request_data: dict[str, Any],
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> None:
        """Record a failed request that had a decision."""
        await self._record(request_data, "failure", None, error=type(original_exception).__name__)

    async def async_post_call_response_headers_hook(
        self,
        data: dict[str, Any],
        user_api_key_dict: Any,
        response: Any,
        request_headers: Any = None,
        litellm_call_info: Any = None,
    ) -> dict[str, str] | None:
        """``x-palm-member``, ``x-palm-weights``, ``x-palm-policy``, ``x-palm-decision``."""
        info = _palm_info(data)
        return dict(info["headers"]) if info is not None else None

    async def _record(
        self,
        data: Mapping[str, Any],
        outcome: str,
        usage: dict[str, int] | None,
        error: str | None = None,
    ) -> None:
        info = _palm_info(data)
        if info is None or info.get("recorded"):
            return
        info["recorded"] = True
        latency = (time.perf_counter() - float(info["t0"])) * 1000.0
        await self.runtime.palm.arecord_outcome(
            info["user"], info["decision_id"], outcome, usage=usage, latency_ms=latency, error=error
        )


def _palm_info(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    metadata = data.get("metadata") if isinstance(data, Mapping) else None
    info = metadata.get("palm") if isinstance(metadata, dict) else None
    return info if isinstance(info, dict) else None


def _usage_dict(usage: Any) -> dict[str, int] | None:
    if usage is None:
        return None
    out = {}
    for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
        v = usage.get(k) if isinstance(usage, Mapping) else getattr(usage, k, None)
        if isinstance(v, int):
            out[k] = v
    return out or None


instance = PalmProxyHook()


def _mount_in_proxy() -> None:
    """Inside the LiteLLM proxy, serve the ``/palm/v1`` endpoints on its own app and port."""
    import sys

    server = sys.modules.get("litellm.proxy.proxy_server")
    app = getattr(server, "app", None)
    if app is not None:
        from .endpoints import mount

        mount(app)


_mount_in_proxy()
