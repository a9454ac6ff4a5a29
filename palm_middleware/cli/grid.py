"""``palm grid``: print GRID(d, eps, delta) as CSV."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``grid`` command."""
    p = sub.add_parser(
        "grid",
        help="print the geometric grid GRID(d, eps, delta) as CSV",
        description="Print GRID(d, eps, delta), one weight vector per line.",
    )
    p.add_argument("--dims", type=int, required=True, help="number of traits d (>= 2)")
    p.add_argument("--eps", type=float, required=True, help="multiplicative slack (> 0)")
    p.add_argument("--delta", type=float, required=True, help="additive slack (> 0)")
    p.add_argument(
        "--tau", type=float, default=None, help="smallest non-zero level (default delta/(d-1))"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the grid to stdout."""
    from ..offline.portfolio.grid import grid

    pts = grid(args.dims, args.eps, args.delta, args.tau)
    out = sys.stdout
    out.write(",".join(f"w{i + 1}" for i in range(args.dims)) + "\n")
    for row in pts:
        out.write(",".join(f"{x:.10g}" for x in row) + "\n")
    return 0
