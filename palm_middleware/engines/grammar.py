"""Grammar-constrained decoding: JSON schema, regex and Lark, through llguidance.

A :class:`Grammar` rides on :class:`~palm_middleware.engines.base.GenerationParams`; the engine
starts a :class:`Constraint` per request, which masks the logits of every step to the tokens
the grammar allows, so even a model with random weights writes text the grammar accepts (JSON
that validates against its schema), or runs out of ``max_tokens`` first.

Why llguidance (``pip install 'palm-middleware[grammar]'``): one abi3 wheel of 3 MB with no
dependencies, built from the ``tokenizers`` JSON we already load, JSON schema + regex + Lark in
one engine, and a token mask in tens of microseconds per step (an Earley parser over a lazy
lexer: no vocabulary-wide precompilation per schema). outlines-core (2.3 MB, no deps) does JSON
schema and regex only, compiling a full DFA index per schema up front; xgrammar needs torch,
transformers and triton, far too heavy for a CPU serving image.
"""

from __future__ import annotations

import functools
import json
import threading
import weakref
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from ..exceptions import GenerationError, InvalidParameterError

__all__ = [
    "constrained_token",
    "Constraint",
    "Grammar",
    "GrammarKind",
    "available",
    "import_llguidance",
]

GrammarKind = Literal["json_schema", "regex", "lark"]

#: What a forbidden token's logit becomes: finite (0 * inf would be NaN), far below any logit.
_FORBIDDEN = np.float32(1e30)

#: Compact JSON, no free whitespace: a small model cannot pad the answer with blanks forever.
_JSON_OPTIONS = {"whitespace_flexible": False}


def available() -> bool:
    """Whether llguidance is installed (the ``grammar`` extra)."""
    try:
        import_llguidance()
    except GenerationError:
        return False
    return True


def import_llguidance() -> ModuleType:
    """The ``llguidance`` module, or an error that names the extra to install."""
    try:
        import llguidance
    except ImportError as exc:
        raise GenerationError(
            "constrained output (response_format, tools) needs llguidance; install it with "
            "`pip install 'palm-middleware[grammar]'`"
        ) from exc
    return llguidance


@dataclass(frozen=True)
class Grammar:
    """What the output must match.

    Attributes:
        kind: ``json_schema`` (``source`` is the schema as JSON text), ``regex`` or ``lark``.
        source: The schema, pattern or grammar text.
        field: The request field it came from, named in errors (``response_format``, ``tools``).
    """

    kind: GrammarKind
    source: str
    field: str = "grammar"

    @classmethod
    def json_schema(cls, schema: Mapping[str, Any] | bool, field: str = "grammar") -> Grammar:
        """Output is one JSON value valid against ``schema``."""
        if not isinstance(schema, Mapping | bool):
            raise InvalidParameterError(
                f"{field}: a JSON schema must be an object; got {type(schema).__name__}"
            )
        return cls("json_schema", json.dumps(schema), field)

    @classmethod
    def json_object(cls, field: str = "grammar") -> Grammar:
        """Output is any JSON object (OpenAI's ``json_object`` mode)."""
        return cls.json_schema({"type": "object"}, field)

    @classmethod
    def regex(cls, pattern: str, field: str = "grammar") -> Grammar:
        """Output matches ``pattern`` (Rust regex syntax, anchored at both ends)."""
        return cls("regex", pattern, field)

    @classmethod
    def lark(cls, text: str, field: str = "grammar") -> Grammar:
        """Output matches a Lark grammar (llguidance's dialect: ``%json {...}`` embeds a schema)."""
        return cls("lark", text, field)

    def __post_init__(self) -> None:
        if self.kind not in ("json_schema", "regex", "lark") or not isinstance(self.source, str):
            raise InvalidParameterError(
                f"{self.field}: a grammar is (json_schema|regex|lark, text); "
                f"got ({self.kind!r}, {type(self.source).__name__})"
            )

    def compile(self) -> str:
        """The llguidance grammar, validated; an error names :attr:`field` and the fault.

        Cached per grammar: requests with the same schema compile it once.
        """
        return _compile(self)

    def _compile(self) -> str:
        llg = import_llguidance()
        matcher = llg.LLMatcher
        try:
            if self.kind == "json_schema":
                text = matcher.grammar_from_json_schema(self.source, overrides=_JSON_OPTIONS)
            elif self.kind == "regex":
                text = matcher.grammar_from_regex(self.source)
            else:
                text = matcher.grammar_from_lark(self.source)
        except ValueError as exc:
            raise InvalidParameterError(f"{self.field}: invalid {self.kind}: {exc}") from exc
        failed, messages = matcher.validate_grammar_with_warnings(text)
        if failed:
            raise InvalidParameterError(f"{self.field}: invalid {self.kind}: {messages[0]}")
        return str(text)


@functools.lru_cache(maxsize=256)
def _compile(grammar: Grammar) -> str:
    return grammar._compile()


class TokenizedModel(Protocol):
    """What a constraint needs of a model (:class:`~palm_middleware.engines.model.OnnxModel`)."""

    tokenizer: Any
    eos_token_ids: frozenset[int]
    vocab_size: int | None


_tokenizers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_tokenizers_lock = threading.Lock()


def _ll_tokenizer(model: TokenizedModel) -> Any:
    """llguidance's view of the model's tokenizer, built once per model (shared by requests)."""
    with _tokenizers_lock:
        found = _tokenizers.get(model)
        if found is None:
            llg = import_llguidance()
            n_vocab = model.vocab_size or int(
                model.tokenizer.get_vocab_size(with_added_tokens=True)
            )
            eos = sorted(model.eos_token_ids)
            if not eos:
                raise GenerationError(
                    "constrained output needs an end-of-sequence token; the model names none "
                    "(generation_config.json eos_token_id or tokenizer_config.json eos_token)"
                )
            found = llg.LLTokenizer(model.tokenizer.to_str(), n_vocab=n_vocab, eos_token=eos)
            _tokenizers[model] = found
        return found


class Constraint:
    """One request's grammar state: masks each step's logits, then advances by the sampled token.

    Args:
        grammar: What the output must match.
        model: The model whose tokens are masked.
    """

    def __init__(self, grammar: Grammar, model: TokenizedModel) -> None:
        llg = import_llguidance()
        self.grammar = grammar
        tok = _ll_tokenizer(model)
        self.n_vocab = int(tok.vocab_size)
        self._matcher = llg.LLMatcher(tok, grammar.compile(), log_level=0)
        if self._matcher.is_error():
            raise InvalidParameterError(
                f"{grammar.field}: invalid {grammar.kind}: {self._matcher.get_error()}"
            )
        self._bits = np.zeros((self.n_vocab + 31) // 32, dtype=np.int32)
        self._penalty = np.empty(self.n_vocab, dtype=np.float32)
        self._out = np.empty(0, dtype=np.float32)

    @property
    def done(self) -> bool:
        """The grammar is complete and allows nothing more: generation ends here."""
        return bool(self._matcher.is_stopped())

    def allowed(self) -> npt.NDArray[np.uint8]:
        """1 for each token allowed next, 0 for the others, shape (n_vocab,)."""
        self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        if self._matcher.is_error():
            raise GenerationError(f"{self.grammar.field}: {self._matcher.get_error()}")
        return np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self.n_vocab]

    def mask(self, logits: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """``logits`` with every token the grammar forbids pushed to ``-1e30``.

        The result is this constraint's buffer, valid until the next call (the sampler copies
        it). Arithmetic into reused buffers, not ``np.where``: a boolean select over 50k
        random-looking entries costs ~250 µs (branch mispredictions), a fresh 200 kB array per
        step ~25 µs of page faults; mask and advance together take ~0.1 ms a token on a 49k
        vocabulary (bench/bench_grammar.py).
        """
        allowed = self.allowed()
        n = min(self.n_vocab, logits.shape[0])
        if not allowed[:n].any():
            raise GenerationError(
                f"{self.grammar.field}: the grammar allows no token the model can produce here"
            )
        penalty = self._penalty[:n]
        np.copyto(penalty, allowed[:n], casting="unsafe")  # 0/1 as float32, in place
        penalty -= 1.0
        penalty *= _FORBIDDEN
        if self._out.shape != logits.shape:  # logits wider than the tokenizer: never allowed
            self._out = np.full(logits.shape, -_FORBIDDEN, dtype=np.float32)
        np.add(logits[:n], penalty, out=self._out[:n], casting="unsafe")
        return self._out

    def advance(self, token: int) -> None:
        """Consume the sampled token (one the mask allowed)."""
        if not self._matcher.consume_token(token):
            error = self._matcher.get_error()
            raise GenerationError(f"{self.grammar.field}: token {token} broke the grammar: {error}")


def constrained_token(
    sample: Callable[[npt.NDArray[np.floating]], int],
    logits: npt.NDArray[np.floating],
    constraint: Constraint | None,
    eos_token_ids: Collection[int],
) -> int:
    """The next token: ``sample`` over the logits the constraint allows, and the constraint
    advanced past it (an end-of-sequence token ends the output, so it does not advance).

    One step for every decode loop, so raw-loop and GenAI engines constrain alike."""
    if constraint is not None:
        logits = constraint.mask(logits)
    token = sample(logits)
    if constraint is not None and token not in eos_token_ids:
        constraint.advance(token)
    return token
