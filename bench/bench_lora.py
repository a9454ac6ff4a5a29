"""Resident memory of a K-member LoRA portfolio over one shared base, K = 0, 1, 4, 8.

The ``palm export`` graph of each model gets LoRA sites (onnx.md §5: ``Y = X·W + (X·A)·B`` with
A/B overridable initializers, rank 0 by default) on the attention input projections (Llama
q_proj and v_proj, GPT-2 c_attn); K random rank-16 adapters are written as ``.onnx_adapter``
files. A fresh process loads the base, serves one request, then serves one request through
each adapter member, reading its resident set size (VmRSS) along the way; a second pass over
all members checks that RSS does not grow per request. Target (issue 4): RSS with K adapters
<= 1.10 x (base + K x adapter file).

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

KS = (1, 4, 8)
RANK = 16


def _is_target(node: Any) -> bool:
    name = node.name + " " + node.input[1]
    return any(t in name for t in ("/self_attn/q_proj/", "/self_attn/v_proj/",
                                   "attn.c_attn.weight"))


def inject_lora(src: Path, dst: Path) -> dict[str, tuple[int, int]]:
    """Copy model folder ``src`` to ``dst`` with LoRA sites; returns {site: (d_in, d_out)}."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shutil.copytree(src, dst)
    proto = onnx.load(str(src / "model.onnx"))
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    sites: dict[str, tuple[int, int]] = {}
    nodes = []
    for node in g.node:
        nodes.append(node)
        if node.op_type != "MatMul" or node.input[1] not in inits or not _is_target(node):
            continue
        d_in, d_out = (int(d) for d in inits[node.input[1]].dims)
        site = f"lora.{len(sites)}"
        a, b = f"{site}.A", f"{site}.B"
        sites[site] = (d_in, d_out)
        g.initializer.extend([numpy_helper.from_array(np.zeros((d_in, 0), np.float32), a),
                              numpy_helper.from_array(np.zeros((0, d_out), np.float32), b)])
        g.input.extend([helper.make_tensor_value_info(a, TensorProto.FLOAT, [d_in, "lora_r"]),
                        helper.make_tensor_value_info(b, TensorProto.FLOAT, ["lora_r", d_out])])
        y = node.output[0]
        node.output[0] = f"{site}.base"
        nodes += [helper.make_node("MatMul", [node.input[0], a], [f"{site}.xa"]),
                  helper.make_node("MatMul", [f"{site}.xa", b], [f"{site}.xab"]),
                  helper.make_node("Add", [f"{site}.base", f"{site}.xab"], [y])]
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(proto, str(dst / "model.onnx"))
    return sites


def write_adapter(path: Path, sites: dict[str, tuple[int, int]], seed: int) -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    params = {}
    for site, (d_in, d_out) in sites.items():
        params[f"{site}.A"] = (rng.standard_normal((d_in, RANK)) * 0.05).astype(np.float32)
        params[f"{site}.B"] = (rng.standard_normal((RANK, d_out)) * 0.05).astype(np.float32)
    af = ort.AdapterFormat()
    af.set_adapter_version(1)
    af.set_model_version(1)
    af.set_parameters({n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in params.items()})
    af.export_adapter(str(path))


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
        sites = inject_lora(root / "fused", folder)
        (folder / "adapters").mkdir()
        for i in range(max(KS)):
            write_adapter(folder / "adapters" / f"a{i}.onnx_adapter", sites, seed=i)
    adapter = (folder / "adapters" / "a0.onnx_adapter").stat().st_size
    proc = subprocess.run([sys.executable, __file__, "--worker", str(folder)],
                          capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
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
        lines.append(f"| base + {k} adapters | {r[f'k{k}'] / mb:.0f} | {limit / mb:.0f} | "
                     f"{(r[f'k{k}'] - r['base']) / k / mb:.2f} | "
                     f"{'yes' if r[f'k{k}'] <= limit else 'no'} |")
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
    out.write_text((out.read_text() + "\n" if out.exists() else "# Engine benchmark\n\n")
                   + text)


if __name__ == "__main__":
    main()
