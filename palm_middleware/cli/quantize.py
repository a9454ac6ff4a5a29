"""``palm quantize SRC --bits 8|4 --out DIR``: weight-only int8/int4 copy of an ONNX export."""

from __future__ import annotations

import argparse
import importlib.util

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``quantize`` command."""
    p = sub.add_parser(
        "quantize",
        help="weight-only int8/int4 quantization of an exported model (opt-in)",
        description="Copy the model folder, store the decoder's MatMul weights as 8- or 4-bit "
        "blocks (ONNX Runtime MatMulNBits), compare greedy decoding with the fp32 source and "
        "write the agreement into model_card.json. Greedy outputs change slightly: measure "
        "the members' rewards on the quantized folder you serve.",
    )
    p.add_argument("source", metavar="SRC", help="fp32 model folder (from `palm export`)")
    p.add_argument("--bits", type=int, choices=(8, 4), required=True, help="bits per weight")
    p.add_argument(
        "--block-size",
        type=int,
        default=32,
        metavar="N",
        help="weights per scale/zero point (power of two >= 16; default 32)",
    )
    p.add_argument(
        "--lm-head",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also quantize the LM head (default: yes; the largest matrix, so the "
        "largest speed gain, and the most direct effect on the logits)",
    )
    p.add_argument(
        "--accuracy-level",
        type=int,
        choices=(0, 1, 4),
        default=4,
        help="MatMulNBits compute type: 4 = int8 activations (default, fastest on "
        "CPU), 0/1 = fp32 activations (int4 only: 8-bit weights then run ~10x slower "
        "than fp32 on CPU)",
    )
    p.add_argument(
        "--check-tokens",
        type=int,
        default=32,
        metavar="N",
        help="greedy tokens compared per check prompt (default 32)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="new model folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Quantize, check, print a one-line summary of size and agreement."""
    from ..exceptions import EngineError

    if importlib.util.find_spec("onnx") is None:
        raise EngineError(
            "palm quantize needs the onnx package: pip install 'palm-middleware[export]'"
        )
    from ..offline.engines.quantize import quantize

    res = quantize(
        args.source,
        args.out,
        bits=args.bits,
        block_size=args.block_size,
        lm_head=args.lm_head,
        accuracy_level=args.accuracy_level,
        check_tokens=args.check_tokens,
        progress=not args.no_progress,
    )
    q = res.card["quantization"]
    a = q["agreement"]
    print(
        f"wrote {res.path / 'model.onnx'} (int{q['bits']}, block {q['block_size']}, "
        f"{q['n_quantized']} MatMuls, weights {q['weights_mb']['fp32']:.0f} -> "
        f"{q['weights_mb']['quantized']:.0f} MB, lm_head {q['lm_head']}); greedy agreement "
        f"with the source over {a['n_prompts']} prompts x {a['n_tokens']} tokens: prefix "
        f"{a['prefix']:.0%}, overall {a['overall']:.0%}, teacher-forced "
        f"{a['teacher_forced']:.0%}; max first-step logit diff "
        f"{a['max_logit_diff_first_step']:.3g}"
    )
    return 0
