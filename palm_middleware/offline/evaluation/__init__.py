"""Measuring members: prompt sets, the reply cache, and the runner behind ``palm eval``."""

from __future__ import annotations

from .cache import ReplyCache
from .prompts import EvalPrompt, PromptSet, load_prompt_set
from .runner import (
    MemberResult,
    evaluate_portfolio,
    update_portfolio,
    write_candidates,
    write_replies,
)

__all__ = [
    "EvalPrompt",
    "evaluate_portfolio",
    "load_prompt_set",
    "MemberResult",
    "PromptSet",
    "ReplyCache",
    "update_portfolio",
    "write_candidates",
    "write_replies",
]
