"""Our engine against the engines a user would pick instead (issue 15), at 1 and 2 threads.

One run, interleaved rounds; every engine in a fresh process per round and thread count; the
same chat prompt (SmolLM2's chat template, ~41 tokens, fed to every engine as token ids, so
tokenizers play no part), greedy, EOS ignored so each run makes exactly N tokens:

- ``eager``: transformers ``generate``, PyTorch eager, fp32 (``torch.set_num_threads``);
- ``ours-fp32|int8|int4``: :class:`OnnxEngine` on the ``palm prepare-base`` folder and on
  ``palm quantize --bits 8|4`` of it (``RuntimeOptions(intra_op_threads=T)``);
- ``genai-<prec>``: onnxruntime-genai's ``Generator`` on a model-builder folder (``--genai``);
- ``served-<prec>``: :class:`GenaiEngine` on such a folder (``--served``): GenAI's loop with
  PALM's sampler and stream layer, what ``palm`` serves;
- ``llama-<quant>``: llama.cpp through llama-cpp-python on a GGUF (``--gguf``), ``n_threads=T``.

Engines may need different Pythons (the genai model builder needs transformers 5; llama-cpp-python
is compiled in its own venv so CI never needs it): ``--python KIND=EXE`` picks the interpreter
per kind (eager, ours, genai, llama); the default is this interpreter.

Reported per engine and thread count: decode tok/s = (N - 1) / (t(N) - t(1)) (prefill
excluded; median over rounds of the median of ``--reps`` runs), its ratio to ours fp32 at the
same thread count and to llama.cpp Q8_0's, resident memory (VmRSS after the decode runs, before
the agreement pass, MB; in
brackets the model's share: VmRSS after the runs minus VmRSS before the engine was created, i.e.
weights, runtime libraries, arena, KV cache; and the peak, VmHWM), and agreement with eager fp32:
``forced`` = positions of eager's 64 greedy tokens where the engine's top token is eager's
token when both see eager's prefix (teacher-forced, a divergence does not cascade), ``free`` =
positions equal in the two free-running greedy sequences.

    python bench/bench_peers.py --hf /tmp/peers/hf --ours ~/.cache/palm-middleware/smollm2 \\
        --quant /tmp/peers/quant --gguf Q8_0=/tmp/peers/q8_0.gguf --gguf Q4_1=PKG/Q4_1.gguf \\
        --genai fp32=DIR --genai int8=DIR --genai int4=DIR \\
        --python eager=/work/peers-venv/bin/python --python llama=/work/peers-venv/bin/python \\
        --threads 1 2 --rounds 3 --reps 3
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
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_engine import _cpu, generate_maker  # noqa: E402

# A short instruct exchange; with SmolLM2's chat template (no default system prompt given) this
# is 41 tokens.
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
    {"role": "user", "content": "Why is the sky blue? Explain it to a ten-year-old child."},
]
QUANT_BITS = {"int8": 8, "int4": 4}


def _rss_mb(field: str = "VmRSS") -> float:
    """``field`` of /proc/self/status in MB (VmRSS = RssAnon + RssFile + RssShmem)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- one engine in this process ------------------------------------------------------------------


def decode_stats(
    make: Callable[[int], Callable[[], list[int]]], n: int, reps: int, load: float
) -> dict[str, Any]:
    """Prefill = t(1); decode tok/s = (n - 1) / (t(n) - t(1)), medians of ``reps`` pairs.

    One 1-token warm-up only (``bench_engine.decode_stats`` also warms up with a full run):
    the loaded machine makes every run count.
    """
    one, full = make(1), make(n)
    one()
    t1s, tns = [], []
    tokens: list[int] = []
    for _ in range(reps):
        t = time.perf_counter()
        one()
        t1s.append(time.perf_counter() - t)
        t = time.perf_counter()
        tokens = full()
        tns.append(time.perf_counter() - t)
    t1, tn = statistics.median(t1s), statistics.median(tns)
    return {"prefill_ms": t1 * 1e3, "tps": (n - 1) / (tn - t1), "tokens": tokens, "load": load}


def _greedy_runs(engine: Any) -> Callable[[list[int]], Callable[[int], Callable[[], list[int]]]]:
    """For a prompt, a factory of timed calls: k greedy tokens through the engine's own loop."""

    def make(prompt: list[int]) -> Callable[[int], Callable[[], list[int]]]:
        def at(k: int) -> Callable[[], list[int]]:
            params = engine.defaults.merged({"max_tokens": k, "temperature": 0.0})
            return lambda: list(engine._tokens(engine.model, prompt, params, None))

        return at

    return make


def _ours(folder: Path, threads: int, spin: bool | None, device: str) -> tuple[Any, Any]:
    from palm_middleware.engines import OnnxEngine, RuntimeOptions
    from palm_middleware.offline.engines.quantize import _logits

    kw: dict[str, Any] = {"device": device, "intra_op_threads": threads}
    if spin is not None:
        kw["allow_spinning"] = spin
    engine = OnnxEngine(folder, options=RuntimeOptions(**kw)).load()

    make = _greedy_runs(engine)

    def forced(prompt: list[int], ref: list[int]) -> list[int]:
        logits = _logits(engine.model, prompt + ref[:-1])[len(prompt) - 1 :]
        return [int(t) for t in logits.argmax(axis=1)]

    return make, forced


def _served(folder: Path, threads: int, spin: bool | None) -> tuple[Any, Any]:
    """:class:`GenaiEngine` (GenAI's loop, PALM's sampler and stream layer): what PALM serves."""
    from palm_middleware.engines import RuntimeOptions
    from palm_middleware.engines.genai import GenaiEngine

    kw: dict[str, Any] = {"intra_op_threads": threads}
    if spin is not None:
        kw["allow_spinning"] = spin
    engine = GenaiEngine(folder, options=RuntimeOptions(**kw)).load()

    make = _greedy_runs(engine)

    def forced(prompt: list[int], ref: list[int]) -> list[int]:
        return [int(t) for t in engine.model.step_logits(prompt, ref).argmax(axis=1)]

    return make, forced


def _eager(folder: Path, threads: int) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # exactly k tokens, EOS ignored as elsewhere

    def make(prompt: list[int]) -> Callable[[int], Callable[[], list[int]]]:
        return generate_maker(model, prompt)

    def forced(prompt: list[int], ref: list[int]) -> list[int]:
        with torch.no_grad():
            logits = model(torch.tensor([prompt + ref[:-1]])).logits[0, len(prompt) - 1 :]
        return [int(t) for t in logits.argmax(-1)]

    return make, forced


def _genai(folder: Path, threads: int) -> tuple[Any, Any]:
    import numpy as np
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    session = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": session}}}))
    model = og.Model(config)

    def generator(prompt: list[int], length: int) -> Any:
        gp = og.GeneratorParams(model)
        # min_length: EOS ignored, so every run makes exactly k tokens (as for the others).
        gp.set_search_options(do_sample=False, max_length=length, min_length=length)
        gen = og.Generator(model, gp)
        gen.append_tokens(np.asarray([prompt], dtype=np.int32))
        return gen

    def make(prompt: list[int]) -> Callable[[int], Callable[[], list[int]]]:
        def at(k: int) -> Callable[[], list[int]]:
            def run() -> list[int]:
                gen = generator(prompt, len(prompt) + k)
                out = []
                for _ in range(k):
                    gen.generate_next_token()
                    out.append(int(gen.get_next_tokens()[0]))
                return out

            return run

        return at

    def forced(prompt: list[int], ref: list[int]) -> list[int]:
        gen = generator(prompt, len(prompt) + len(ref) + 1)
        out = []
        for tok in ref:
            out.append(int(np.asarray(gen.get_logits()).reshape(-1).argmax()))
            gen.append_tokens(np.asarray([[tok]], dtype=np.int32))
        return out

    return make, forced


def _llama(gguf: Path, threads: int) -> tuple[Any, Any]:
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(gguf), n_ctx=512, n_batch=512, n_threads=threads,
        n_threads_batch=threads, verbose=False,
    )  # fmt: skip

    vocab = llm.n_vocab()

    def top() -> int:
        # Only the last position's logits exist (no logits_all); llm.scores stays empty then.
        return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,))))

    def start(prompt: list[int]) -> int:
        llm.reset()  # eval() then drops the cached positions from n_tokens on
        llm.eval(prompt)
        return top()

    def step(tok: int) -> int:
        llm.eval([tok])
        return top()

    def make(prompt: list[int]) -> Callable[[int], Callable[[], list[int]]]:
        def at(k: int) -> Callable[[], list[int]]:
            def run() -> list[int]:
                out = [start(prompt)]
                while len(out) < k:
                    out.append(step(out[-1]))
                return out

            return run

        return at

    def forced(prompt: list[int], ref: list[int]) -> list[int]:
        out = [start(prompt)]
        out += [step(tok) for tok in ref[:-1]]
        return out

    return make, forced


def worker(key: str, threads: int, n: int, reps: int, extra: dict[str, Any]) -> dict[str, Any]:
    """Load engine ``key`` at ``threads``, time it and compare it with ``extra["ref"]``."""
    kind, _, variant = key.partition("-")
    path = Path(extra["path"])
    load = os.getloadavg()[0]
    rss0 = _rss_mb()
    t = time.perf_counter()
    if kind == "ours":
        make, forced = _ours(path, threads, extra.get("spin"), extra.get("device", "cpu"))
    elif kind == "served":
        make, forced = _served(path, threads, extra.get("spin"))
    elif kind == "eager":
        make, forced = _eager(path, threads)
    elif kind == "genai":
        make, forced = _genai(path, threads)
    elif kind == "llama":
        make, forced = _llama(path, threads)
    else:
        raise SystemExit(f"unknown engine {key}")
    load_s = time.perf_counter() - t
    prompt = list(extra["prompt"])
    out = decode_stats(make(prompt), n, reps, load)
    # Memory of serving: after the decode runs, before the quality pass below (which holds
    # 64 rows of logits, 12-20 MB, that no request keeps).
    out.update(
        rss_mb=_rss_mb(),
        rss0_mb=rss0,
        rss_file_mb=_rss_mb("RssFile"),
        rss_peak_mb=_rss_mb("VmHWM"),
    )
    ref = extra.get("ref")
    if ref:
        out["forced"] = sum(a == b for a, b in zip(forced(prompt, ref), ref, strict=True))
        out["free"] = sum(a == b for a, b in zip(out["tokens"], ref))
    out.update(load_s=load_s, variant=variant)
    return out


# -- the parent: build the plan, spawn, tabulate -------------------------------------------------


def spawn(
    python: str, key: str, threads: int, n: int, reps: int, extra: dict[str, Any]
) -> dict[str, Any]:
    """Run this script's worker for ``key`` in a fresh ``python`` process; its JSON result."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    repo = str(Path(__file__).parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    cmd = [python, __file__, "--worker", key, "--threads", str(threads)]
    cmd += ["--new-tokens", str(n), "--reps", str(reps), "--extra", json.dumps(extra)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"worker {key} ({threads} threads) failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def chat_prompt(folder: Path) -> list[int]:
    """:data:`MESSAGES` through the chat template of the ONNX folder (our engine's encoding)."""
    from palm_middleware.engines import OnnxEngine

    return OnnxEngine(folder).encode_prompt(MESSAGES)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k or not v:
            raise SystemExit(f"{what} must be NAME=VALUE; got {item!r}")
        out[k] = v
    return out


def plan(args: argparse.Namespace) -> dict[str, tuple[str, Path]]:
    """Engine key -> (interpreter kind, model path), in the order the rows are printed."""
    from palm_middleware.offline.engines.quantize import quantize

    engines: dict[str, tuple[str, Path]] = {"eager-fp32": ("eager", Path(args.hf))}
    ours = Path(args.ours).expanduser()
    engines["ours-fp32"] = ("ours", ours)
    for prec, bits in QUANT_BITS.items():
        folder = Path(args.quant) / prec
        if not (folder / "model_card.json").is_file():
            quantize(ours, folder, bits=bits, lm_head=True, progress=False)  # = palm quantize
        engines[f"ours-{prec}"] = ("ours", folder)
    for prec, path in _pairs(args.genai, "--genai").items():
        engines[f"genai-{prec}"] = ("genai", Path(path))
    for prec, path in _pairs(args.served, "--served").items():
        engines[f"served-{prec}"] = ("served", Path(path))
    for quant, path in _pairs(args.gguf, "--gguf").items():
        engines[f"llama-{quant}"] = ("llama", Path(path))
    if args.engines:
        engines = {k: v for k, v in engines.items() if k in args.engines or k == "eager-fp32"}
    return engines


LABELS = {"eager": "transformers eager", "ours": "**ours**", "genai": "onnxruntime-genai"}
LABELS["llama"] = "llama.cpp (llama-cpp-python)"
LABELS["served"] = "**GenaiEngine** (PALM on GenAI)"


def table(runs: dict[tuple[str, int], list[dict[str, Any]]], threads: list[int], n: int) -> str:
    lines = [
        f"| engine | precision | threads | decode tok/s median (min–max) | × ours fp32 "
        f"| × llama.cpp Q8_0 | RSS MB after the runs (model: after − before load; peak) "
        f"| greedy agreement /{n} (forced / free) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = list(dict.fromkeys(k for k, _ in runs))

    def median_tps(key: str, t: int) -> float:
        rs = runs.get((key, t))
        return statistics.median(r["tps"] for r in rs) if rs else float("nan")

    for t in threads:
        base, q8 = median_tps("ours-fp32", t), median_tps("llama-Q8_0", t)
        for key in keys:
            rs = runs.get((key, t))
            if not rs:
                continue
            tps = [r["tps"] for r in rs]
            kind, _, prec = key.partition("-")
            agree = (
                "reference"
                if key == "eager-fp32"
                else f"{rs[0].get('forced', '—')} / {rs[0].get('free', '—')}"
            )
            lines.append(
                f"| {LABELS[kind]} | {prec} | {t} | {statistics.median(tps):.1f} "
                f"({min(tps):.1f}–{max(tps):.1f}, k={len(tps)}) | "
                f"{statistics.median(tps) / base:.2f} | {statistics.median(tps) / q8:.2f} | "
                f"{statistics.median(r['rss_mb'] for r in rs):.0f} "
                f"({statistics.median(r['rss_mb'] - r.get('rss0_mb', 0.0) for r in rs):.0f}; "
                f"{statistics.median(r.get('rss_peak_mb', float('nan')) for r in rs):.0f}) | "
                f"{agree} |"
            )
    return "\n".join(lines)


def _report(
    args: argparse.Namespace,
    runs: dict[tuple[str, int], list[dict[str, Any]]],
    loads: list[float],
    prompt: list[int],
    started: float,
    failed: dict[str, str],
) -> str:
    n = args.new_tokens
    cmd = " ".join(["python", "bench/bench_peers.py", *sys.argv[1:]])
    lines = [
        f"Machine: {_cpu()}, nproc={os.cpu_count()}, Python {platform.python_version()}; "
        f"load average (1 min) before/median/now: {loads[0]:.2f}/"
        f"{statistics.median(loads):.2f}/{os.getloadavg()[0]:.2f} (shared machine: read the "
        "ratios).",
        f"Command: `{cmd}` ({time.perf_counter() - started:.0f} s).",
        f"Prompt: {len(prompt)} tokens (chat template), greedy, {n} new tokens, EOS ignored; "
        f"up to {args.rounds} interleaved rounds × {args.reps} runs, a fresh process per "
        "engine, round and thread count; k = rounds measured.",
        "",
        table(runs, args.threads, n),
        "",
    ]
    lines += [f"- {key} failed at least once: {why}" for key, why in failed.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hf", help="fp32 Hugging Face folder of the model (transformers eager)")
    ap.add_argument("--ours", help="fp32 ONNX folder (palm prepare-base)")
    ap.add_argument("--quant", help="where int8/int4 folders are made by palm quantize (cached)")
    ap.add_argument("--genai", action="append", default=[], metavar="PREC=DIR")
    ap.add_argument(
        "--served", action="append", default=[], metavar="PREC=DIR",
        help="a GenAI folder through GenaiEngine (PALM's serving engine)",
    )  # fmt: skip
    ap.add_argument("--gguf", action="append", default=[], metavar="QUANT=FILE")
    ap.add_argument("--python", action="append", default=[], metavar="KIND=EXE")
    ap.add_argument("--engines", nargs="*", help="only these keys (e.g. ours-fp32 llama-Q8_0)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget-min", type=float, help="start no round after this many minutes")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "peers.md"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--extra", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        os.environ["HF_HUB_OFFLINE"] = "1"
        warnings.filterwarnings("ignore")
        r = worker(args.worker, args.threads[0], args.new_tokens, args.reps, json.loads(args.extra))
        print(json.dumps(r))
        return
    if not (args.hf and args.ours and args.quant):
        ap.error("--hf, --ours and --quant are required")
    pythons = _pairs(args.python, "--python")
    started = time.perf_counter()
    engines = plan(args)
    prompt = chat_prompt(Path(args.ours).expanduser())
    n = args.new_tokens
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    loads = [os.getloadavg()[0]]
    ref: list[int] | None = None
    failed: dict[str, str] = {}
    text = ""
    for rnd in range(args.rounds):
        if args.budget_min and time.perf_counter() - started > args.budget_min * 60:
            print(f"time budget spent: stopping after {rnd} rounds", flush=True)
            break
        for t in args.threads:
            for key, (kind, path) in engines.items():
                extra: dict[str, Any] = {"path": str(path), "prompt": prompt, "ref": ref}
                try:
                    r = spawn(pythons.get(kind, sys.executable), key, t, n, args.reps, extra)
                except RuntimeError as exc:  # e.g. llama-cpp-python still compiling: next round
                    failed[key] = str(exc).splitlines()[-1]
                    print(f"round {rnd + 1} {key} t={t}: {exc}", flush=True)
                    continue
                if ref is None:  # eager fp32, first round, first thread count
                    ref = r["tokens"]
                runs.setdefault((key, t), []).append(r)
                loads.append(r["load"])
                print(f"round {rnd + 1} {key} t={t}: {r['tps']:.1f} tok/s", flush=True)
        text = _report(args, runs, loads, prompt, started, failed)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("# Engine vs peers (issue 15)\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
