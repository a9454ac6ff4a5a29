"""Greedy agreement of the served default portfolio with its fp32 serving, member by member.

Each member of ``palm_middleware/data/smollm2/portfolio.yaml`` (GenAI bases: the prompted
member on ``smollm2-genai-int4-gguf``, the LoRA members on ``smollm2-genai-int4-gguf-lora`` with
their adapters; ``--portfolio`` takes a manifest on the ``smollm2-genai-int8`` bases too) against
the same member of ``portfolio-fp32.yaml`` (the ``palm prepare-base`` fp32 export on the raw
loop, ``smollm2`` / ``smollm2-lora``), on the prompts and token cap the rewards are measured
with (``bench/results/prompts_mixed40.yaml``, 96 tokens), greedy:

- teacher-forced: the candidate's top token on the fp32 reply, position by position (the fp32
  reply's EOS included): the >= 90% bar of issue 15;
- free-running: equal positions over the fp32 reply's length, the share before the first
  divergence, and identical replies;
- decode speed of both, interleaved prompt by prompt (completion tokens / wall time).

    nice -n 10 python bench/bench_served_agreement.py --cache-dir ~/.cache/palm-middleware \\
        --out bench/results/served_agreement.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_engine import _cpu  # noqa: E402

from palm_middleware.data import bundled  # noqa: E402
from palm_middleware.engines.genai import GenaiEngine  # noqa: E402
from palm_middleware.engines.members import engine_for_member  # noqa: E402
from palm_middleware.engines.registry import SessionRegistry  # noqa: E402
from palm_middleware.offline.evaluation.prompts import load_prompt_set  # noqa: E402
from palm_middleware.portfolio.manifest import load_portfolio  # noqa: E402

BAR = 0.90


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    cache: Path = args.cache_dir
    served = load_portfolio(args.portfolio)
    fp32 = load_portfolio(args.reference)
    folders = {
        "smollm2": cache / "smollm2",
        "smollm2-lora": cache / "smollm2-lora",
        "smollm2-genai-int8": cache / "smollm2-genai-int8",
        "smollm2-genai-int8-lora": cache / "smollm2-genai-int8-lora",
        "smollm2-genai-int4-gguf": cache / "smollm2-genai-int4-gguf",
        "smollm2-genai-int4-gguf-lora": cache / "smollm2-genai-int4-gguf-lora",
    }
    prompts = load_prompt_set(args.prompts).select()[: args.limit]
    reg = SessionRegistry()
    rows = []
    for member in served.members:
        cand = engine_for_member(member, reg, bases=folders, root=args.portfolio.parent)
        ref = engine_for_member(
            fp32.member(member.id), reg, bases=folders, root=args.reference.parent
        )
        assert isinstance(cand, GenaiEngine), f"{member.id} is not served by GenAI: {cand!r}"
        params = ref.defaults.merged({"max_tokens": args.max_tokens})
        assert params.temperature == 0.0, f"{member.id} samples; agreement needs greedy"
        forced = equal = positions = prefix_sum = same = 0
        tps: dict[str, list[float]] = {"fp32": [], "served": []}
        t_member = time.perf_counter()
        for k, p in enumerate(prompts):
            messages = [{"role": "user", "content": p.text}]
            ids = ref.encode_prompt(messages)
            assert cand.encode_prompt(messages) == ids, "tokenizers differ"
            outs = {}
            order = (
                [("fp32", ref), ("served", cand)]
                if k % 2 == 0
                else [("served", cand), ("fp32", ref)]
            )
            for name, engine in order:
                t = time.perf_counter()
                outs[name] = engine.generate(messages, params)
                tps[name].append(len(outs[name].token_ids) / (time.perf_counter() - t))
            a, b = list(outs["fp32"].token_ids), list(outs["served"].token_ids)
            logits = cand.model.step_logits(ids, a, cand.adapter)
            forced += int((logits.argmax(axis=1) == np.asarray(a)).sum())
            equal += sum(x == y for x, y in zip(a, b))
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            prefix_sum += first / max(len(a), 1)
            positions += len(a)
            same += a == b
        row = {
            "member": member.id,
            "fp32_base": fp32.member(member.id).backend.base,  # type: ignore[union-attr]
            "served_base": member.backend.base,  # type: ignore[union-attr]
            "prompts": len(prompts),
            "positions": positions,
            "teacher_forced": forced / positions,
            "free_running": equal / positions,
            "prefix": prefix_sum / len(prompts),
            "identical_replies": same,
            "tps_fp32": statistics.median(tps["fp32"]),
            "tps_served": statistics.median(tps["served"]),
            "seconds": time.perf_counter() - t_member,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def report(
    rows: list[dict[str, Any]], args: argparse.Namespace, seconds: float, load: list[float]
) -> str:
    lines = [
        f"Machine: {_cpu()}, nproc={os.cpu_count()}, Python {platform.python_version()}; load "
        f"average {min(load):.1f}-{max(load):.1f} during the run (shared machine).",
        f"Command: `python bench/bench_served_agreement.py {' '.join(sys.argv[1:])}` "
        f"({seconds:.0f} s). Greedy, {args.max_tokens} tokens max, {rows[0]['prompts']} prompts "
        f"of {args.prompts.name}; candidate = {args.portfolio.name} (GenAI), reference = "
        f"{args.reference.name} (raw loop, fp32 export).",
        "",
        "| member | fp32 base → served base | positions | teacher-forced | free-running "
        "| prefix | identical replies | tok/s per request, prefill included, fp32 → served "
        "(median) | ≥ 90 % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['member']} | {r['fp32_base']} → {r['served_base']} | {r['positions']} | "
            f"{r['teacher_forced']:.1%} | {r['free_running']:.1%} | {r['prefix']:.1%} | "
            f"{r['identical_replies']}/{r['prompts']} | "
            f"{r['tps_fp32']:.1f} → {r['tps_served']:.1f} "
            f"({r['tps_served'] / r['tps_fp32']:.2f}×) | "
            f"{'yes' if r['teacher_forced'] >= BAR else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_cache = Path(os.environ.get("PALM_CACHE", Path.home() / ".cache" / "palm-middleware"))
    ap.add_argument("--cache-dir", type=Path, default=default_cache)
    ap.add_argument("--portfolio", type=Path, default=bundled("smollm2/portfolio.yaml"))
    ap.add_argument("--reference", type=Path, default=bundled("smollm2/portfolio-fp32.yaml"))
    ap.add_argument(
        "--prompts", type=Path, default=Path(__file__).parent / "results" / "prompts_mixed40.yaml"
    )
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    load = [os.getloadavg()[0]]
    rows = measure(args)
    load.append(os.getloadavg()[0])
    text = report(rows, args, time.perf_counter() - t0, load)
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
        (args.out.with_suffix(".json")).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
