"""``palm report``: PNG plots of a portfolio, or the population report of a deployment.

* ``palm report PORTFOLIO -o DIR``: value curves, ternary maps, usage (offline tooling);
* ``palm report --deployment palm.yaml [--policy new.yaml]``: the operator's view of the users
  (:mod:`palm_middleware.report`), as ``report.html`` and ``report.json``.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``report`` command."""
    p = sub.add_parser(
        "report",
        help="write PNG plots of a portfolio, or a deployment's population report",
        description="With PORTFOLIO: d=2 value curves; d=3 ternary serving map and gap heatmap; "
        "any d: usage. With --deployment palm.yaml: the population report (weights, member "
        "shares, welfare vs one model for everybody, cost of the bounds per rule, evidence, "
        "rules and guard blocks per topic, audit chain) as a self-contained HTML page and JSON; "
        "aggregates only. --policy adds a what-if for a candidate policy.",
    )
    p.add_argument("portfolio", nargs="?", metavar="PORTFOLIO", help="manifest (YAML)")
    p.add_argument(
        "--pool",
        default=None,
        metavar="FILE",
        help="reference candidates (CSV or YAML) for OPT(w) and the gap map",
    )
    p.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="DIR",
        help="output folder (required with PORTFOLIO; default: the deployment's folder)",
    )
    p.add_argument(
        "--deployment", default=None, metavar="PALM_YAML", help="population report of this proxy"
    )
    p.add_argument(
        "--policy",
        default=None,
        metavar="FILE",
        help="with --deployment: a candidate policy to compare on the recorded population",
    )
    p.add_argument(
        "--min-group-size",
        type=int,
        default=None,
        metavar="K",
        help="with --deployment: withhold any number standing for fewer users (default 10)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the plots (or the population report) and list the files."""
    from ..exceptions import InvalidParameterError

    if args.deployment is not None:
        if args.portfolio is not None or args.pool is not None:
            raise InvalidParameterError("--deployment takes no PORTFOLIO or --pool")
        from .population import run_population

        return run_population(args)
    if args.portfolio is None or args.output is None:
        raise InvalidParameterError("give PORTFOLIO and -o DIR, or --deployment palm.yaml")
    if args.policy is not None or args.min_group_size is not None:
        raise InvalidParameterError("--policy and --min-group-size need --deployment")
    from ..offline.portfolio.candidates import align_pool, load_candidates
    from ..offline.portfolio.report import write_report
    from ..portfolio.manifest import load_portfolio

    port = load_portfolio(args.portfolio)
    pool = align_pool(load_candidates(args.pool), port.space) if args.pool else None
    files = write_report(port.rewards, port.ids, port.space.names, args.output, pool=pool)
    for f in files:
        print(f)
    return 0
