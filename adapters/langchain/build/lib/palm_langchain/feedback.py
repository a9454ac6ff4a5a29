"""Feedback from LangChain apps: the user from the config, the decision from the reply."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig

from palm_middleware.exceptions import IdentityError, InvalidEventError
from palm_middleware.pipeline import Palm
from palm_middleware.preferences.events import (
    ExplicitWeights,
    FeedbackEvent,
    Pairwise,
    Regenerate,
    Thumb,
)

from ._messages import user_id_from

__all__ = ["PalmFeedback", "decision_of"]


def decision_of(message: BaseMessage) -> dict[str, Any]:
    """The PALM decision a reply of :class:`PalmChatModel` (or an agent) carries."""
    palm = message.response_metadata.get("palm")
    if not isinstance(palm, Mapping) or "decision_id" not in palm:
        raise InvalidEventError("this message carries no PALM decision (not a PALM reply)")
    return dict(palm)


class PalmFeedback:
    """Record a user's feedback on replies; the user is the config's, as for the model."""

    def __init__(self, palm: Palm, *, user_config_key: str = "user_id") -> None:
        self.palm = palm
        self.user_config_key = user_config_key

    def _user(self, config: RunnableConfig) -> str:
        user = user_id_from(config, self.user_config_key)
        if not isinstance(user, str) or not user:
            raise IdentityError(f'feedback needs config["configurable"][{self.user_config_key!r}]')
        return user

    def record(self, config: RunnableConfig, event: FeedbackEvent) -> bool:
        """Record any event (returns False for a repeated ``event_id``)."""
        return self.palm.record_feedback(self._user(config), event)

    async def arecord(self, config: RunnableConfig, event: FeedbackEvent) -> bool:
        """Async :meth:`record`."""
        return await self.palm.arecord_feedback(self._user(config), event)

    def thumb(self, config: RunnableConfig, reply: BaseMessage, up: bool) -> bool:
        """Thumbs up/down on a reply."""
        return self.record(config, Thumb(up=up, decision_id=decision_of(reply)["decision_id"]))

    def regenerate(self, config: RunnableConfig, reply: BaseMessage) -> bool:
        """The user asked for another answer (a weak thumbs-down)."""
        return self.record(config, Regenerate(decision_id=decision_of(reply)["decision_id"]))

    def choose(self, config: RunnableConfig, winner: BaseMessage, loser: BaseMessage) -> bool:
        """The user preferred ``winner`` over ``loser`` (replies of two different members)."""
        return self.record(
            config,
            Pairwise(winner=decision_of(winner)["member"], loser=decision_of(loser)["member"]),
        )

    def set_weights(
        self, config: RunnableConfig, weights: Mapping[str, float], confidence: float = 1.0
    ) -> bool:
        """Weights the user set explicitly."""
        return self.record(config, ExplicitWeights(weights=dict(weights), confidence=confidence))
