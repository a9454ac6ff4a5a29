"""Steps 1 and 2 of ``bench/gpu_check.sh``: CUDA really in use, then decode speed on CUDA vs CPU.

Run by the shell script only on a machine with a GPU and a CUDA-capable onnxruntime. A session
made with ``RuntimeOptions(device="cuda")`` raises ``ModelLoadError`` when ONNX Runtime falls
back to CPU; this script also checks ``session.get_providers()[0]`` itself and exits 1 then.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_peers import chat_prompt, spawn  # noqa: E402

CUDA = "CUDAExecutionProvider"


def tiny_model(work: Path) -> Path:
    """The tests' tiny decoder (2 layers, d=32, ~400-token BPE): stands in when no real base."""
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from tests.engines.tiny import train_tokenizer, write_model

    out = work / "tiny"
    if not (out / "model.onnx").is_file():
        (work / "tok").mkdir(parents=True, exist_ok=True)
        train_tokenizer(work / "tok")
        write_model(out, work / "tok" / "tokenizer.json", seed=0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--gpus", default="")
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    import onnxruntime as ort

    from palm_middleware.engines import OnnxModel, RuntimeOptions

    work = Path(args.work)
    models = {"tiny decoder (tests)": tiny_model(work)}
    base = Path(args.base).expanduser()
    if (base / "model.onnx").is_file():
        models["SmolLM2-135M fp32"] = base
    lines = [
        "# GPU check (bench/gpu_check.sh)",
        "",
        f"GPUs: {args.gpus}; onnxruntime {ort.__version__} ({ort.get_device()}), "
        f"providers offered: {ort.get_available_providers()}; {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
    ]
    for name, folder in models.items():
        got = OnnxModel(folder, RuntimeOptions(device="cuda", require_gpu=True)).providers
        ok = got[0] == CUDA
        lines.append(f"- {name}: session providers {got} → {'CUDA in use' if ok else 'FALLBACK'}")
        if not ok:
            Path(args.out).write_text("\n".join(lines) + "\n")
            raise SystemExit(f"gpu_check: {folder} runs on {got[0]}, not {CUDA}")
    lines += [
        "",
        f"## Decode, batch 1, greedy, {args.new_tokens} new tokens (fresh process per cell)",
        "",
        "| model | device | prefill ms | decode tok/s | RSS MB |",
        "|---|---|---|---|---|",
    ]
    for name, folder in models.items():
        prompt = chat_prompt(folder)
        for device in ("cuda", "cpu"):
            extra = {"path": str(folder), "prompt": prompt, "device": device}
            r = spawn(sys.executable, "ours-fp32", 1, args.new_tokens, 3, extra)
            lines.append(
                f"| {name} | {device} | {r['prefill_ms']:.1f} | {r['tps']:.1f} | "
                f"{r['rss_mb']:.0f} |"
            )
    lines.append("")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
