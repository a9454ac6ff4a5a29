"""``palm prepare-lora-base [--base DIR] [--out DIR]``: the shared base with rank-0 LoRA sites."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``prepare-lora-base`` command."""
    p = sub.add_parser(
        "prepare-lora-base",
        help="copy the prepared base with LoRA sites for adapter members",
        description="Copy the folder written by `palm prepare-base` and add a LoRA site "
        "(Y = X·W + (X·A)·B, A/B overridable, rank 0 so the graph equals the base) on each "
        "target projection, named after its torch module; writes lora_sites.json. Adapter "
        "members (kind: adapter, base: smollm2-lora) run on this folder. Skipped when the "
        "folder already holds sites for the same base (sha256) and targets. Needs `onnx`.",
    )
    p.add_argument(
        "--base",
        metavar="DIR",
        default=None,
        help="folder from `palm prepare-base` (default: $PALM_CACHE/smollm2, else "
        "~/.cache/palm-middleware/smollm2)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="destination (default: BASE's sibling `smollm2-lora`)",
    )
    p.add_argument(
        "--targets",
        nargs="+",
        default=["q_proj", "v_proj"],
        metavar="NAME",
        help="last name of the torch modules that get sites (default q_proj v_proj)",
    )
    p.add_argument("--force", action="store_true", help="rewrite even if cached")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prepare (or reuse) the LoRA base folder and print where it is."""
    import time
    from pathlib import Path

    from ..offline.engines.base_model import default_base_dir
    from ..offline.engines.lora import add_lora_sites

    t0 = time.perf_counter()
    base = Path(args.base) if args.base else default_base_dir()
    out = Path(args.out) if args.out else base.with_name(f"{base.name}-lora")
    sites = add_lora_sites(base, out, args.targets, force=args.force)
    print(
        f"LoRA base at {out}: {len(sites)} sites on {' '.join(args.targets)} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    return 0
