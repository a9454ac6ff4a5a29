"""What switching LoRA members costs: requests alternating two adapters vs one adapter (issue 15).

One process, one shared base session (``SessionRegistry``), the base graph with rank-16 LoRA
sites on q_proj/v_proj (``bench_lora.py``'s sites and random adapters). Requests of
``--tokens`` greedy tokens go to members A, A, B, B, ...: half of them follow a request to the
other adapter (a switch), half follow one to the same adapter, interleaved request by request;
then two base requests (no adapter: the LoRA path's own cost). Throughput per request = its new
tokens / its wall time (prefill included: a switch happens per request). Target (issue 15): a
switch costs <= 5% of same-member throughput.

    python bench/bench_lora_switch.py --base ~/.cache/palm-middleware/smollm2 --cache /tmp/peers \\
        --rounds 5 --requests 6 --tokens 32 [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from bench_engine import _cpu  # noqa: E402
from bench_lora import TARGETS, _random_adapter  # noqa: E402
from bench_peers import MESSAGES  # noqa: E402

from palm_middleware.engines import OnnxEngine, RuntimeOptions, SessionRegistry  # noqa: E402
from palm_middleware.offline.engines.lora import add_lora_sites  # noqa: E402

CLASSES = ("same", "switch", "base")


def prepare(base: Path, cache: Path) -> Path:
    """``cache/<base name>-lora`` with LoRA sites and adapters a.onnx_adapter, b.onnx_adapter."""
    folder = cache / f"{base.name}-lora"
    sites = add_lora_sites(base, folder, TARGETS)
    for i, name in enumerate("ab"):
        path = folder / "adapters" / f"{name}.onnx_adapter"
        if not path.is_file():
            path.parent.mkdir(exist_ok=True)
            _random_adapter(path, sites, seed=i)
    return folder


def measure(
    folder: Path, device: str, rounds: int, requests: int, tokens: int, passes: int
) -> dict[str, Any]:
    """tok/s of each request, by class, and the providers the session really got.

    Each round serves A, A, B, B, ... then base, base: every other adapter request follows the
    other adapter (``switch``), the rest follow their own (``same``). The two classes alternate
    request by request, so the load of a shared machine drifts equally over both.
    """
    registry = SessionRegistry(RuntimeOptions(device=device))  # type: ignore[arg-type]
    adapters = folder / "adapters"
    members = {
        name: OnnxEngine(folder, registry=registry, adapter=adapters / f"{name}.onnx_adapter")
        for name in "ab"
    }
    base = OnnxEngine(folder, registry=registry)
    prompt: Any = MESSAGES if base.model.chat_template is not None else "def f(x):"
    params = {"max_tokens": tokens, "temperature": 0.0}
    outputs = {name: m.generate(prompt, params).token_ids for name, m in members.items()}
    outputs["base"] = base.generate(prompt, params).token_ids  # warm-up, and adapters active?
    plan = [("ab"[(i // 2) % 2], i % 2 == 0) for i in range(2 * (requests // 2))]
    tps: dict[str, list[float]] = {c: [] for c in CLASSES}
    for _ in range(rounds):
        steps = [(members[n], "switch" if first else "same") for n, first in plan]
        for engine, cls in [*steps, (base, "base"), (base, "base")]:
            t = time.perf_counter()
            n = len(engine.generate(prompt, params).token_ids)
            tps[cls].append(n / (time.perf_counter() - t))
    return {
        "tps": tps,
        "steps": pass_times(members, passes),
        "providers": list(base.model.providers),
        "changed": sum(outputs[m] != outputs["base"] for m in "ab"),
    }


def pass_times(members: dict[str, OnnxEngine], pairs: int) -> dict[str, list[float]]:
    """Seconds of one forward pass (8 tokens, empty cache) through adapter A, right after a pass
    through A (``same``) or through B (``switch``); the two kinds of pair alternate, so the
    worst case (a switch before every model step) is measured without the noise of whole
    requests."""
    model = members["a"].model
    ro = {n: m._run_options(model) for n, m in members.items()}
    ids = np.arange(1, 9, dtype=model.ids_dtype)[None, :]
    feeds: dict[str, Any] = {"input_ids": ids, **{k.input_name: k.empty() for k in model.kv_inputs}}
    if "attention_mask" in model.input_names:
        feeds["attention_mask"] = np.ones((1, 8), dtype=np.int64)
    if "position_ids" in model.input_names:
        feeds["position_ids"] = np.arange(8, dtype=np.int64)[None, :]
    out: dict[str, list[float]] = {"same": [], "switch": []}
    for i in range(2 * pairs):
        kind = "switch" if i % 2 else "same"
        model.session.run([model.logits_name], feeds, ro["b" if kind == "switch" else "a"])
        t = time.perf_counter()
        model.session.run([model.logits_name], feeds, ro["a"])
        out[kind].append(time.perf_counter() - t)
    return out


def report(r: dict[str, Any], args: argparse.Namespace, seconds: float) -> str:
    med = {c: statistics.median(v) for c, v in r["tps"].items()}
    loss = 1 - med["switch"] / med["same"]
    lines = [
        f"Machine: {_cpu()}, nproc={os.cpu_count()}, Python {platform.python_version()}; "
        f"load average {os.getloadavg()[0]:.2f} (shared machine); providers {r['providers']}.",
        f"Command: `python bench/bench_lora_switch.py {' '.join(sys.argv[1:])}` ({seconds:.0f} s)."
        f" Requests of {args.tokens} greedy tokens (prefill included), {args.rounds} rounds of "
        f"A, A, B, B, ... ({args.requests} adapter requests) then base, base; "
        f"{r['changed']} of 2 adapters changed the base's tokens.",
        "",
        "| request | n | tok/s median (min–max) | × same member |",
        "|---|---|---|---|",
    ]
    labels = {
        "same": "same adapter as the request before",
        "switch": "other adapter than the request before (a switch)",
        "base": "base model, no adapter",
    }
    for c in CLASSES:
        v = r["tps"][c]
        lines.append(
            f"| {labels[c]} | {len(v)} | {med[c]:.1f} ({min(v):.1f}–{max(v):.1f}) | "
            f"{med[c] / med['same']:.3f} |"
        )
    st = {k: statistics.median(v) * 1e3 for k, v in r["steps"].items()}
    step_loss = 1 - st["same"] / st["switch"]
    verdict = "met" if max(loss, step_loss) <= 0.05 else "missed"
    lines += [
        "",
        f"One forward pass through A (8 tokens), {len(r['steps']['same'])} pairs: after A "
        f"{st['same']:.1f} ms, after B {st['switch']:.1f} ms (medians) → a switch before every "
        f"model step would cost {step_loss:+.1%}.",
        "",
        f"Switch cost: {loss:+.1%} of same-member request throughput, {step_loss:+.1%} per pass "
        f"(target ≤ 5%: {verdict}).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="fp32 ONNX folder (palm prepare-base)")
    ap.add_argument("--cache", required=True, help="where the LoRA folder is made (cached)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--passes", type=int, default=100, help="pairs of single forward passes")
    ap.add_argument("--out", help="also write the table here")
    args = ap.parse_args()
    started = time.perf_counter()
    folder = prepare(Path(args.base).expanduser(), Path(args.cache))
    r = measure(folder, args.device, args.rounds, args.requests, args.tokens, args.passes)
    text = report(r, args, time.perf_counter() - started)
    print(text)
    if args.out:
        Path(args.out).write_text("# LoRA member switch cost\n\n" + text)


if __name__ == "__main__":
    main()
