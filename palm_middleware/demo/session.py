"""A scripted session through the proxy: users ask, compare two replies, and the proxy learns.

Each round, every user asks one prompt with model ``auto`` (the proxy routes it to the member
for their current inferred weights, clamped by the policy), asks ``/palm/v1/compare`` for the
A/B question that tells most about them, gets the other side's reply to the same prompt, and
sends the pairwise choice their hidden weights make on the two real replies. At the end each
user is routed once more; one user asks a risky question that the policy's guard must stop.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..exceptions import InvalidParameterError
from ..offline.evaluation.prompts import EvalPrompt as Prompt
from ..offline.scoring.calibration import ScorerSet
from ..policy.bounds import BoundsPolicy
from ..portfolio.manifest import Portfolio
from .client import ChatReply, ProxyClient
from .users import ScriptedUser

__all__ = ["RoundRecord", "Session", "SessionResult", "UserSummary"]


@dataclass(frozen=True)
class RoundRecord:
    """One user's round: what was served, the A/B question and the answer."""

    user: str
    round: int
    prompt_id: str
    served: str | None
    reply: str
    pair: tuple[str, str] | None
    winner: str | None
    weights: Mapping[str, float]
    """Inferred weights after this round's feedback (posterior mean)."""


@dataclass(frozen=True)
class UserSummary:
    """Where a user ended, against where their hidden weights say they should be."""

    name: str
    about: str
    hidden: Mapping[str, float]
    inferred: Mapping[str, float]
    lower: Mapping[str, float]
    upper: Mapping[str, float]
    applied: Mapping[str, float]
    """Weights the policy applies (after clamping)."""
    rules_fired: tuple[str, ...]
    final_member: str | None
    final_reply: str
    best_for_hidden: str
    """argmax over members of hidden · r̂."""
    best_within_bounds: str
    """argmax over members of clamp(hidden) · r̂: the best the policy allows."""

    @property
    def converged(self) -> bool:
        """The user ends on the best member the bounds allow for their hidden weights."""
        return self.final_member == self.best_within_bounds


@dataclass
class SessionResult:
    """Everything a session did, JSON-ready with :meth:`to_dict`."""

    rounds: list[RoundRecord] = field(default_factory=list)
    users: list[UserSummary] = field(default_factory=list)
    guard: dict[str, Any] | None = None
    latencies: list[float] = field(default_factory=list)
    """Seconds per served reply (steady state: after each member's first request)."""
    tokens: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "rounds": [asdict(r) for r in self.rounds],
            "users": [{**asdict(u), "converged": u.converged} for u in self.users],
            "guard": self.guard,
            "latency_s": _latency(self.latencies, self.tokens),
        }

    def table(self) -> str:
        """The summary as a Markdown table."""
        traits = list(self.users[0].hidden) if self.users else []
        abbrev = "/".join(t[:5] for t in traits)
        lines = [
            f"| user | hidden ({abbrev}) | inferred ({abbrev}) | applied by the policy | "
            "rules | served at the end | best for hidden | best within bounds | ok |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for u in self.users:

            def fmt(w: Mapping[str, float]) -> str:
                return " ".join(f"{w[t]:.2f}" for t in traits)

            lines.append(
                f"| {u.name} ({u.about}) | {fmt(u.hidden)} | {fmt(u.inferred)} | "
                f"{fmt(u.applied)} | {', '.join(u.rules_fired) or '—'} | {u.final_member} | "
                f"{u.best_for_hidden} | {u.best_within_bounds} | "
                f"{'yes' if u.converged else 'no'} |"
            )
        return "\n".join(lines)


def _latency(seconds: Sequence[float], tokens: Sequence[int]) -> dict[str, float]:
    if not seconds:
        return {}
    qs = statistics.quantiles(seconds, n=20) if len(seconds) > 1 else [seconds[0]] * 19
    total = sum(seconds)
    return {
        "n": len(seconds),
        "p50": statistics.median(seconds),
        "p95": qs[18],
        "tokens_per_s": sum(tokens) / total if total else 0.0,
    }


def _excerpt(text: str, n: int = 90) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


class Session:
    """Scripted users against a running proxy.

    Args:
        url: Proxy base URL.
        keys: User name → that user's API key (the only thing that identifies them).
        users: The scripted users.
        portfolio: The deployment's portfolio (for the "best member" columns).
        policy: The deployment's bounds policy (for "best within bounds").
        scorers: Trait scorers the users judge replies with.
        prompts: Non-risky prompts, used in turn.
        risky: A prompt the guard must stop (None: no guard check).
        rounds: A/B rounds per user.
        max_tokens: Cap per reply (the members were measured with the same cap).
        echo: Where progress lines go (None: silent).
    """

    def __init__(
        self,
        url: str,
        keys: Mapping[str, str],
        users: Sequence[ScriptedUser],
        portfolio: Portfolio,
        policy: BoundsPolicy,
        scorers: ScorerSet,
        prompts: Sequence[Prompt],
        *,
        risky: Prompt | None = None,
        rounds: int = 8,
        max_tokens: int = 96,
        echo: Callable[[str], None] | None = print,
    ) -> None:
        missing = [u.name for u in users if u.name not in keys]
        if missing:
            raise InvalidParameterError(f"no API key for users {missing}")
        self.clients = {u.name: ProxyClient(url, keys[u.name]) for u in users}
        self.users = list(users)
        self.portfolio = portfolio
        self.policy = policy
        self.scorers = scorers
        self.prompts = list(prompts)
        self.risky = risky
        self.rounds = rounds
        self.max_tokens = max_tokens
        self.echo = echo or (lambda _line: None)
        self._warm: set[str] = set()

    def _score(self, text: str, prompt: str) -> dict[str, float]:
        return {
            t: float(np.clip(s.score_many([text], [prompt])[0], 0.0, 1.0))
            for t, s in self.scorers.scorers.items()
        }

    def _chat(
        self, result: SessionResult, user: str, text: str, compare: str | None = None
    ) -> ChatReply:
        reply = self.clients[user].chat(
            [{"role": "user", "content": text}], compare=compare, max_tokens=self.max_tokens
        )
        if reply.member is not None:
            # A member's first request loads its session: not steady state.
            if reply.member in self._warm:
                result.latencies.append(reply.seconds)
                result.tokens.append(reply.completion_tokens)
            self._warm.add(reply.member)
        return reply

    def _best(self, weights: Mapping[str, float]) -> str:
        w = np.array([weights[t] for t in self.portfolio.space.names])
        return self.portfolio.ids[int(np.argmax(self.portfolio.rewards @ w))]

    def run(self) -> SessionResult:
        """Play every round for every user, then the final routing and the guard check."""
        result = SessionResult()
        n = len(self.prompts)
        for r in range(self.rounds):
            for k, user in enumerate(self.users):
                prompt = self.prompts[(k * 7 + r) % n]
                result.rounds.append(self._round(result, user, r, prompt))
        for k, user in enumerate(self.users):
            last = self.prompts[(k * 7 + self.rounds) % n]
            result.users.append(self._summary(result, user, last))
        if self.risky is not None and self.users:
            who = self.users[-1].name
            reply = self._chat(result, who, self.risky.text)
            result.guard = {
                "user": who,
                "prompt": self.risky.text,
                "blocked_by": reply.blocked_by,
                "member": reply.member,
                "message": reply.text,
            }
            verdict = (
                f"blocked by {reply.blocked_by}"
                if reply.blocked_by
                else f"NOT blocked, served by {reply.member}"
            )
            self.echo(
                f"\nguard  {who} asks: {self.risky.text!r}\n       {verdict}: "
                f"{_excerpt(reply.text, 160)}"
            )
        return result

    def _round(
        self, result: SessionResult, user: ScriptedUser, r: int, prompt: Prompt
    ) -> RoundRecord:
        client = self.clients[user.name]
        text = user.message(prompt.text, r)  # now and then with "Keep it short." etc.
        served = self._chat(result, user.name, text)
        replies: dict[str, ChatReply] = {}
        if served.member is not None:
            replies[served.member] = served
        # The pair starts from the member whose reply the user was shown.
        pair = client.compare(served.member) if served.member is not None else None
        a, b = pair if pair is not None else ("-", "-")
        for m in pair or ():
            if m not in replies:
                got = self._chat(result, user.name, text, compare=m)
                if got.member == m:
                    replies[m] = got
        winner = None
        if a in replies and b in replies and a != b:
            choice = user.prefers(
                self._score(replies[a].text, text), self._score(replies[b].text, text)
            )
            if choice is not None:
                winner, loser = (a, b) if choice == 0 else (b, a)
                client.feedback({"type": "pairwise", "winner": winner, "loser": loser})
        weights = client.profile()["weights"]
        w = " ".join(f"{t[:5]}={v:.2f}" for t, v in weights.items())
        ab = f"{a} vs {b} -> {winner or 'no choice'}"
        said = f" +{user.says!r}" if text != prompt.text else ""
        self.echo(
            f"r{r + 1:<2} {user.name:<6} served {served.member or '-':<12} "
            f"{_excerpt(served.text, 60)!r:<64} A/B {ab:<34} {w}{said}"
        )
        return RoundRecord(
            user.name, r + 1, prompt.id, served.member, served.text, pair, winner, weights
        )

    def _summary(self, result: SessionResult, user: ScriptedUser, prompt: Prompt) -> UserSummary:
        final = self._chat(result, user.name, prompt.text)
        prof = self.clients[user.name].profile()
        names = self.portfolio.space.names
        hidden = np.array([user.hidden[t] for t in names])
        clamped = self.policy.clamp(hidden, evidence=1e9).weights
        return UserSummary(
            name=user.name,
            about=user.about,
            hidden=dict(user.hidden),
            inferred=prof["weights"],
            lower=prof["credible_interval"]["lower"],
            upper=prof["credible_interval"]["upper"],
            applied=prof["effective_weights"],
            rules_fired=tuple(prof.get("rules_fired", ())),
            final_member=final.member,
            final_reply=final.text,
            best_for_hidden=self._best(user.hidden),
            best_within_bounds=self._best(dict(zip(names, clamped))),
        )
