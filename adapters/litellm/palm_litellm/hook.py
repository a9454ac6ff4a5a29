"""The proxy callback: route each request to the caller's member, enforce bounds, record outcomes.

Reference it in the proxy config by package path, so that it shares its runtime with the
provider (a file next to the config would be executed once per reference)::

    litellm_settings:
      callbacks: [palm_litellm.hook.instance]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from litellm.exceptions import UnsupportedParamsError
from litellm.integrations.custom_logger import CustomLogger

from palm_middleware.exceptions import PalmError

from .auth import allowed_models, is_admin, principal_of
from .config import PalmRuntime, RuntimeUser, get_runtime
from .errors import AccessDenied, NotReady, proxy_exception, unsupported_exception
from .gate import (
    TICKET_KEY,
    Ticket,
    admit,
    apply_member,
    apply_target,
    find_ticket,
    proxy_router,
    request_kind,
)

__all__ = ["COMPARE_KEY", "PalmProxyHook", "apply_target", "instance"]

#: Request metadata key naming the member to serve for an A/B comparison (``/palm/v1/compare``).
COMPARE_KEY = "palm_compare"
#: Request fields that would let a client send its request to a model PALM did not choose.
_CLIENT_ROUTING_FIELDS = (
    "fallbacks",
    "context_window_fallbacks",
    "content_policy_fallbacks",
    "mock_testing_fallbacks",
    "model_list",
)


class PalmProxyHook(RuntimeUser, CustomLogger):
    """Pre-call routing and bounds, post-call outcome records, ``x-palm-*`` response headers.

    Also the backstop of both doors: :meth:`async_pre_call_deployment_hook` runs in LiteLLM's
    client wrapper on every call (proxy or SDK, every call type) and refuses a call that
    reaches a portfolio member without the gate's ticket for that member's group.
    """

    def __init__(self, runtime: PalmRuntime | None = None) -> None:
        super().__init__()
        self._runtime = runtime

    def _ready_runtime(self) -> PalmRuntime:
        try:
            return self.runtime
        except PalmError as exc:
            raise proxy_exception(NotReady(f"palm: not ready: {exc}")) from exc

    # The proxy looks this up on the leaf class (integration.md §4.3): keep it defined here.
    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any]:
        """Decide the member for this user; re-target ``data``; refuse with the OpenAI error."""
        # Hooks keep per-request state under metadata["palm"]; a client may have sent that
        # key itself, so drop it before anything else (whatever its type).
        for holder in (data.get("metadata"), data.get("litellm_metadata")):
            if isinstance(holder, dict):
                holder.pop(TICKET_KEY, None)
                requester = holder.get("requester_metadata")
                if isinstance(requester, dict):
                    requester.pop(TICKET_KEY, None)
        runtime = self._ready_runtime()
        admin = is_admin(user_api_key_dict)
        kind = request_kind(call_type)
        try:
            if kind is None:
                model = data.get("model")
                reaches = isinstance(model, str) and runtime.serves_members(model)
                if admin and not reaches:
                    return data  # an operator's call to a model outside the portfolio
                raise AccessDenied(
                    f"palm: {getattr(call_type, 'value', call_type)} requests need the master key",
                    param="model",
                )
            principal = principal_of(
                user_api_key_dict,
                master_key_app=runtime.settings.auth.master_key_app,
                keys=runtime.keys,
            )
            if not admin:
                for name in _CLIENT_ROUTING_FIELDS:
                    data.pop(name, None)
            ticket = await admit(
                runtime,
                principal,
                data,
                kind,
                admin=admin,
                asserted_user=data.get("user"),
                policy_metadata=self._policy_metadata(data),
                compare=self._compare(data),
                router=proxy_router(),
            )
        except PalmError as exc:
            raise proxy_exception(exc) from exc
        except UnsupportedParamsError as exc:
            raise unsupported_exception(exc) from exc
        if ticket is not None:
            _leave_ticket(data, ticket)
        return data

    async def async_pre_call_deployment_hook(
        self, kwargs: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        """Refuse a call reaching a member's deployment without the gate's ticket for it."""
        runtime = self._runtime or _built_runtime()
        if runtime is None:
            return None
        model = kwargs.get("model")
        group = _model_group(kwargs)
        reaches = [m for m in (group, model) if isinstance(m, str) and runtime.serves_members(m)]
        if not reaches:
            return None
        ticket = find_ticket(kwargs)
        if ticket is not None:
            target = runtime.targets[ticket.member]
            if group in (None, target.group) or model in (
                target.group,
                f"palm_onnx/{target.group}",
            ):
                if ticket.applied:
                    return None
                kind = request_kind(call_type)
                if kind is None:
                    raise _refusal(
                        kwargs,
                        AccessDenied(
                            f"palm: {getattr(call_type, 'value', call_type)} calls cannot be "
                            "routed by PALM",
                            param="model",
                        ),
                    )
                apply_member(kwargs, target, kind)
                ticket.applied = True
                return kwargs
            stand_in = _stand_in(runtime, ticket, group, model)
            if stand_in is not None:  # the member's server failed: a policy-chosen stand-in
                kind = request_kind(call_type)
                if kind is not None:
                    apply_member(kwargs, runtime.targets[stand_in], kind)
                ticket.served = stand_in
                return kwargs
            target_group = target.group
            raise _refusal(
                kwargs,
                AccessDenied(
                    f"palm: this request was routed to {target_group!r}; it may not reach "
                    f"{group!r}",
                    param="model",
                ),
            )
        if _caller_is_admin(kwargs):
            return None
        raise _refusal(
            kwargs,
            AccessDenied(
                f"palm: model {reaches[0]!r} serves portfolio members and is reached only "
                "through PALM's routing",
                param="model",
            ),
        )

    async def async_filter_listed_models(
        self, user_api_key_dict: Any, model_names: Sequence[str]
    ) -> Sequence[str]:
        """``/v1/models`` and friends list only what the key may call."""
        if is_admin(user_api_key_dict):
            return model_names
        allowed = allowed_models(user_api_key_dict, self._ready_runtime())
        return [n for n in model_names if n in allowed]

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
        """Check the reply against the policy's reply rules; record the outcome (and stand-in)."""
        ticket = find_ticket(data)
        if ticket is not None:
            for choice in getattr(response, "choices", None) or ():
                message = getattr(choice, "message", None)
                text = _written(message)
                if message is not None and text:
                    verdict = await self.runtime.palm.acheck_reply(
                        ticket.user,
                        ticket.decision_id,
                        text,
                        self._policy_metadata(data),
                    )
                    if verdict is not None:
                        message.content = verdict.message
                        if getattr(message, "tool_calls", None):
                            message.tool_calls = None  # the call is part of what was refused
                        choice.finish_reason = "content_filter"
        usage = getattr(response, "usage", None)
        ticket = find_ticket(data)
        served = _served_stand_in(self.runtime, ticket, response) if ticket else None
        outcome = "fallback" if served else "success"
        await self._record(data, outcome, _usage_dict(usage), served=served)
        return response

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        """Pass the stream through, cut it when a reply rule fires; record its outcome."""
        usage: dict[str, int] | None = None
        outcome = "success"
        ticket = find_ticket(request_data)
        check = (
            self.runtime.palm.reply_rail(self._policy_metadata(request_data)).stream()
            if ticket is not None
            else None
        )
        try:
            async for chunk in response:
                found = _usage_dict(getattr(chunk, "usage", None))
                usage = found or usage
                if check is not None and check.rail.active:
                    delta = _delta_text(chunk)
                    verdict = await asyncio.to_thread(check.feed, delta) if delta else None
                    if verdict is None and _finishes(chunk):
                        # The rest since the last stride (all of a short reply, or a tool
                        # call, which arrives whole in the last chunk) before the last chunk.
                        verdict = await asyncio.to_thread(check.finish)
                    if verdict is not None and ticket is not None:
                        await self.runtime.palm.arecord_reply_block(
                            ticket.user, ticket.decision_id, verdict, streamed=True
                        )
                        outcome = "reply_blocked"
                        yield _cut(chunk, verdict.message)
                        return
                yield _usage_chunk(chunk)
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
        """``x-palm-member``, ``x-palm-weights``, ``x-palm-policy``, ``x-palm-decision``;
        ``x-palm-fallback-from`` when a stand-in served."""
        ticket = find_ticket(data)
        if ticket is None:
            return None
        headers = dict(ticket.headers)
        served = _served_stand_in(self.runtime, ticket, response)
        if served is not None:
            headers["x-palm-fallback-from"] = headers["x-palm-member"]
            headers["x-palm-member"] = served
        return headers

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """SDK door: record the outcome once LiteLLM logs the call (streams: at their end)."""
        ticket = _logged_ticket(kwargs)
        if ticket is not None and ticket.door == "sdk":
            await self._record_ticket(
                ticket, "success", _usage_dict(getattr(response_obj, "usage", None))
            )

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """SDK door: record a failed call that had a decision."""
        ticket = _logged_ticket(kwargs)
        if ticket is not None and ticket.door == "sdk":
            exc = kwargs.get("exception") if isinstance(kwargs, Mapping) else None
            await self._record_ticket(ticket, "failure", None, error=type(exc).__name__)

    async def _record(
        self,
        data: Mapping[str, Any],
        outcome: str,
        usage: dict[str, int] | None,
        error: str | None = None,
        served: str | None = None,
    ) -> None:
        ticket = find_ticket(data)
        if ticket is not None:
            await self._record_ticket(ticket, outcome, usage, error, served=served)

    async def _record_ticket(
        self,
        ticket: Ticket,
        outcome: str,
        usage: dict[str, int] | None,
        error: str | None = None,
        *,
        served: str | None = None,
    ) -> None:
        if ticket.recorded:
            return
        ticket.recorded = True
        latency = (time.perf_counter() - ticket.t0) * 1000.0
        await self.runtime.palm.arecord_outcome(
            ticket.user,
            ticket.decision_id,
            outcome,
            usage=usage,
            latency_ms=latency,
            error=error,
            served=served,
        )


def _written(message: Any) -> str:
    """What the member wrote in a message or delta: its text, then its tool calls' arguments
    (reply rules read both: a call's arguments are the member's words too)."""
    text = getattr(message, "content", None)
    parts = [text] if isinstance(text, str) and text else []
    for call in getattr(message, "tool_calls", None) or ():
        fn = getattr(call, "function", None)
        if fn is None and isinstance(call, dict):
            fn = call.get("function")
        args = fn.get("arguments") if isinstance(fn, dict) else getattr(fn, "arguments", None)
        if isinstance(args, str) and args:
            parts.append(args)
    return "\n".join(parts)


def _finishes(chunk: Any) -> bool:
    choices: Any = getattr(chunk, "choices", None) or ()
    return bool(choices) and getattr(choices[0], "finish_reason", None) is not None


def _delta_text(chunk: Any) -> str:
    choices = getattr(chunk, "choices", None) or ()
    delta = getattr(choices[0], "delta", None) if choices else None
    return _written(delta)


def _usage_chunk(chunk: Any) -> Any:
    """OpenAI's shape for ``stream_options.include_usage``: the usage chunk has ``choices: []``.

    LiteLLM's stream wrapper sends it with one empty choice (``{"delta": {}}``); clients that
    read ``chunk.choices[0]`` only on chunks with choices (as OpenAI documents) count it twice.
    """
    choices = getattr(chunk, "choices", None)
    if getattr(chunk, "usage", None) is None or not choices or len(choices) != 1:
        return chunk
    choice = choices[0]
    delta = getattr(choice, "delta", None)
    empty = delta is None or not any(
        getattr(delta, name, None)
        for name in ("content", "tool_calls", "function_call", "role", "reasoning_content")
    )
    if getattr(choice, "finish_reason", None) is None and empty:
        chunk.choices = []
    return chunk


def _cut(chunk: Any, message: str) -> Any:
    """The stream's last chunk: the rule's message instead of the member's text."""
    choice = chunk.choices[0]
    choice.delta.content = "\n\n" + message
    if getattr(choice.delta, "tool_calls", None):
        choice.delta.tool_calls = None
    choice.finish_reason = "content_filter"
    return chunk


def _stand_in(runtime: PalmRuntime, ticket: Ticket, group: object, model: object) -> str | None:
    """The ticket's stand-in served by this deployment (its group or model), or None."""
    for member in ticket.stand_ins:
        g = runtime.targets[member].group
        if group == g or model in (g, f"palm_onnx/{g}"):
            return member
    return None


def _served_stand_in(runtime: PalmRuntime, ticket: Ticket, response: Any) -> str | None:
    """The stand-in that served instead of the decided member, or None (it served itself).

    The deployment hook notes it on the ticket; if LiteLLM copied the ticket for the fallback
    call, the response's fallback headers name the group that served.
    """
    if not ticket.stand_ins:
        return None
    if ticket.served is not None:
        return ticket.served
    hidden = getattr(response, "_hidden_params", None)
    extra = hidden.get("additional_headers") if isinstance(hidden, dict) else None
    if not isinstance(extra, dict) or not extra.get("x-litellm-attempted-fallbacks"):
        return None
    return _stand_in(runtime, ticket, extra.get("x-litellm-model-group"), None)


def _leave_ticket(data: dict[str, Any], ticket: Ticket) -> None:
    """Put the ticket where later hooks (and LiteLLM's client wrapper) will see the request."""
    placed = False
    for name in ("metadata", "litellm_metadata"):
        holder = data.get(name)
        if isinstance(holder, dict):
            holder[TICKET_KEY] = ticket
            placed = True
    if not placed:
        data["metadata"] = {TICKET_KEY: ticket}


def _logged_ticket(kwargs: Any) -> Ticket | None:
    """The ticket in the call details LiteLLM hands its logging callbacks."""
    if not isinstance(kwargs, Mapping):
        return None
    params = kwargs.get("litellm_params")
    return find_ticket(kwargs) or (find_ticket(params) if isinstance(params, Mapping) else None)


def _model_group(kwargs: Mapping[str, Any]) -> str | None:
    for name in ("metadata", "litellm_metadata"):
        holder = kwargs.get(name)
        if isinstance(holder, Mapping) and isinstance(holder.get("model_group"), str):
            return str(holder["model_group"])
    return None


def _proxy_auth(kwargs: Mapping[str, Any]) -> Any:
    """The proxy's authenticated key (a ``UserAPIKeyAuth`` object, never a JSON value), or None.

    Matched by class, without importing ``litellm.proxy`` (heavy, and absent from SDK apps).
    """
    for name in ("metadata", "litellm_metadata"):
        holder = kwargs.get(name)
        auth = holder.get("user_api_key_auth") if isinstance(holder, Mapping) else None
        cls = type(auth)
        if cls.__name__ == "UserAPIKeyAuth" and cls.__module__.startswith("litellm."):
            return auth
    return None


def _refusal(kwargs: Mapping[str, Any], exc: PalmError) -> Exception:
    """Inside the proxy: its OpenAI-shaped exception; in the SDK: the PALM error itself."""
    refusal: Exception = proxy_exception(exc) if _proxy_auth(kwargs) is not None else exc
    return refusal


def _caller_is_admin(kwargs: Mapping[str, Any]) -> bool:
    """An admin: the proxy's master key, or an SDK caller marked ``admin``."""
    auth = _proxy_auth(kwargs)
    if auth is not None:
        return is_admin(auth)
    from .sdk import current_caller

    caller = current_caller()
    return caller is not None and caller.admin


def _built_runtime() -> PalmRuntime | None:
    try:
        return get_runtime()
    except PalmError:
        return None


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


#: Set by ``palm proxy``: a runtime that cannot be built stops the proxy process (exit 3).
FAIL_FAST_ENV = "PALM_FAIL_FAST"


def _mount_in_proxy() -> None:
    """Inside the LiteLLM proxy: build the runtime now, serve ``/palm/v1``, gate readiness."""
    import sys

    server = sys.modules.get("litellm.proxy.proxy_server")
    app = getattr(server, "app", None)
    if app is None:
        return
    from .admin import mount as mount_admin
    from .endpoints import mount
    from .health import gate_readiness
    from .limits import install

    install(app)
    mount(app)
    mount_admin(app)  # after mount(): it looks for the /palm/v1 prefix
    gate_readiness(app)
    try:
        get_runtime().load_members()
    except PalmError as exc:
        import os

        print(f"palm: cannot serve: {exc}", file=sys.stderr, flush=True)
        if os.environ.get(FAIL_FAST_ENV) == "1":
            os._exit(3)
    _freeze_startup_objects()


def _freeze_startup_objects() -> None:
    """Move everything alive after start-up (LiteLLM, the runtime, loaded models) out of the
    garbage collector's reach: it lives as long as the process, and a full collection that
    scans it costs a request tens of milliseconds (BENCHMARKS.md, feedback p99)."""
    import gc

    gc.collect()
    gc.freeze()


_mount_in_proxy()
