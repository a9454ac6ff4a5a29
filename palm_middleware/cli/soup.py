"""``palm soup A B --lam X -o OUT``: interpolate the weights of two ONNX exports."""

from __future__ import annotations

import argparse
import importlib.util

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``soup`` command."""
    p = sub.add_parser(
        "soup",
        help="mix two ONNX exports: (1 - lam) * A + lam * B",
        description="Check that two model folders have the same graph, interpolate every "
        "float initializer that differs, and write a new model folder (tokenizer and configs "
        "copied from A) with model_card.json.",
    )
    p.add_argument("a", metavar="A", help="first model folder (weight 1 - lam)")
    p.add_argument("b", metavar="B", help="second model folder (weight lam)")
    p.add_argument("--lam", type=float, required=True, help="weight of B, in [0, 1]")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="new model folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the soup and print a one-line summary."""
    from ..exceptions import EngineError

    if importlib.util.find_spec("onnx") is None:
        raise EngineError("palm soup needs the onnx package: pip install 'palm-middleware[export]'")
    from ..offline.engines.soup import soup

    res = soup(args.a, args.b, args.lam, args.output)
    print(
        f"wrote {res.path / 'model.onnx'} (lam={args.lam}: {res.n_mixed} initializers mixed, "
        f"{res.n_shared} shared; sha256 {res.card['sha256'][:12]})"
    )
    return 0
