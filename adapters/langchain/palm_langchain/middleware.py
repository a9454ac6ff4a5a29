"""``PalmAgentMiddleware``: per-user members and bounds for ``create_agent``.

``before_model`` asks :class:`~palm_middleware.pipeline.Palm` for a decision before each model
call (ending the run with the policy's message when it blocks); ``wrap_model_call`` swaps in the
chosen member's chat model. The user comes from the runtime context (``user_id`` attribute or
key) or from ``config["configurable"]["user_id"]``.

Example (not run: needs members)::

    agent = create_agent(members["balanced"], tools=[search],
                         middleware=[PalmAgentMiddleware(palm, members)])
    agent.invoke({"messages": [("user", "hi")]}, {"configurable": {"user_id": uid}})
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

try:
    from langchain.agents.middleware import (
        AgentMiddleware,
        AgentState,
        ModelRequest,
        ModelResponse,
        hook_config,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "PalmAgentMiddleware needs langchain. Install it with: pip install 'palm-langchain[agents]'"
    ) from exc
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from typing_extensions import NotRequired

from palm_middleware.decision import Decision
from palm_middleware.exceptions import DecisionBlocked, IdentityError
from palm_middleware.pipeline import Palm

from ._messages import to_dicts, user_id_from
from .chat_models import decision_metadata

__all__ = ["PalmAgentMiddleware", "PalmAgentState"]


class PalmAgentState(AgentState[Any]):
    """Agent state plus the decision of the current model call."""

    palm_decision: NotRequired[dict[str, Any]]


class PalmAgentMiddleware(AgentMiddleware[PalmAgentState, Any, Any]):
    """Swap the model per user; block when the bounds policy says so.

    Args:
        palm: the pipeline.
        members: one chat model per portfolio member id.
        user_key: where the user id is: a runtime-context attribute/key, else a
            ``configurable`` key.
    """

    state_schema = PalmAgentState

    def __init__(
        self,
        palm: Palm,
        members: Mapping[str, BaseChatModel],
        *,
        user_key: str = "user_id",
        metadata_keys: Sequence[str] = ("cohort", "channel", "thread_id"),
    ) -> None:
        super().__init__()
        missing = sorted(set(palm.portfolio.ids) - set(members))
        if missing:
            raise ValueError(f"members has no chat model for portfolio members {missing}")
        self.palm = palm
        self.members = dict(members)
        self.user_key = user_key
        self.metadata_keys = tuple(metadata_keys)
        """Context or ``configurable`` keys given to the policy as request metadata (cohort,
        channel, ...): the app sets them from its own authentication, like the user id."""

    def _user(self, runtime: Any) -> str:
        context = getattr(runtime, "context", None)
        user = (
            context.get(self.user_key)
            if isinstance(context, Mapping)
            else getattr(context, self.user_key, None)
        )
        if user is None:
            from langgraph.config import get_config

            try:
                user = user_id_from(get_config(), self.user_key)
            except RuntimeError:  # outside a graph run
                user = None
        if not isinstance(user, str) or not user:
            raise IdentityError(
                f"PalmAgentMiddleware needs the authenticated user id as context.{self.user_key} "
                f'or config["configurable"][{self.user_key!r}]'
            )
        return user

    def _metadata(self, runtime: Any) -> dict[str, Any]:
        context = getattr(runtime, "context", None)
        found: dict[str, Any] = {}
        for k in self.metadata_keys:
            v = context.get(k) if isinstance(context, Mapping) else getattr(context, k, None)
            if v is not None:
                found[k] = v
        missing = [k for k in self.metadata_keys if k not in found]
        if missing:
            from langgraph.config import get_config

            try:
                configurable = get_config().get("configurable", {})
            except RuntimeError:  # outside a graph run
                configurable = {}
            found.update({k: configurable[k] for k in missing if k in configurable})
        return {("conversation_id" if k == "thread_id" else k): v for k, v in found.items()}

    @staticmethod
    def _update(decision: Decision) -> dict[str, Any]:
        return {"palm_decision": decision_metadata(decision)}

    @staticmethod
    def _blocked(exc: DecisionBlocked) -> dict[str, Any]:
        msg = AIMessage(
            content=exc.user_message,
            response_metadata={"palm": {"blocked": True, "rule_id": exc.rule_id}},
        )
        return {"messages": [msg], "jump_to": "end"}

    @hook_config(can_jump_to=["end"])
    def before_model(self, state: PalmAgentState, runtime: Any) -> dict[str, Any] | None:
        """Decide the member for this model call; end the run if the policy blocks it."""
        try:
            decision = self.palm.decide(
                self._user(runtime), to_dicts(state["messages"]), self._metadata(runtime)
            )
        except DecisionBlocked as exc:
            return self._blocked(exc)
        return self._update(decision)

    @hook_config(can_jump_to=["end"])
    async def abefore_model(self, state: PalmAgentState, runtime: Any) -> dict[str, Any] | None:
        """Async :meth:`before_model`."""
        try:
            decision = await self.palm.adecide(
                self._user(runtime), to_dicts(state["messages"]), self._metadata(runtime)
            )
        except DecisionBlocked as exc:
            return self._blocked(exc)
        return self._update(decision)

    def _swap(self, request: ModelRequest[Any]) -> ModelRequest[Any]:
        decision = request.state.get("palm_decision")
        if not isinstance(decision, Mapping):
            return request
        return request.override(model=self.members[str(decision["member"])])

    def wrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], ModelResponse[Any]]
    ) -> ModelResponse[Any]:
        """Call the chosen member instead of the agent's model."""
        return handler(self._swap(request))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any]:
        """Async :meth:`wrap_model_call`."""
        return await handler(self._swap(request))
