"""Decode speed and prefill time: OnnxEngine vs optimum ORTModelForCausalLM vs transformers eager.

All three run the same random-init GPT-2 (built here, exported with optimum; nothing is
downloaded), batch 1, greedy, a 16-token prompt, N new tokens (EOS disabled so every run makes
N tokens). Decode tok/s = (N - 1) / (t(N) - t(1)), prefill = t(1); medians of --reps runs.
Needs the build-time extra: ``pip install -e '.[cpu,export]'``.

    python bench/bench_engine.py [--size tiny|small] [--new-tokens 64] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

SIZES = {
    "tiny": {"n_embd": 64, "n_layer": 2, "n_head": 4},
    "small": {"n_embd": 768, "n_layer": 12, "n_head": 12},  # GPT-2 124M shape
}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _build(size: str, root: Path) -> tuple[Path, Path, int]:
    """A random GPT-2 HF folder and its ONNX export (EOS removed); returns (hf, onnx, vocab)."""
    import torch
    from optimum.exporters.onnx import main_export
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = [Path(__file__).read_text(), *(p.read_text() for p in
                                          Path(__file__).parents[1].glob("palm_middleware/*.py"))]
    vocab = 512 if size == "tiny" else 8192
    tok.train_from_iterator(text, trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   model_input_names=["input_ids", "attention_mask"])
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(fast), n_positions=256, **SIZES[size])
    hf = root / "hf"
    GPT2LMHeadModel(cfg).save_pretrained(hf)
    fast.save_pretrained(hf)
    out = root / "onnx"
    main_export(str(hf), output=str(out), task="text-generation-with-past", device="cpu",
                local_files_only=True)
    # No EOS anywhere: every run generates exactly N tokens.
    for name in ("generation_config.json", "tokenizer_config.json", "config.json"):
        p = out / name
        if p.exists():
            d = json.loads(p.read_text())
            for k in ("eos_token_id", "eos_token"):
                d.pop(k, None)
            p.write_text(json.dumps(d))
    return hf, out, len(fast)


def _median_time(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "engine.md"))
    ap.add_argument("--append", action="store_true", help="append to --out")
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    warnings.filterwarnings("ignore")
    import onnxruntime
    import torch
    import transformers
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import GPT2LMHeadModel

    from palm_middleware.engines.onnx import OnnxEngine

    started = time.perf_counter()
    n = args.new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        hf, onnx_dir, vocab = _build(args.size, Path(tmp))
        rng = np.random.default_rng(0)
        prompt = [int(t) for t in rng.integers(1, vocab, 16)]
        ids = torch.tensor([prompt])

        engine = OnnxEngine(onnx_dir)
        engine.load()

        def ours(k: int) -> Callable[[], object]:
            # Token ids straight into the loop: same prompt as the other two, no tokenizer.
            return lambda: sum(1 for _ in engine._tokens(
                engine.model, prompt, engine.defaults.merged({"max_tokens": k}), None))

        ort_model = ORTModelForCausalLM.from_pretrained(onnx_dir,
                                                        provider="CPUExecutionProvider")
        torch_model = GPT2LMHeadModel.from_pretrained(hf).eval()

        def hf_generate(model: object, k: int) -> Callable[[], object]:
            def run() -> object:
                with torch.no_grad():
                    return model.generate(  # type: ignore[attr-defined]
                        ids, attention_mask=torch.ones_like(ids), max_new_tokens=k,
                        min_new_tokens=k, do_sample=False, pad_token_id=0)
            return run

        runners = {
            "palm OnnxEngine (raw ORT loop)": ours,
            "optimum ORTModelForCausalLM.generate": lambda k: hf_generate(ort_model, k),
            "transformers eager generate": lambda k: hf_generate(torch_model, k),
        }
        # Same check as `palm export`: the three produce the same greedy tokens.
        first = [t for t in engine._tokens(engine.model, prompt,
                                           engine.defaults.merged({"max_tokens": 8}), None)]
        for name in list(runners)[1:]:
            model = ort_model if "optimum" in name else torch_model
            with torch.no_grad():
                got = model.generate(ids, attention_mask=torch.ones_like(ids),  # type: ignore
                                     max_new_tokens=8, min_new_tokens=8, do_sample=False,
                                     pad_token_id=0)[0, 16:].tolist()
            assert got == first, (name, got, first)
        rows = []
        for name, make in runners.items():
            t1 = _median_time(make(1), args.reps)
            tn = _median_time(make(n), args.reps)
            rows.append((name, t1 * 1e3, (n - 1) / (tn - t1)))
    eager = rows[-1][2]
    lines = [
        f"## random GPT-2 `{args.size}` ({SIZES[args.size]}, vocab {vocab})",
        "",
        f"Machine: {_cpu()}, nproc={os.cpu_count()}, Python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}",
        f"Command: `python bench/bench_engine.py --size {args.size} --new-tokens {n} "
        f"--reps {args.reps}` ({time.perf_counter() - started:.0f} s)",
        "Batch 1, greedy, 16-token prompt, "
        f"{n} new tokens; prefill = time to the first token; decode = (N-1)/(t(N)-t(1)); "
        f"medians of {args.reps}. Greedy tokens of all three were checked equal.",
        "",
        "| engine | prefill ms | decode tok/s | decode vs transformers eager |",
        "|---|---|---|---|",
        *(f"| {name} | {pre:.2f} | {tps:.1f} | {tps / eager:.2f}x |" for name, pre, tps in rows),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = "# Engine benchmark\n\n"
    if args.append and out.exists():
        out.write_text(out.read_text() + "\n" + text)
    else:
        out.write_text(header + text)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
