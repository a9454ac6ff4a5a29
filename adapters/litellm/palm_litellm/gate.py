"""The one decision path of both doors: the proxy's pre-call hook and the SDK's Router.

Every request that can make a member generate text passes :func:`admit` before it reaches a
deployment. It returns the member to serve (after ``Palm.adecide``) or raises:

* a route model (``route_models``, e.g. ``auto``): the texts of the request
  (:func:`palm_middleware.inputs.request_messages`, for every request shape) go to
  ``Palm.adecide``; the request is re-targeted to the chosen member's model group with its
  system prompt and decoding parameters;
* a member named directly (its group, its id, ``palm_onnx/<id>``): refused unless the caller
  is an admin or the deployment sets ``allow_direct_members``; even then ``Palm.adecide`` runs,
  so a block refuses and a pin or use_default rule serves the member it names;
* anything else: refused, except for admins (operators may reach non-member models).

The per-request state is a :class:`Ticket`, a Python object: no JSON body or header can forge
one, so later hooks trust only a ticket the gate itself created.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from palm_middleware.fallback import fallback_members
from palm_middleware.identity import Principal, resolve_user
from palm_middleware.inputs import RequestKind, request_messages
from palm_middleware.policy.context import build_context
from palm_middleware.portfolio.manifest import LiteLLMBackend

from .config import PalmRuntime, Target
from .errors import AccessDenied

__all__ = [
    "TICKET_KEY",
    "Ticket",
    "admit",
    "check_supported",
    "apply_member",
    "apply_target",
    "find_ticket",
    "group_deployments",
    "proxy_router",
    "request_kind",
]

#: Metadata key under which the gate leaves its :class:`Ticket`.
TICKET_KEY = "palm"

_KINDS: dict[str, RequestKind] = {
    "completion": "chat",
    "acompletion": "chat",
    "text_completion": "text_completion",
    "atext_completion": "text_completion",
    "responses": "responses",
    "aresponses": "responses",
    "anthropic_messages": "anthropic_messages",
    "aanthropic_messages": "anthropic_messages",
}

#: Member generation parameters and the request field carrying each, per request shape.
_PARAM_FIELDS: dict[RequestKind, dict[str, str]] = {
    "chat": {"max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p",
             "seed": "seed", "stop": "stop"},
    "text_completion": {"max_tokens": "max_tokens", "temperature": "temperature",
                        "top_p": "top_p", "seed": "seed", "stop": "stop"},
    "responses": {"max_tokens": "max_output_tokens", "temperature": "temperature",
                  "top_p": "top_p"},
    "anthropic_messages": {"max_tokens": "max_tokens", "temperature": "temperature",
                           "top_p": "top_p", "stop": "stop_sequences"},
}  # fmt: skip


#: Request fields a ``palm_onnx`` member cannot honour, per request shape, with the value that
#: means "not used" (OpenAI's default; sending it is not a request for the feature). Chat's set
#: is LiteLLM's own list of OpenAI parameters minus what the engine does, see
#: :func:`_chat_unsupported`.
_UNSUPPORTED: dict[RequestKind, dict[str, object]] = {
    "text_completion": {"logprobs": None, "echo": False, "best_of": 1, "suffix": None,
                        "n": 1, "presence_penalty": 0, "frequency_penalty": 0,
                        "logit_bias": None},
    "responses": {"tools": None, "tool_choice": None, "parallel_tool_calls": None,
                  "reasoning": None, "top_logprobs": None,
                  "text": {"format": {"type": "text"}}},
    "anthropic_messages": {"tools": None, "tool_choice": None, "thinking": None},
}  # fmt: skip
#: OpenAI chat parameters the engine honours (``n`` only as 1), or that are hints it may ignore.
_CHAT_SUPPORTED = frozenset(
    {"max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop", "stream",
     "stream_options", "user", "max_retries", "extra_headers", "safety_identifier",
     "prompt_cache_key", "prompt_cache_retention", "service_tier"}
)  # fmt: skip
#: Parameters the engine honours through a grammar (llguidance, the ``grammar`` extra); LiteLLM
#: turns Responses' ``text.format`` / ``tools`` into chat's ``response_format`` / ``tools``.
_CHAT_GRAMMAR = frozenset({"response_format", "tools", "tool_choice", "parallel_tool_calls"})
_RESPONSES_GRAMMAR = frozenset({"text", "tools", "tool_choice", "parallel_tool_calls"})
_CHAT_DEFAULTS: dict[str, object] = {
    "n": 1, "presence_penalty": 0, "frequency_penalty": 0, "logprobs": False, "store": False,
}  # fmt: skip
_chat_unsupported_cache: dict[str, object] | None = None


def _chat_unsupported() -> dict[str, object]:
    """LiteLLM's OpenAI chat parameters (plus reasoning ones) the engine cannot honour."""
    global _chat_unsupported_cache
    if _chat_unsupported_cache is None:
        import litellm

        from palm_middleware.engines import grammar

        known = litellm.get_supported_openai_params(model="gpt-4o", custom_llm_provider="openai")
        names = [*(known or ()), "reasoning_effort", "verbosity", "thinking"]
        supported = _CHAT_SUPPORTED | (_CHAT_GRAMMAR if grammar.available() else frozenset())
        _chat_unsupported_cache = {n: _CHAT_DEFAULTS.get(n) for n in names if n not in supported}
    return _chat_unsupported_cache


def _grammar_supported() -> bool:
    """Whether constrained output is served (llguidance found, read once with the chat list)."""
    return "response_format" not in _chat_unsupported()


def check_supported(
    data: dict[str, Any],
    kind: RequestKind,
    provider: str = "palm_onnx",
    deployments: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Refuse (or drop) request fields a local member would silently ignore.

    LiteLLM's convention for a provider that lacks a parameter: ``UnsupportedParamsError``
    (400), unless ``drop_params`` is set, and then the parameters are removed. LiteLLM cannot
    tell for a custom provider (it falls back to OpenAI's list), so PALM checks here, on both
    doors, before the member is reached. ``drop_params`` is read where LiteLLM reads it:
    ``litellm_settings`` (``litellm.drop_params``) always drops; otherwise the request's value,
    else the serving deployment's ``litellm_params.drop_params`` (the router merges the
    deployment's params under the request's). ``deployments`` are those of the member's model
    group: the group drops only if every one of them does, since the router picks one later.
    Names in ``additional_drop_params`` (request, or every deployment) are always dropped.

    Raises:
        litellm.UnsupportedParamsError: ``param`` names the first unsupported field.
    """
    import litellm
    from litellm.exceptions import UnsupportedParamsError

    table = _chat_unsupported() if kind == "chat" else _UNSUPPORTED.get(kind, {})
    if kind == "responses" and _grammar_supported():
        table = {k: v for k, v in table.items() if k not in _RESPONSES_GRAMMAR}
    found = [
        name
        for name, default in table.items()
        if name in data and data[name] is not None and data[name] != default
    ]
    if not found:
        return
    always = _additional_drops(data, deployments)
    if litellm.drop_params is True or _drops(data, deployments):
        always.update(found)
    for name in [n for n in found if n in always]:
        data.pop(name, None)
        found.remove(name)
    if not found:
        return
    exc = UnsupportedParamsError(
        message=(
            f"{provider} does not support parameters: {found}, for model={data.get('model')}. "
            "To drop these, set `drop_params: true` in the request, in the deployment's "
            "`litellm_params` or, for the proxy, `litellm_settings: {drop_params: true}`."
        ),
        llm_provider=provider,
        model=str(data.get("model")),
    )
    exc.param = found[0]
    raise exc


def _drops(data: Mapping[str, Any], deployments: Sequence[Mapping[str, Any]]) -> bool:
    """``drop_params`` of the request, else of every deployment (LiteLLM's own parsing)."""
    from litellm.litellm_core_utils.core_helpers import normalize_drop_params

    if data.get("drop_params") is not None:
        return normalize_drop_params(data["drop_params"]) is True
    return bool(deployments) and all(
        normalize_drop_params(_params(d).get("drop_params")) is True for d in deployments
    )


def _additional_drops(
    data: Mapping[str, Any], deployments: Sequence[Mapping[str, Any]]
) -> set[str]:
    """Names LiteLLM drops from every call: the request's, and those all deployments list."""

    def names(value: object) -> set[str]:
        return {v for v in value if isinstance(v, str)} if isinstance(value, list) else set()

    out = names(data.get("additional_drop_params"))
    if deployments:
        out |= set.intersection(
            *(names(_params(d).get("additional_drop_params")) for d in deployments)
        )
    return out


def _params(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    params = deployment.get("litellm_params")
    if isinstance(params, Mapping):
        return params
    dump = getattr(params, "model_dump", None)  # a LiteLLM_Params object
    return dump() if callable(dump) else {}


def group_deployments(router: Any, group: str) -> list[Mapping[str, Any]]:
    """The deployments of ``group`` in a LiteLLM ``Router`` (none without a router)."""
    if router is None:
        return []
    try:
        found = router.get_model_list(model_name=group)
    except Exception:  # a router that cannot list: no deployment settings, as without one
        return []
    return [d for d in found or () if isinstance(d, Mapping)]


def proxy_router() -> Any:
    """The running proxy's ``llm_router`` (None outside the proxy)."""
    import sys

    server = sys.modules.get("litellm.proxy.proxy_server")
    return getattr(server, "llm_router", None)


def request_kind(call_type: object) -> RequestKind | None:
    """The request shape of a LiteLLM call type (None: not a text-generating call PALM reads)."""
    value = getattr(call_type, "value", call_type)
    return _KINDS.get(value) if isinstance(value, str) else None


@dataclass
class Ticket:
    """What the gate decided for one request; read by the outcome and header hooks."""

    decision_id: str
    user: str
    member: str
    headers: dict[str, str]
    door: str
    applied: bool = False
    """True once the member's prompt and parameters are on the request (exactly once)."""
    t0: float = field(default_factory=time.perf_counter)
    recorded: bool = False
    stand_ins: tuple[str, ...] = ()
    """Members that may serve if the member's own server fails, best first (remote members)."""
    served: str | None = None
    """The stand-in that served instead of ``member``, once one did."""


def find_ticket(data: Mapping[str, Any] | None) -> Ticket | None:
    """The gate's ticket in a request's ``metadata`` / ``litellm_metadata`` (never a dict)."""
    if not isinstance(data, Mapping):
        return None
    for name in ("metadata", "litellm_metadata"):
        holder = data.get(name)
        if isinstance(holder, Mapping):
            ticket = holder.get(TICKET_KEY)
            if isinstance(ticket, Ticket):
                return ticket
    return None


async def admit(
    runtime: PalmRuntime,
    principal: Principal,
    data: dict[str, Any],
    kind: RequestKind,
    *,
    admin: bool,
    asserted_user: object = None,
    policy_metadata: Mapping[str, Any] | None = None,
    compare: str | None = None,
    door: str = "proxy",
    apply: bool = True,
    router: Any = None,
) -> Ticket | None:
    """Decide and re-target ``data`` in place; None only for an admin's non-member model.

    ``apply=False`` changes only ``data["model"]``; the member's prompt and parameters are then
    applied later, by :func:`apply_member` where the call type is known (the SDK door).
    ``router``: the LiteLLM Router serving the members, whose deployments' ``drop_params``
    :func:`check_supported` honours.

    Raises:
        AccessDenied: the model is not one this caller may name.
        IdentityError: the request acts for a user its principal may not act for.
        InvalidRequestError: content the guard cannot read (``param`` names the field).
        DecisionBlocked: the policy refuses the request.
        litellm.UnsupportedParamsError: a parameter the member cannot honour, without
            ``drop_params``.
    """
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise AccessDenied("palm: the request names no `model`", param="model")
    direct: str | None = None
    if model not in runtime.route_models:
        direct = runtime.direct_member(model)
        allowed = admin or runtime.settings.allow_direct_members
        if direct is None and admin and not runtime.serves_members(model):
            return None  # an operator's call to a model outside the portfolio
        if direct is None or not allowed:
            raise AccessDenied(
                f"palm: model {model!r} cannot be called directly with this key; call one of "
                f"{sorted(runtime.route_models)}",
                param="model",
            )
    limits = runtime.settings.limits
    # Every text the member will read, checked against the limits, off the event loop.
    messages = await asyncio.to_thread(
        request_messages, kind, data, limits=limits.core, allow_non_text=limits.allow_non_text
    )
    # Parameters no member could honour: refused before any decision is made, unless a
    # member's deployment may drop them (then the chosen member's deployment decides).
    local_only = all(t.local for t in runtime.targets.values())
    early = local_only and not _deployments_drop_any(runtime, router)
    if early:
        check_supported(data, kind)
    if isinstance(asserted_user, str) or asserted_user is None:
        named = asserted_user or None
    else:
        named = str(asserted_user)
    user = (
        principal.id
        if admin and named is None and direct is not None
        else resolve_user(principal, named)
    )
    decision = await runtime.palm.adecide(user, messages, policy_metadata, compare=compare)
    member = decision.member
    if direct is not None and decision.action == "clamp":
        member = direct  # no conditional rule chose the member: serve the one named
    target = runtime.targets[member]
    if target.local and not early:
        check_supported(data, kind, deployments=group_deployments(router, target.group))
    if apply:
        apply_target(data, target, kind)
    else:
        data["model"] = target.group
    stand_ins = () if direct is not None else stand_ins_for(runtime, decision, policy_metadata)
    if stand_ins:
        # LiteLLM's router tries these groups in order when the member's server fails or
        # times out; the deployment hook applies the stand-in's prompt and records it.
        groups = list(dict.fromkeys(runtime.targets[m].group for m in stand_ins))
        data["fallbacks"] = [{target.group: groups}]
    headers = dict(decision.headers())
    headers["x-palm-member"] = member
    return Ticket(
        decision.decision_id, user, member, headers, door, applied=apply, stand_ins=stand_ins
    )


def _deployments_drop_any(runtime: PalmRuntime, router: Any) -> bool:
    """True if a deployment of a local member's group sets ``drop_params`` or
    ``additional_drop_params`` (so what is unsupported depends on the member chosen)."""
    for group in {t.group for t in runtime.targets.values() if t.local}:
        for deployment in group_deployments(router, group):
            params = _params(deployment)
            if params.get("drop_params") is not None or params.get("additional_drop_params"):
                return True
    return False


def stand_ins_for(
    runtime: PalmRuntime, decision: Any, policy_metadata: Mapping[str, Any] | None
) -> tuple[str, ...]:
    """Members that may serve instead of a remote (``kind: litellm``) member, best first.

    Only members the policy allows for this user and request
    (:func:`palm_middleware.fallback.fallback_members`, in the decision's own context), on
    another model group than the member. Local members get none: their failure is not an
    outage of a server of their own.
    """
    member = runtime.portfolio.member(decision.member)
    if not isinstance(member.backend, LiteLLMBackend):
        return ()
    policy = runtime.palm.policy
    try:
        ctx = build_context(policy, policy_metadata, decision.ts, frozenset(decision.topics))
    except Exception:  # unreadable metadata: no stand-in rather than a guess
        return ()
    primary = runtime.targets[decision.member].group
    return tuple(
        m
        for m in fallback_members(runtime.portfolio, policy, ctx, decision)
        if runtime.targets[m].group != primary
    )


def apply_target(data: dict[str, Any], target: Target, kind: RequestKind = "chat") -> None:
    """Re-target ``data`` to the member's model group with its system prompt and parameters.

    The member's system prompt and few-shot turns go before the client's messages (Responses:
    before its ``instructions``; Anthropic: before its ``system``; text completions: the
    prompt is prefixed); its decoding parameters replace the client's (they are what makes the
    member), except that ``max_tokens`` keeps the smaller of the two and stop sequences merge.
    """
    data["model"] = target.group
    apply_member(data, target, kind)


def apply_member(data: dict[str, Any], target: Target, kind: RequestKind) -> None:
    """The member's system prompt, few-shot turns and decoding parameters on ``data``."""
    if target.system_prompt is not None or target.few_shot:
        _add_prompt(data, target, kind)
    fields = _PARAM_FIELDS[kind]
    for name, value in (target.generation or {}).items():
        if name not in fields:
            continue
        key = fields[name]
        theirs = data.get(key)
        if name == "max_tokens" and isinstance(theirs, int) and not isinstance(theirs, bool):
            value = min(int(value), theirs)
        elif name == "stop" and theirs:
            theirs_list = [theirs] if isinstance(theirs, str) else list(theirs)
            ours = [value] if isinstance(value, str) else list(value)
            value = list(dict.fromkeys([*ours, *theirs_list]))
        data[key] = value


def _add_prompt(data: dict[str, Any], target: Target, kind: RequestKind) -> None:
    shots = [dict(m) for m in target.few_shot]
    if kind == "chat":
        added = (
            [{"role": "system", "content": target.system_prompt}] if target.system_prompt else []
        )
        data["messages"] = [*added, *shots, *data["messages"]]
    elif kind == "anthropic_messages":
        if target.system_prompt:
            theirs = data.get("system")
            if isinstance(theirs, list):
                data["system"] = [{"type": "text", "text": target.system_prompt}, *theirs]
            else:
                data["system"] = target.system_prompt + (f"\n\n{theirs}" if theirs else "")
        data["messages"] = [*shots, *data["messages"]]
    elif kind == "responses":
        if target.system_prompt:
            theirs = data.get("instructions")
            data["instructions"] = target.system_prompt + (f"\n\n{theirs}" if theirs else "")
        if shots:
            given = data.get("input")
            items = [{"role": "user", "content": given}] if isinstance(given, str) else given
            data["input"] = [*shots, *(items if isinstance(items, list) else [])]
    else:  # text completion: one prompt string (or a batch of them)
        head = "\n".join(
            [*([target.system_prompt] if target.system_prompt else []),
             *(f"{m['role']}: {m['content']}" for m in shots)]
        )  # fmt: skip
        prompt = data.get("prompt")
        if isinstance(prompt, str):
            data["prompt"] = f"{head}\n\n{prompt}"
        elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
            data["prompt"] = [f"{head}\n\n{p}" for p in prompt]
