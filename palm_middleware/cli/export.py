"""``palm export HF_FOLDER OUT``: export a local Hugging Face model to an ONNX model folder."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``export`` command."""
    p = sub.add_parser(
        "export",
        help="export a local Hugging Face causal LM to ONNX (with KV cache)",
        description="Export with optimum (task text-generation-with-past), check that ONNX "
        "greedy tokens equal torch greedy tokens on a few prompts, and write model_card.json. "
        "Needs `pip install 'palm-middleware[export]'`; nothing is downloaded.",
    )
    p.add_argument(
        "source",
        metavar="HF_FOLDER",
        help="local folder with config.json, "
        "weights and tokenizer files (or a GGUF folder with --gguf)",
    )
    p.add_argument("output", metavar="OUT", help="new model folder")
    p.add_argument(
        "--gguf",
        default=None,
        metavar="FILE",
        help="GGUF file inside HF_FOLDER to load (de-quantized to fp32)",
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (exporter default)")
    p.add_argument(
        "--atol", type=float, default=1e-4, help="tolerance of optimum's logits validation"
    )
    p.add_argument(
        "--check-tokens",
        type=int,
        default=16,
        metavar="N",
        help="greedy tokens compared per check prompt (0: skip the check)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, check, print the card's summary; exit 1 if the token check failed."""
    from ..offline.engines.export import export_model

    res = export_model(
        args.source,
        args.output,
        gguf_file=args.gguf,
        opset=args.opset,
        atol=args.atol,
        n_check_tokens=args.check_tokens,
        progress=not args.no_progress,
    )
    check = res.card["check"]
    print(
        f"wrote {res.path / 'model.onnx'} (opset {res.card['opset']}, "
        f"sha256 {res.card['sha256'][:12]}); check: {check['result']}"
    )
    return 0 if check["result"] in ("passed", "skipped") else 1
