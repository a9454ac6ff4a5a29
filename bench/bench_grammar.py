"""What a grammar costs per decoded token: constrained vs unconstrained decode, one process.

Modes, interleaved round by round on one :class:`OnnxEngine` (1 intra-op thread, greedy):

- ``plain``: no constraint (the same prompt);
- ``json``: ``response_format`` JSON schema (an object with strings, an integer, an array);
- ``regex``: a regex (a list of ISO dates).

Per mode: decode ms/token = (t(N) - t(1)) / (n - 1), where t(1) is a one-token run (prefill)
and n the tokens generated. Then the constraint alone: the tokens of the constrained answer
replayed through a fresh ``Constraint`` (mask + advance per token, on zero logits of the model's
vocabulary size), and the one-time costs (llguidance's tokenizer per model, the grammar per
request). The model: the ``palm prepare-base`` SmolLM2-135M folder (49,152 tokens) by default.

    python bench/bench_grammar.py --rounds 4 --reps 3 [--model FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from palm_middleware.engines._runtime import RuntimeOptions
from palm_middleware.engines.grammar import Constraint, Grammar, _ll_tokenizer
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.engines.registry import SessionRegistry
from palm_middleware.engines.structured import response_grammar

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "born": {"type": "integer"},
        "fields": {"type": "array", "items": {"type": "string"}},
        "summary": {"type": "string"},
    },
    "required": ["name", "born", "fields", "summary"],
    "additionalProperties": False,
}
#: One prompt for every mode: the same prefill and KV length, so only the constraint differs.
PROMPT = "Describe Ada Lovelace as JSON (name, born, fields, summary), then list 3 dates."
GRAMMARS: dict[str, Grammar | None] = {
    "plain": None,
    "json": response_grammar(
        {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    ),
    "regex": Grammar.regex(r"(18[0-9]{2}-[01][0-9]-[0-3][0-9]\n){3}"),
}


def _run(engine: OnnxEngine, mode: str, n: int) -> tuple[float, Any]:
    params: dict[str, Any] = {"max_tokens": n}
    if GRAMMARS[mode] is not None:
        params["grammar"] = GRAMMARS[mode]
    t0 = time.perf_counter()
    out = engine.generate([{"role": "user", "content": PROMPT}], params)
    return time.perf_counter() - t0, out


def _replay(engine: OnnxEngine, grammar: Grammar, tokens: tuple[int, ...]) -> tuple[float, float]:
    """(µs per token for mask + advance, ms to start the constraint) on recorded tokens."""
    import numpy as np

    model = engine.model
    t0 = time.perf_counter()
    c = Constraint(grammar, model)
    start = time.perf_counter() - t0
    logits = np.zeros(model.vocab_size or c.n_vocab, dtype=np.float32)
    steps = [t for t in tokens if t not in model.eos_token_ids]
    t0 = time.perf_counter()
    for t in steps:
        c.mask(logits)
        c.advance(t)
    return (time.perf_counter() - t0) / max(1, len(steps)) * 1e6, start * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(os.environ.get("PALM_CACHE", Path.home() / ".cache/palm-middleware"))
    ap.add_argument("--model", type=Path, default=default / "smollm2")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()

    engine = OnnxEngine(
        args.model, registry=SessionRegistry(RuntimeOptions(intra_op_threads=1))
    ).load()
    t0 = time.perf_counter()
    _ll_tokenizer(engine.model)
    tok_ms = (time.perf_counter() - t0) * 1e3
    decode: dict[str, list[float]] = {m: [] for m in GRAMMARS}
    lengths: dict[str, int] = {}
    outputs: dict[str, Any] = {}
    _run(engine, "plain", 4)  # warm-up
    for r in range(args.rounds):
        modes = list(GRAMMARS) if r % 2 == 0 else list(reversed(GRAMMARS))
        for mode in modes:
            for _ in range(args.reps):
                t1, _ = _run(engine, mode, 1)
                tn, out = _run(engine, mode, args.tokens)
                n = out.usage.completion_tokens
                decode[mode].append((tn - t1) / max(1, n - 1) * 1e3)
                lengths[mode], outputs[mode] = n, out
    plain = statistics.median(decode["plain"])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)")
    print(f"model: {args.model} (vocab {engine.model.vocab_size}), 1 thread, greedy")
    print(f"llguidance tokenizer, once per model: {tok_ms:.0f} ms")
    print("| mode | tokens | decode ms/token (median) | × plain | mask+advance µs/token | "
          "constraint start ms |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for mode, times in decode.items():
        med = statistics.median(times)
        g = GRAMMARS[mode]
        mask_us, start_ms = _replay(engine, g, outputs[mode].token_ids) if g else (0.0, 0.0)
        print(
            f"| {mode} | {lengths[mode]} | {med:.2f} | {med / plain:.3f} | "
            f"{mask_us:.0f} | {start_ms:.1f} |"
        )
    for mode in ("json", "regex"):
        print(f"{mode} answer: {json.dumps(outputs[mode].text)[:200]}")


if __name__ == "__main__":
    main()
