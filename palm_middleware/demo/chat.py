"""``palm chat``: talk to the portfolio in a terminal and teach it your preferences.

In-process (no proxy): the same :class:`~palm_middleware.pipeline.Palm` decision, the same ONNX
engines and store. After each reply, one key gives feedback: ``+`` / ``-`` thumbs, ``c``
compares the reply with another member's answer to the same message (then ``1`` or ``2``),
``p`` shows the profile, ``r`` resets it, ``q`` quits; anything else is the next message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from ..decision import Decision
from ..engines.members import engine_for_member
from ..engines.onnx import OnnxEngine
from ..engines.registry import SessionRegistry
from ..exceptions import (
    ComparisonUnavailable,
    DecisionBlocked,
    GenerationError,
    InvalidRequestError,
)
from ..pipeline import Palm
from ..preferences.events import Pairwise, Thumb

__all__ = ["Chat", "HELP"]

HELP = (
    "keys: + good  - bad  c compare with another member  p profile  r reset  q quit  "
    "(or type your next message)"
)


class Chat:
    """One user's terminal conversation with a deployment.

    Args:
        palm: The pipeline (portfolio, policy, store).
        user: Whose profile this is (a local tool: the person at the terminal).
        bases: Shared base name → model folder.
        root: Folder the manifest's relative paths are resolved against.
        max_tokens: Cap per reply.
        read: Reads one line (``None`` at end of input).
        out: Where replies and prompts are written.
    """

    def __init__(
        self,
        palm: Palm,
        user: str,
        *,
        bases: Mapping[str, str | Path],
        root: str | Path,
        max_tokens: int = 160,
        read: Callable[[str], str | None],
        out: TextIO,
    ) -> None:
        self.palm = palm
        self.user = user
        self.bases = dict(bases)
        self.root = Path(root)
        self.max_tokens = max_tokens
        self.read = read
        self.out = out
        self.registry = SessionRegistry()
        self._engines: dict[str, OnnxEngine] = {}
        self.history: list[dict[str, str]] = []
        self.last: Decision | None = None

    def _engine(self, member: str) -> OnnxEngine:
        engine = self._engines.get(member)
        if engine is None:
            engine = engine_for_member(
                self.palm.portfolio.member(member), self.registry, bases=self.bases, root=self.root
            )
            self._engines[member] = engine
        return engine

    def _say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _reply(self, decision: Decision, messages: list[dict[str, str]], label: str = "") -> str:
        """Stream the member's reply to the terminal; return its text."""
        self.out.write(f"{label}[{decision.member}] ")
        parts = []
        for chunk in self._engine(decision.member).stream(
            messages, {"max_tokens": self.max_tokens}
        ):
            parts.append(chunk.text)
            self.out.write(chunk.text)
            self.out.flush()
        self._say()
        return "".join(parts)

    def ask(self, text: str) -> None:
        """Route one message and print the reply (or the policy's refusal)."""
        messages = [*self.history, {"role": "user", "content": text}]
        try:
            decision = self.palm.decide(self.user, messages)
        except DecisionBlocked as exc:
            self._say(f"[blocked by {exc.rule_id}] {exc.user_message}")
            self.last = None
            return
        try:
            reply = self._reply(decision, messages)
        except GenerationError:
            if len(messages) == 1:
                raise
            # Too long for the model with the history: answer the message on its own.
            self._say("(history dropped: too long for the model)")
            messages = messages[-1:]
            reply = self._reply(decision, messages)
        # Keep the last exchanges only: small models have small context windows.
        self.history = [*messages, {"role": "assistant", "content": reply}][-4:]
        self.last = decision
        self._say(f"  ({decision.explanation})")

    def compare(self) -> None:
        """Answer the last message with a second member and ask which reply is better."""
        if self.last is None or len(self.history) < 2:
            self._say("nothing to compare yet: send a message first")
            return
        messages = self.history[:-1]
        try:
            _, other = self.palm.compare_candidates(self.user, served=self.last.member)
        except (ComparisonUnavailable, InvalidRequestError) as exc:
            # (the README's advice on a 409: ask for a thumb on the reply served instead)
            self._say(f"no comparison here: {exc}; rate the last reply with + or - instead")
            return
        second = self.palm.decide(self.user, messages, compare=other)
        if second.mode != "compare":
            self._say(f"the policy does not allow a comparison here: {second.explanation}")
            return
        self._say(f"[1] was {self.last.member}; here is [2]:")
        self._reply(second, messages, label="[2] ")
        choice = (self.read("which is better, 1 or 2 (enter: skip)? ") or "").strip()
        if choice in ("1", "2"):
            winner, loser = (
                (self.last.member, second.member)
                if choice == "1"
                else (second.member, self.last.member)
            )
            self.palm.record_feedback(self.user, Pairwise(winner=winner, loser=loser))
            self._say(f"recorded: {winner} over {loser}")

    def profile(self) -> None:
        """Print the user's inferred weights, intervals and what the policy applies."""
        prof: dict[str, Any] = self.palm.profile(self.user).to_dict()
        lo, hi = prof["credible_interval"]["lower"], prof["credible_interval"]["upper"]
        for t, w in prof["weights"].items():
            self._say(
                f"  {t:<12} {w:.2f}  (90%: {lo[t]:.2f}-{hi[t]:.2f})  applied "
                f"{prof['effective_weights'][t]:.2f}"
            )
        rules = ", ".join(prof["rules_fired"]) or "none"
        self._say(f"  {prof['n_events']} events; rules applied: {rules}")

    def run(self) -> int:
        """The read-eval loop; returns an exit code."""
        self._say(f"palm chat as {self.user!r}: members {', '.join(self.palm.portfolio.ids)}")
        self._say(HELP)
        while True:
            line = self.read("you> ")
            if line is None:
                return 0
            key = line.strip()
            if not key:
                continue
            if key == "q":
                return 0
            if key in ("+", "-"):
                if self.last is None:
                    self._say("no reply to rate yet")
                    continue
                self.palm.record_feedback(
                    self.user, Thumb(up=key == "+", decision_id=self.last.decision_id)
                )
                self._say(
                    f"recorded: thumb {'up' if key == '+' else 'down'} for {self.last.member}"
                )
            elif key == "c":
                self.compare()
            elif key == "p":
                self.profile()
            elif key == "r":
                self.palm.reset(self.user)
                self._say("profile reset")
            else:
                try:
                    self.ask(key)
                except GenerationError as exc:  # keep the session alive; say why
                    self._say(f"[error] {exc}")
