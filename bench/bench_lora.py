"""Resident memory of a K-member LoRA portfolio over one shared base, K = 0, 1, 4, 8.

The ``palm export`` graph of each model gets LoRA sites from
:func:`palm_middleware.offline.engines.lora.add_lora_sites` (onnx.md §5: ``Y = X·W + (X·A)·B``
with A/B overridable initializers, rank 0 by default) on the attention input projections (Llama
q_proj and v_proj, GPT-2 c_attn); K random rank-16 adapters are written as ``.onnx_adapter``
files. A fresh process loads the base, serves one request, then serves one request through each
adapter member, reading its resident set size (VmRSS) along the way; a second pass over all
members checks that RSS does not grow per request. Target (issue 4): RSS with K adapters <= 1.10
x (base + K x adapter file).

    python bench/bench_lora.py --models gpt2-124m smollm2-135m --cache /tmp/palm-bench-models
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import _models  # noqa: E402
import numpy as np  # noqa: E402

from palm_middleware.offline.engines.lora import add_lora_sites, param_names, write_adapter  # noqa: E402

KS = (1, 4, 8)
RANK = 16


# Attention input projections: Llama q_proj and v_proj, GPT-2's fused c_attn.
TARGETS = ("q_proj", "v_proj", "c_attn")


def _random_adapter(path: Path, sites: dict[str, tuple[int, int]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    params = {}
    for site, (d_in, d_out) in sites.items():
        a, b = param_names(site)
        params[a] = (rng.standard_normal((d_in, RANK)) * 0.05).astype(np.float32)
        params[b] = (rng.standard_normal((RANK, d_out)) * 0.05).astype(np.float32)
    write_adapter(path, params, sites)


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _worker(folder: Path) -> dict[str, Any]:
    from palm_middleware.engines import OnnxEngine, SessionRegistry

    out: dict[str, Any] = {"start": _rss()}
    registry = SessionRegistry()
    params = {"max_tokens": 8}
    base = OnnxEngine(folder, registry=registry)
    prompt = "def f(x):"
    base_tokens = list(base.generate(prompt, params).token_ids)
    out["base"] = _rss()
    adapters = sorted((folder / "adapters").glob("*.onnx_adapter"))
    members = []
    changed = 0
    for k, path in enumerate(adapters, 1):
        member = OnnxEngine(folder, registry=registry, adapter=path)
        members.append(member)
        changed += list(member.generate(prompt, params).token_ids) != base_tokens
        if k in KS:
            out[f"k{k}"] = _rss()
    t = time.perf_counter()
    for member in [base, *members] * 2:
        member.generate(prompt, params)
    out["again"] = _rss()
    out["again_s"] = time.perf_counter() - t
    out["changed"] = changed
    return out


def _bench(name: str, cache: Path) -> str:
    started = time.perf_counter()
    root = _models.build(name, cache)
    folder = root / "lora"
    if not (folder / "adapters").is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        sites = add_lora_sites(root / "fused", folder, TARGETS)
        (folder / "adapters").mkdir()
        for i in range(max(KS)):
            _random_adapter(folder / "adapters" / f"a{i}.onnx_adapter", sites, seed=i)
    adapter = (folder / "adapters" / "a0.onnx_adapter").stat().st_size
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", str(folder)],
        capture_output=True,
        text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    mb = 1e6
    file_mb = (folder / "model.onnx").stat().st_size / mb
    lines = [
        f"## LoRA portfolio memory: {name}",
        "",
        f"Command: `python bench/bench_lora.py --models {name}` "
        f"({time.perf_counter() - started:.0f} s); load average "
        f"{os.getloadavg()[0]:.2f}. Base model.onnx {file_mb:.0f} MB with LoRA sites; adapter "
        f"file {adapter / mb:.2f} MB (rank {RANK}); RSS of the process before loading "
        f"{r['start'] / mb:.0f} MB; {r['changed']} of {max(KS)} adapters changed the greedy "
        "tokens (so they were active).",
        "",
        "| members | RSS MB | limit 1.10 x (base + K x adapter) MB | per adapter MB | met |",
        "|---|---|---|---|---|",
        f"| base only (loaded, one request) | {r['base'] / mb:.0f} | — | — | — |",
    ]
    for k in KS:
        limit = 1.10 * (r["base"] + k * adapter)
        lines.append(
            f"| base + {k} adapters | {r[f'k{k}'] / mb:.0f} | {limit / mb:.0f} | "
            f"{(r[f'k{k}'] - r['base']) / k / mb:.2f} | "
            f"{'yes' if r[f'k{k}'] <= limit else 'no'} |"
        )
    lines += [
        f"| base + {max(KS)}, after 2 more requests per member | {r['again'] / mb:.0f} | — | "
        f"— | growth {(r['again'] - r[f'k{max(KS)}']) / mb:+.1f} MB |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", choices=_models.MODELS, default=["tiny"])
    ap.add_argument("--cache", help="keep built models here (default: a temporary folder)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "engine.md"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(Path(args.worker))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp) / "models"
        text = "\n".join(_bench(name, cache) for name in args.models)
    print(text)
    out = Path(args.out)
    out.write_text((out.read_text() + "\n" if out.exists() else "# Engine benchmark\n\n") + text)


if __name__ == "__main__":
    main()
