"""The SDK door: PALM routing inside an in-process ``litellm.Router`` (no proxy).

:func:`install` plugs PALM into a Router through LiteLLM's pre-routing extension point (the one
its ``auto_router`` and ``adaptive_router`` use): for each of ``route_models`` the Router asks
:class:`PalmRouting` which model group to serve, and PALM answers with the caller's member,
after the same gate as the proxy (:func:`palm_litellm.gate.admit`: ``Palm.adecide``, bounds,
blocks, audit). The hook (:class:`palm_litellm.hook.PalmProxyHook`) joins ``litellm.callbacks``:
it applies the member's prompt and parameters once the call type is known, records outcomes,
and refuses calls that reach a member's deployment without PALM's ticket for it.

Identity. The caller is whoever the *application* authenticated, set with :func:`acting_as`
around the call. Never a request field: ``user``, ``metadata`` and headers are routinely copied
from an end user's own request, so any of them could be forged by another end user. What a
request field may do is what the proxy allows an app key: an app principal
(``Principal("myapp", acts_for_end_users=True)``) names its end user in ``user`` and reaches
``"myapp/<user>"``; a personal principal may omit ``user`` or repeat its own id.

    router = litellm.Router(model_list=[...])
    palm_litellm.sdk.install(router, runtime)
    with palm_litellm.sdk.acting_as(Principal(session.user_id)):
        await router.acompletion(model="auto", messages=[...])

Without :func:`acting_as`, a route model is refused (fail closed), and so is a member's group.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litellm.integrations.custom_logger import CustomLogger

from palm_middleware.exceptions import IdentityError
from palm_middleware.identity import Principal
from palm_middleware.inputs import RequestKind

from .config import PalmRuntime
from .errors import AccessDenied
from .gate import TICKET_KEY, admit

if TYPE_CHECKING:
    from litellm.router import Router
    from litellm.types.router import PreRoutingHookResponse

    from .hook import PalmProxyHook

__all__ = ["Caller", "PalmRouting", "acting_as", "current_caller", "install"]


@dataclass(frozen=True)
class Caller:
    """Who the application authenticated for the calls in an :func:`acting_as` block."""

    principal: Principal
    admin: bool = False
    """An operator: may name members directly (the policy's rules still run)."""


_CALLER: ContextVar[Caller | None] = ContextVar("palm_caller", default=None)


@contextmanager
def acting_as(principal: Principal | str, *, admin: bool = False) -> Iterator[Caller]:
    """Run the Router calls in this block as ``principal`` (a user id or a Principal).

    Set it from the application's own authentication (session, token), per request; it is a
    context variable, so concurrent requests of other users never see it.
    """
    caller = Caller(principal if isinstance(principal, Principal) else Principal(principal), admin)
    token = _CALLER.set(caller)
    try:
        yield caller
    finally:
        _CALLER.reset(token)


def current_caller() -> Caller | None:
    """The caller set by the innermost :func:`acting_as`, or None."""
    return _CALLER.get()


class PalmRouting(CustomLogger):
    """A Router pre-routing strategy: the caller's member for a route model, or a refusal."""

    def __init__(self, runtime: PalmRuntime, router: Router | None = None) -> None:
        super().__init__()
        self.runtime = runtime
        self.router = router
        """The Router whose deployments' ``drop_params`` the gate honours."""

    async def async_pre_routing_hook(
        self,
        model: str,
        request_kwargs: dict[str, Any],
        messages: list[dict[str, Any]] | None = None,
        input: str | list[Any] | None = None,
        specific_deployment: bool | None = False,
    ) -> PreRoutingHookResponse | None:
        """Decide with PALM; answer the member's model group (LiteLLM picks its deployment)."""
        from litellm.types.router import PreRoutingHookResponse

        caller = current_caller()
        if caller is None:
            raise IdentityError(
                "palm: no caller for this Router call; wrap it in palm_litellm.sdk.acting_as(...)"
            )
        kind, body = _request(request_kwargs, messages, input)
        # The call's other fields (sampling parameters, tools, ...): checked and read by the
        # gate as on the proxy; a field it drops (``drop_params``) leaves the real call too.
        extra = {
            k: v
            for k, v in request_kwargs.items()
            if k not in body and k not in ("metadata", "litellm_metadata", "model")
        }
        body = {**extra, **body, "model": model}
        ticket = await admit(
            self.runtime,
            caller.principal,
            body,
            kind,
            admin=caller.admin,
            asserted_user=request_kwargs.get("user"),
            policy_metadata=None,
            door="sdk",
            apply=False,
            router=self.router,
        )
        for name in extra:
            if name not in body:
                request_kwargs.pop(name, None)
        if ticket is None:
            return None
        holder_name = "litellm_metadata" if "litellm_metadata" in request_kwargs else "metadata"
        holder = request_kwargs.get(holder_name)
        if not isinstance(holder, dict):
            holder = request_kwargs[holder_name] = {}
        holder[TICKET_KEY] = ticket
        return PreRoutingHookResponse(model=str(body["model"]), messages=messages)


def _request(
    request_kwargs: dict[str, Any],
    messages: list[dict[str, Any]] | None,
    input: str | list[Any] | None,
) -> tuple[RequestKind, dict[str, Any]]:
    """The request's shape and texts, from what the Router hands a pre-routing strategy.

    Chat and text completions pass ``messages`` positionally (not in ``request_kwargs``); the
    generic path (Anthropic messages) keeps them in ``request_kwargs``; Responses pass
    ``input``. The exact call type is known later, in the deployment hook, which applies the
    member's prompt to the real request shape.
    """
    if messages is None and input is not None:
        return "responses", {"input": input, "instructions": request_kwargs.get("instructions")}
    if messages is not None and "messages" in request_kwargs:
        return "anthropic_messages", {"messages": messages, "system": request_kwargs.get("system")}
    if messages is not None:
        return "chat", {"messages": messages}
    raise AccessDenied(
        "palm: this call carries no messages or input PALM can read; use chat, text "
        "completions, responses or anthropic messages",
        param="model",
    )


def install(router: Router, runtime: PalmRuntime, hook: PalmProxyHook | None = None) -> PalmRouting:
    """Route ``runtime``'s ``route_models`` on ``router`` with PALM; return the strategy.

    Also puts the PALM hook in ``litellm.callbacks`` (once): it applies member prompts,
    records outcomes and guards member deployments for every call of the process.
    """
    import litellm
    from litellm.types.router import TaggedPreRoutingStrategy

    from .hook import PalmProxyHook

    strategy = PalmRouting(runtime, router)
    for model in runtime.route_models:
        # The registry LiteLLM's own auto routers use; keyed by the model name callers send.
        entry = TaggedPreRoutingStrategy(tags=(), strategy=strategy)
        router.auto_routers[model] = [entry]  # type: ignore[list-item]
    if not any(isinstance(cb, PalmProxyHook) for cb in litellm.callbacks):
        litellm.callbacks.append(hook if hook is not None else PalmProxyHook(runtime))
    return strategy
