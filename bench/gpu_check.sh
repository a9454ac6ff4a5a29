#!/usr/bin/env bash
# GPU check (issue 15): the first thing to run on a machine with an NVIDIA GPU.
#
# 1. the CUDA provider is really used: a session created with PALM_ORT_DEVICE=cuda must report
#    CUDAExecutionProvider first (onnxruntime-gpu lists CUDA even when its libraries are
#    missing and then silently runs on CPU; docs: onnx.md §2);
# 2. decode benchmark on CUDA (and on CPU, same process layout) for SmolLM2 when the
#    `palm prepare-base` folder exists, else for the tiny test decoder;
# 3. the LoRA tests on CUDA (tests/engines/test_lora.py with PALM_ORT_DEVICE=cuda, so a CPU
#    fallback is an error) and the LoRA member switch cost (bench/bench_lora_switch.py).
# Numbers go to $GPU_CHECK_OUT (default bench/results/gpu_check.md).
# Without a GPU (no nvidia-smi, no device, or no CUDA provider in onnxruntime) it says so and
# exits 0. Usage: bash bench/gpu_check.sh   (PYTHON=... to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${GPU_CHECK_OUT:-bench/results/gpu_check.md}
BASE=${PALM_GPU_CHECK_BASE:-${PALM_CACHE:-$HOME/.cache/palm-middleware}/smollm2}
WORK=${PALM_GPU_CHECK_WORK:-${TMPDIR:-/tmp}/palm-gpu-check}

skip() { echo "gpu_check: no GPU to check: $1. Nothing was run."; exit 0; }

command -v nvidia-smi >/dev/null 2>&1 || skip "nvidia-smi not found"
gpus=$(nvidia-smi -L 2>/dev/null || true)
[ -n "$gpus" ] || skip "nvidia-smi lists no GPU"
providers=$("$PY" -c 'import onnxruntime as o; print(" ".join(o.get_available_providers()))' \
  2>/dev/null || echo "onnxruntime not importable")
case " $providers " in
  *" CUDAExecutionProvider "*) ;;
  *) skip "onnxruntime offers no CUDAExecutionProvider ($providers); install palm-middleware[gpu]" ;;
esac

echo "gpu_check: $gpus"
mkdir -p "$WORK" "$(dirname "$OUT")"
export PALM_ORT_DEVICE=cuda HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# 1 + 2: provider check and decode speed (fails on a silent CPU fallback).
"$PY" bench/_gpu_check.py --base "$BASE" --work "$WORK" --out "$OUT" --gpus "$gpus"

# 3: LoRA on CUDA. The tests build tiny models; RuntimeOptions() reads PALM_ORT_DEVICE=cuda.
if "$PY" -m pytest -q -p no:cacheprovider tests/engines/test_lora.py >"$WORK/lora_tests.log" 2>&1; then
  lora="passed"
else
  lora="FAILED (see $WORK/lora_tests.log)"
fi
echo "- LoRA tests on CUDA (tests/engines/test_lora.py): $lora ($(tail -n 1 "$WORK/lora_tests.log"))" >>"$OUT"
if [ -f "$BASE/model.onnx" ]; then
  "$PY" bench/bench_lora_switch.py --base "$BASE" --cache "$WORK" --device cuda \
    --out "$WORK/lora_switch.md"
  { echo; echo "## LoRA member switch on CUDA"; echo; tail -n +3 "$WORK/lora_switch.md"; } >>"$OUT"
fi
echo "gpu_check: done; numbers in $OUT"
[ "$lora" = "passed" ]
