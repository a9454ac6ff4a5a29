"""Total decode throughput of 1, 2, 4 concurrent requests to one model, batching off vs on.

Each concurrency level runs ``c`` threads that each generate ``--tokens`` greedy tokens (EOS
removed from the bench models, so exactly that many) from prompts of different lengths, on one
``OnnxEngine`` with ``RuntimeOptions(batch_decode=False|True)``. Reported: total new tokens /
wall time (prefill included), median and best of ``--reps`` interleaved repetitions, and the
mean batch size the batcher ran. Asserts that every request's greedy tokens are the same
with batching on and off. Models come from ``bench/_models.py`` (``--cache``).

    python bench/bench_batch.py --models tiny gpt2-124m --cache /tmp/palm-bench-models
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import _models  # noqa: E402

from palm_middleware.engines import RuntimeOptions  # noqa: E402
from palm_middleware.engines.onnx import OnnxEngine  # noqa: E402
from palm_middleware.engines.registry import SessionRegistry  # noqa: E402

TEXT = "def step(self, feeds: Mapping[str, Array]) -> Array: return the logits of the last row"
LEVELS = (1, 2, 4)


def _prompts(n: int) -> list[str]:
    # Different lengths, so batched rows need left padding.
    return [TEXT[: 30 + 15 * i] for i in range(n)]


def _run(engine: OnnxEngine, c: int, tokens: int) -> tuple[float, list[tuple[int, ...]]]:
    """Total new tokens per second of ``c`` concurrent greedy requests, and their tokens."""
    params = {"max_tokens": tokens}
    with ThreadPoolExecutor(max_workers=c) as pool:
        start = time.perf_counter()
        gens = list(pool.map(lambda p: engine.generate(p, params), _prompts(c)))
        elapsed = time.perf_counter() - start
    return sum(len(g.token_ids) for g in gens) / elapsed, [g.token_ids for g in gens]


def bench(folder: Path, tokens: int, reps: int) -> list[str]:
    engines = {
        mode: OnnxEngine(folder, registry=SessionRegistry(RuntimeOptions(batch_decode=mode)))
        for mode in (False, True)
    }
    for e in engines.values():
        e.generate(TEXT, {"max_tokens": 4})  # load and warm up
    rows = []
    for c in LEVELS:
        speeds: dict[bool, list[float]] = {False: [], True: []}
        batcher = engines[True].model.batcher
        assert batcher is not None
        batcher.batch_sizes.clear()
        for _ in range(reps):
            outputs = []
            for mode, engine in engines.items():  # interleaved: load drifts hit both alike
                speed, ids = _run(engine, c, tokens)
                speeds[mode].append(speed)
                outputs.append(ids)
            # Batching must not change what is generated (padding is masked, not computed).
            assert outputs[0] == outputs[1], f"batched greedy tokens differ at c={c}"
        sizes = batcher.batch_sizes
        mean_batch = sum(n * k for n, k in sizes.items()) / max(1, sum(sizes.values()))
        off, on = (statistics.median(speeds[m]) for m in (False, True))
        best_off, best_on = max(speeds[False]), max(speeds[True])
        rows.append(
            f"| {c} | {off:.1f} ({best_off:.1f}) | {on:.1f} ({best_on:.1f}) | "
            f"{on / off:.2f}× ({best_on / best_off:.2f}×) | {mean_batch:.2f} |"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "gpt2-124m"], choices=_models.MODELS)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    for name in args.models:
        folder = args.cache / name / "fused"
        if not (folder / "model.onnx").is_file():  # build() needs optimum even when cached
            folder = _models.build(name, args.cache) / "fused"
        print(f"\n{name}: {args.tokens} new tokens per request, greedy, {args.reps} reps\n")
        print(
            "| concurrent | off tok/s median (best) | on tok/s median (best) | on/off | "
            "mean batch |"
        )
        print("|---|---|---|---|---|")
        for row in bench(folder, args.tokens, args.reps):
            print(row, flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
