"""The ``Engine`` protocol and the values that cross it.

An engine runs one portfolio member: it takes a prompt (a raw string, or chat messages rendered
with the model's chat template) and :class:`GenerationParams`, and returns a :class:`Generation`
or streams :class:`Chunk` objects. Every engine has sync and async twins:
``generate``/``agenerate``, ``stream``/``astream``; the async ones never block the event loop.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from ..exceptions import GenerationError

if TYPE_CHECKING:
    from .grammar import Grammar

__all__ = [
    "Chunk",
    "Engine",
    "FinishReason",
    "Generation",
    "GenerationParams",
    "Message",
    "Prompt",
    "Usage",
]

Message = Mapping[str, str]
"""One chat message: ``{"role": "user", "content": "..."}``."""

Prompt = str | Sequence[Message]
"""A raw prompt string (tokenized as is) or chat messages (rendered with the chat template)."""

FinishReason = Literal["stop", "length"]
"""``"stop"``: an end-of-sequence token or a stop sequence; ``"length"``: ``max_tokens`` or the
model's context window was reached."""


@dataclass(frozen=True)
class GenerationParams:
    """Decoding parameters of one request.

    Attributes:
        max_tokens: Most new tokens to generate (>= 1).
        temperature: 0 means greedy decoding; otherwise logits are divided by it before sampling.
        top_p: Nucleus sampling: keep the smallest set of tokens whose probability sums to
            ``top_p`` (in [0, 1], OpenAI's range; 1 disables it, 0 keeps only the most likely
            token).
        top_k: Keep the ``top_k`` most likely tokens (0 disables it).
        seed: Seed of the request's own ``np.random.Generator``; ``None`` draws fresh entropy.
        stop: Stop sequences; the text ends before the first one found (it is not returned).
        grammar: What the output must match (JSON schema, regex, Lark); every step's logits
            are masked to the tokens it allows (:mod:`~palm_middleware.engines.grammar`).
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    grammar: Grammar | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):  # a lone string is one stop sequence, not characters
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        checks: list[tuple[str, bool, str]] = [
            ("max_tokens", _is_int(self.max_tokens) and self.max_tokens >= 1, "an int >= 1"),
            (
                "temperature",
                _is_real(self.temperature) and 0.0 <= self.temperature < math.inf,
                "a finite float >= 0",
            ),
            ("top_p", _is_real(self.top_p) and 0.0 <= self.top_p <= 1.0, "a float in [0, 1]"),
            ("top_k", _is_int(self.top_k) and self.top_k >= 0, "an int >= 0"),
            (
                "seed",
                self.seed is None or (_is_int(self.seed) and self.seed >= 0),
                "None or an int >= 0",
            ),
            (
                "stop",
                all(isinstance(s, str) and s for s in self.stop),
                "a list of non-empty strings",
            ),
            ("grammar", self.grammar is None or _is_grammar(self.grammar), "a Grammar or None"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise GenerationError(
                    f"generation parameter {name!r} must be {want}; got {getattr(self, name)!r}"
                )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> GenerationParams:
        """Build from a mapping such as a manifest's ``generation:`` block; unknown keys fail."""
        return cls().merged(values)

    def merged(self, values: Mapping[str, Any] | None) -> GenerationParams:
        """A copy with ``values`` (a mapping of field names) applied on top."""
        if not values:
            return self
        known = set(self.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise GenerationError(
                f"unknown generation parameter(s) {unknown}; known: {sorted(known)}"
            )
        kwargs = dict(values)
        if "stop" in kwargs and not isinstance(kwargs["stop"], str):
            kwargs["stop"] = tuple(kwargs["stop"])
        return replace(self, **kwargs)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_grammar(v: object) -> bool:
    from .grammar import Grammar

    return isinstance(v, Grammar)


def _is_real(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


@dataclass(frozen=True)
class Usage:
    """Token counts of one request (``completion_tokens`` counts every sampled token)."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Generation:
    """The result of a non-streaming request."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    usage: Usage
    model: str = ""


@dataclass(frozen=True)
class Chunk:
    """One streamed piece of text; the last chunk carries ``finish_reason`` and ``usage``."""

    text: str
    token_ids: tuple[int, ...] = field(default=())
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@runtime_checkable
class Engine(Protocol):
    """Runs one portfolio member."""

    @property
    def name(self) -> str:
        """A short identifier of the member (model folder and variant)."""
        ...

    def generate(self, prompt: Prompt, params: GenerationParams | None = None) -> Generation:
        """Generate a full completion."""
        ...

    async def agenerate(self, prompt: Prompt, params: GenerationParams | None = None) -> Generation:
        """Async twin of :meth:`generate`; runs off the event loop."""
        ...

    def stream(self, prompt: Prompt, params: GenerationParams | None = None) -> Iterator[Chunk]:
        """Generate, yielding text as soon as it is complete UTF-8."""
        ...

    def astream(
        self, prompt: Prompt, params: GenerationParams | None = None
    ) -> AsyncIterator[Chunk]:
        """Async twin of :meth:`stream`."""
        ...
