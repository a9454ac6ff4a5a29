"""``palm report --deployment palm.yaml``: the population report of a deployment."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["run_population"]


def run_population(args: argparse.Namespace) -> int:
    """Write ``report.html`` and ``report.json`` and say where they are."""
    from ..policy import load_policy
    from ..report import DEFAULT_MIN_GROUP_SIZE, open_deployment, write_report
    from ..report.privacy import check_min_group_size

    k = check_min_group_size(
        DEFAULT_MIN_GROUP_SIZE if args.min_group_size is None else args.min_group_size
    )
    candidate = load_policy(args.policy) if args.policy is not None else None
    sources = open_deployment(args.deployment)
    try:
        out = Path(args.output) if args.output is not None else sources.root
        page, data = write_report(sources, out, candidate=candidate, min_group_size=k)
    finally:
        sources.close()
    print(page)
    print(data)
    return 0
