"""Scripted users: hidden weights over traits, judging real replies with the trait scorers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._yaml import load_yaml_file
from ..exceptions import ConfigError, InvalidWeightsError

__all__ = ["ScriptedUser", "default_users", "load_users"]


@dataclass(frozen=True)
class ScriptedUser:
    """A user whose preferences the deployment does not see.

    The user reads two replies and prefers the one with the higher hidden scalarized reward
    ``Σ hidden[t] · score_t(reply)``, where ``score_t`` are the deployment's own trait scorers:
    the same yardstick the members' reward profiles were measured with, applied to one reply.
    """

    name: str
    hidden: Mapping[str, float]
    about: str = ""
    says: str = ""
    """What the user sometimes adds to a message ("Keep it short."): a text cue."""
    says_every: int = 3
    """Every how many messages the user says it (the cue lexicon turns it into evidence)."""

    def __post_init__(self) -> None:
        total = sum(self.hidden.values())
        if any(v < 0 for v in self.hidden.values()) or abs(total - 1.0) > 1e-6:
            raise InvalidWeightsError(
                f"user {self.name!r}: hidden weights must be >= 0 and sum to 1, got "
                f"{dict(self.hidden)}"
            )

    def message(self, text: str, turn: int) -> str:
        """The user's ``turn``-th message (0-based) asking ``text``."""
        if self.says and self.says_every > 0 and turn % self.says_every == self.says_every - 1:
            return f"{text} {self.says}"
        return text

    def utility(self, scores: Mapping[str, float]) -> float:
        """Hidden scalarized reward of one reply's trait scores."""
        return sum(w * float(scores[t]) for t, w in self.hidden.items())

    def prefers(self, a: Mapping[str, float], b: Mapping[str, float]) -> int | None:
        """0 if reply ``a`` is better for this user, 1 if ``b``, None on a tie."""
        ua, ub = self.utility(a), self.utility(b)
        if abs(ua - ub) < 1e-9:
            return None
        return 0 if ua > ub else 1


_ABOUT = {
    "brevity": "wants it short",
    "structure": "wants lists and steps",
    "formality": "wants formal prose",
}
_SAYS = {
    "brevity": "Keep it short.",
    "structure": "As a list, please.",
    "formality": "Please answer formally.",
}
_NAMES = ("ana", "ben", "chloe", "dev", "eve", "finn")


def default_users(traits: Sequence[str], *, focus: float = 0.9) -> list[ScriptedUser]:
    """One user leaning on each trait (``focus`` of the weight), then one balanced user.

    Each leaning user now and then says what they want ("Keep it short."), as people do.
    """
    if len(traits) > len(_NAMES) - 1:
        raise InvalidWeightsError(f"default_users supports up to {len(_NAMES) - 1} traits")
    users = []
    rest = (1.0 - focus) / max(len(traits) - 1, 1)
    for name, t in zip(_NAMES, traits):
        hidden = {u: (focus if u == t else rest) for u in traits}
        users.append(
            ScriptedUser(name, hidden, _ABOUT.get(t, f"leans on {t}"), says=_SAYS.get(t, ""))
        )
    even = {t: 1.0 / len(traits) for t in traits}
    users.append(ScriptedUser(_NAMES[len(traits)], even, "wants a bit of everything"))
    return users


def load_users(path: str | Path, traits: Sequence[str]) -> list[ScriptedUser]:
    """Users from YAML: ``users: [{name, hidden: {trait: weight}, about}]``.

    Raises:
        ConfigError: naming file:line:col for a bad field, unknown trait or weights that are
            not a distribution over exactly ``traits``.
    """
    doc = load_yaml_file(path, ConfigError)
    items = doc.data.get("users") if isinstance(doc.data, dict) else None
    if not isinstance(items, list) or not items:
        raise ConfigError(
            doc.issue(
                (), "a users file needs a non-empty 'users' list of {name, hidden, about, says}"
            )
        )
    users: list[ScriptedUser] = []
    for i, item in enumerate(items):
        here: tuple[str | int, ...] = ("users", i)
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(doc.issue(here, "each user needs a string 'name'"))
        hidden = item.get("hidden")
        if (
            not isinstance(hidden, dict)
            or set(hidden) != set(traits)
            or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in hidden.values()
            )
        ):
            raise ConfigError(
                doc.issue(
                    (*here, "hidden"),
                    f"hidden must give a number for each "
                    f"of the traits {list(traits)}; got {hidden!r}",
                )
            )
        try:
            users.append(
                ScriptedUser(
                    item["name"],
                    {t: float(hidden[t]) for t in traits},
                    str(item.get("about", "")),
                    str(item.get("says", "")),
                )
            )
        except InvalidWeightsError as exc:
            raise ConfigError(doc.issue((*here, "hidden"), str(exc))) from None
    return users
