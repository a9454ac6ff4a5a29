"""Grammar-constrained decoding on the tiny random decoder (real ONNX Runtime, real llguidance).

The tiny model's weights are random: an answer that parses and validates is the constraint's
work alone.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema
import pytest

from palm_middleware.engines._runtime import RuntimeOptions
from palm_middleware.engines.base import GenerationParams
from palm_middleware.engines.grammar import Constraint, Grammar, available, import_llguidance
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.engines.registry import SessionRegistry
from palm_middleware.exceptions import GenerationError, InvalidParameterError

from .conftest import TinyModel

pytest.importorskip("llguidance")

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 6},
        "n": {"type": "integer", "minimum": -5, "maximum": 500},
        "ok": {"type": "boolean"},
        "kind": {"enum": ["a", "b", None]},
    },
    "required": ["city", "n", "ok", "kind"],
    "additionalProperties": False,
}
HI = [{"role": "user", "content": "Hello world"}]


def params(grammar: Grammar, seed: int | None = None, **kw: Any) -> dict[str, Any]:
    sampled = {"temperature": 1.0, "top_k": 50, "seed": seed} if seed is not None else {}
    return {"max_tokens": 60, "grammar": grammar, **sampled, **kw}


@pytest.mark.parametrize("seed", [None, 0, 1, 2, 3])
def test_json_schema_output_validates(engine: OnnxEngine, seed: int | None) -> None:
    out = engine.generate(HI, params(Grammar.json_schema(SCHEMA), seed))
    assert out.finish_reason == "stop"
    jsonschema.validate(json.loads(out.text), SCHEMA)
    assert out.usage.completion_tokens == len(out.token_ids)


def test_unconstrained_output_is_not_json(engine: OnnxEngine) -> None:
    """The control: the same model and prompt without a grammar writes noise."""
    out = engine.generate(HI, {"max_tokens": 20})
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.text)


@pytest.mark.parametrize("seed", [None, 4, 5])
def test_regex_and_lark(engine: OnnxEngine, seed: int | None) -> None:
    pattern = r"[a-z]{2,4}@[0-9]{2}\.(com|org)"
    out = engine.generate(HI, params(Grammar.regex(pattern), seed))
    assert re.fullmatch(pattern, out.text) and out.finish_reason == "stop"
    lark = 'start: answer " because " REASON\nanswer: "yes" | "no"\nREASON: /[a-z ]{1,12}/'
    out = engine.generate(HI, params(Grammar.lark(lark), seed))
    assert re.fullmatch(r"(yes|no) because [a-z ]{1,12}", out.text), out.text


def test_stream_equals_generate_and_async(engine: OnnxEngine) -> None:
    p = params(Grammar.json_schema(SCHEMA))
    whole = engine.generate(HI, p)
    chunks = list(engine.stream(HI, p))
    assert "".join(c.text for c in chunks) == whole.text
    assert chunks[-1].finish_reason == "stop"
    assert asyncio.run(engine.agenerate(HI, p)).text == whole.text


def test_max_tokens_cuts_with_length(engine: OnnxEngine) -> None:
    out = engine.generate(HI, params(Grammar.json_schema(SCHEMA), max_tokens=3))
    assert out.finish_reason == "length" and out.text.startswith("{")


def test_batched_decode_keeps_each_requests_grammar(tiny: TinyModel) -> None:
    """Concurrent constrained requests in one batched run each get their own valid answer."""
    registry = SessionRegistry(RuntimeOptions(batch_decode=True))
    engine = OnnxEngine(tiny.path, registry=registry)
    plain = OnnxEngine(tiny.path)
    grammars = [Grammar.json_schema(SCHEMA), Grammar.regex(r"[0-9]{3}-[a-z]{3}")] * 2
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda g: engine.generate(HI, params(g)), grammars))
    for g, out in zip(grammars, outs, strict=True):
        assert out.text == plain.generate(HI, params(g)).text
    jsonschema.validate(json.loads(outs[0].text), SCHEMA)
    assert re.fullmatch(r"[0-9]{3}-[a-z]{3}", outs[1].text)
    assert max(registry.get(tiny.path).batcher.batch_sizes) > 1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("grammar", "needle"),
    [
        (Grammar.regex("((", field="response_format"), "response_format: invalid regex"),
        (Grammar.json_schema({"type": "nope"}, field="tools"), "tools: invalid json_schema"),
        (Grammar.lark("start: undefined_rule"), "grammar: invalid lark"),
    ],
)
def test_bad_grammars_name_their_field(engine: OnnxEngine, grammar: Grammar, needle: str) -> None:
    with pytest.raises(InvalidParameterError, match=needle):
        engine.generate(HI, params(grammar))


def test_params_take_only_a_grammar() -> None:
    with pytest.raises(GenerationError, match="'grammar' must be a Grammar"):
        GenerationParams(grammar="{}")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="must be an object"):
        Grammar.json_schema([1, 2])  # type: ignore[arg-type]


def test_constraint_masks_to_the_grammar(engine: OnnxEngine) -> None:
    import numpy as np

    model = engine.model
    c = Constraint(Grammar.regex("ab"), model)
    logits = np.zeros(c.n_vocab, dtype=np.float32)
    masked = c.mask(logits)
    allowed = [int(i) for i in np.flatnonzero(masked > -1e29)]
    assert allowed and all(model.tokenizer.decode([i]) in ("a", "ab") for i in allowed)
    c.advance(allowed[0])
    assert not c.done or model.tokenizer.decode([allowed[0]]) == "ab"


def test_missing_llguidance_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llguidance", None)
    assert not available()
    with pytest.raises(GenerationError, match=r"palm-middleware\[grammar\]"):
        import_llguidance()
