"""Our raw ONNX Runtime loop vs ONNX Runtime GenAI on SmolLM2-135M-Instruct (issue 15).

Each engine runs in a fresh process, engines interleaved round by round, the same chat prompt,
greedy decoding, ``--new-tokens`` tokens, ``--threads`` intra-op threads:

- ``ours-{fp32,int8,int4}``: :class:`OnnxEngine` on ``palm prepare-base`` / ``palm quantize``;
- ``genai-{fp32,int8,int4}``: :class:`GenaiEngine` (GenAI's loop, PALM's sampler) on the
  ``palm prepare-genai`` folders (GenAI model builder graphs);
- ``genai-native-*``: GenAI's own greedy search (``generate_next_token``), no PALM layer: what
  the PALM layer costs per step;
- ``raw-on-genai-*``: :class:`OnnxEngine` on the GenAI graph: our loop on the fused graph.

Decode tok/s = (N - 1) / (t(N) - t(1)) (prefill excluded), median of ``--reps`` per round,
then the median over rounds. RSS: the worker's resident set after its runs (VmRSS).
Agreement: positions (of N) where the engine's top token equals ours-fp32's greedy token when
both read ours-fp32's sequence (teacher forcing: one early divergence does not cascade).

    python bench/bench_genai.py --rounds 3 --reps 3 --threads 1 2 --out bench/results/genai.md

Needs the folders of ``palm prepare-base``, ``palm quantize --bits 8|4`` (``smollm2-int8``,
``smollm2-int4`` beside it) and ``palm prepare-genai``, all under ``$PALM_CACHE``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROMPT = [
    {
        "role": "user",
        "content": "What is the capital of France? Answer in two or three sentences and "
        "mention one famous landmark there.",
    }
]
ENGINES = {
    "ours-fp32": ("onnx", "smollm2"),
    "ours-int8": ("onnx", "smollm2-int8"),
    "ours-int4": ("onnx", "smollm2-int4"),
    "genai-fp32": ("genai", "smollm2-genai-fp32"),
    "genai-int8": ("genai", "smollm2-genai-int8"),
    "genai-int4": ("genai", "smollm2-genai-int4"),
    "genai-native-int8": ("native", "smollm2-genai-int8"),
    "raw-on-genai-int8": ("onnx", "smollm2-genai-int8"),
    # LoRA switch cost: two requests per timed call on the GenAI fp32 graph with rank-16 sites on
    # qkv_proj/o_proj; "lora-base": both without an adapter, "lora-switch": adapter A then base.
    "genai-lora-base-fp32": ("lora-base", "smollm2-genai-fp32-lora"),
    "genai-lora-switch-fp32": ("lora-switch", "smollm2-genai-fp32-lora"),
}
LORA_ADAPTER = "bench-genai-a.onnx_adapter"


def _cache() -> Path:
    root = os.environ.get("PALM_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "palm-middleware"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _median_time(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _worker(key: str, n: int, reps: int, threads: int, reference: list[int]) -> dict[str, Any]:
    import numpy as np

    from palm_middleware.engines import GenaiEngine, OnnxEngine, RuntimeOptions

    kind, folder_name = ENGINES[key]
    folder = _cache() / folder_name
    options = RuntimeOptions(intra_op_threads=threads, inter_op_threads=1)
    t0 = time.perf_counter()
    cls = OnnxEngine if kind == "onnx" else GenaiEngine
    engine = cls(folder, options=options)
    engine.load()
    load_s = time.perf_counter() - t0
    ids = engine.encode_prompt(PROMPT)
    model: Any = engine.model

    if kind == "native":
        og = model.og

        def make(k: int) -> Callable[[], list[int]]:
            def run() -> list[int]:
                gp = og.GeneratorParams(model.og_model)
                gp.set_search_options(max_length=len(ids) + k, do_sample=False)
                gen = og.Generator(model.og_model, gp)
                gen.append_tokens(ids)
                out = []
                while len(out) < k and not gen.is_done():
                    gen.generate_next_token()
                    out.append(int(gen.get_next_tokens()[0]))
                return out

            return run
    elif kind.startswith("lora-"):
        tuned = GenaiEngine(folder, registry=engine.registry, adapter=folder / LORA_ADAPTER)
        first = tuned.load() if kind == "lora-switch" else engine

        def make(k: int) -> Callable[[], list[int]]:
            params = engine.defaults.merged({"max_tokens": k})

            def run() -> list[int]:
                list(first._tokens(model, ids, params, None))
                return list(engine._tokens(model, ids, params, None))

            return run
    else:

        def make(k: int) -> Callable[[], list[int]]:
            params = engine.defaults.merged({"max_tokens": k})
            return lambda: list(engine._tokens(model, ids, params, None))

    t1 = _median_time(make(1), reps)
    tn = _median_time(make(n), reps)
    per_call = 2 if kind.startswith("lora-") else 1  # requests per timed call
    tokens = make(n)()
    agree = None
    if reference and not kind.startswith("lora-"):
        if kind == "onnx":
            from palm_middleware.offline.engines.quantize import _logits

            rows = _logits(model, ids + reference[:-1])[len(ids) - 1 :]
        else:
            rows = model.step_logits(ids, reference)
        agree = int((np.asarray(rows).argmax(axis=1) == np.asarray(reference)).sum())
    return {
        "tps": per_call * (n - 1) / (tn - t1),
        "prefill_ms": t1 * 1e3,
        "rss_mb": _rss_mb(),
        "load_s": load_s,
        "tokens": tokens,
        "prompt_tokens": len(ids),
        "agree": agree,
        "load": os.getloadavg()[0],
    }


def _prepare_lora() -> None:
    """Rank-16 LoRA sites on the GenAI fp32 graph and one random adapter (seeded), once."""
    import numpy as np

    from palm_middleware.offline.engines.lora import add_lora_sites, write_adapter

    src, dst = _cache() / "smollm2-genai-fp32", _cache() / "smollm2-genai-fp32-lora"
    if (dst / LORA_ADAPTER).is_file():
        return
    sites = add_lora_sites(src, dst, targets=("qkv_proj", "o_proj"))
    rng = np.random.default_rng(0)
    params = {}
    for site, (d_in, d_out) in sites.items():
        params[f"{site}.lora_A"] = rng.normal(0, 0.02, (d_in, 16))
        params[f"{site}.lora_B"] = rng.normal(0, 0.02, (16, d_out))
    write_adapter(dst / LORA_ADAPTER, params, dst)


def _spawn(key: str, n: int, reps: int, threads: int, reference: list[int]) -> dict[str, Any]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--worker", key, "--new-tokens", str(n), "--reps", str(reps)]
    cmd += ["--threads", str(threads), "--reference", json.dumps(reference)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"worker {key} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--reference", default="[]", help=argparse.SUPPRESS)
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.worker:
        r = _worker(
            args.worker, args.new_tokens, args.reps, args.threads[0], json.loads(args.reference)
        )
        print(json.dumps(r))
        return
    n = args.new_tokens
    if any(ENGINES[k][0].startswith("lora-") for k in args.engines):
        _prepare_lora()
    missing = [k for k in args.engines if not (_cache() / ENGINES[k][1]).is_dir()]
    engines = [k for k in args.engines if k not in missing]
    started = time.perf_counter()
    lines = []
    for threads in args.threads:
        reference = _spawn("ours-fp32", n, 1, threads, [])["tokens"]
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in engines}
        for _ in range(args.rounds):
            for key in engines:
                runs[key].append(_spawn(key, n, args.reps, threads, reference))
                print(key, threads, f"{runs[key][-1]['tps']:.1f}", file=sys.stderr, flush=True)
        base = statistics.median(r["tps"] for r in runs["ours-fp32"]) if "ours-fp32" in runs else 0
        lines += [
            f"### {threads} thread{'s' if threads > 1 else ''}",
            "",
            "| engine | precision | threads | decode tok/s median (min–max) | × ours fp32 | "
            "RSS MB | greedy agreement /64 | prefill ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key in engines:
            tps = [r["tps"] for r in runs[key]]
            med = statistics.median(tps)
            label, _, precision = key.rpartition("-")
            ratio = f"{med / base:.2f}" if base else "—"
            agree = runs[key][0]["agree"]
            lines.append(
                f"| {label} | {precision} | {threads} | {med:.1f} ({min(tps):.1f}–{max(tps):.1f}) "
                f"| {ratio} | {statistics.median(r['rss_mb'] for r in runs[key]):.0f} "
                f"| {agree if agree is not None else '—'} "
                f"| {statistics.median(r['prefill_ms'] for r in runs[key]):.0f} |"
            )
        loads = [r["load"] for rs in runs.values() for r in rs]
        lines += [
            "",
            f"Prompt: {runs[engines[0]][0]['prompt_tokens']} tokens (chat template); "
            f"{n} new tokens; load average during the runs {min(loads):.1f}–{max(loads):.1f}.",
            "",
        ]
    header = [
        "## Engine vs peers (issue 15): onnxruntime-genai",
        "",
        f"Machine: {_cpu()}, {os.cpu_count()} cores (shared with other jobs: read the ratios). "
        f"{args.rounds} interleaved rounds × {args.reps} repetitions, each engine in a fresh "
        f"process; total {time.perf_counter() - started:.0f} s. "
        f"`python bench/bench_genai.py --rounds {args.rounds} --reps {args.reps} --threads "
        f"{' '.join(map(str, args.threads))}`",
        "",
    ]
    if missing:
        header += [f"Skipped (folder missing): {', '.join(missing)}.", ""]
    text = "\n".join(header + lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
