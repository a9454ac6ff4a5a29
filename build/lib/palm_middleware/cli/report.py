"""``palm report``: PNG plots of a portfolio (value curves, ternary maps, usage)."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``report`` command."""
    p = sub.add_parser(
        "report",
        help="write PNG plots of a portfolio",
        description="d=2: value curves; d=3: ternary serving map and gap heatmap; any d: usage.",
    )
    p.add_argument("portfolio", metavar="PORTFOLIO", help="manifest (YAML)")
    p.add_argument(
        "--pool",
        default=None,
        metavar="FILE",
        help="reference candidates (CSV or YAML) for OPT(w) and the gap map",
    )
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the plots and list them."""
    from ..portfolio.candidates import align_pool, load_candidates
    from ..portfolio.manifest import load_portfolio
    from ..portfolio.report import write_report

    port = load_portfolio(args.portfolio)
    pool = align_pool(load_candidates(args.pool), port.space) if args.pool else None
    files = write_report(port.rewards, port.ids, port.space.names, args.output, pool=pool)
    for f in files:
        print(f)
    return 0
