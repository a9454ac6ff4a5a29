"""``palm validate POLICY [POLICY...]``: check bounds policy files without running anything."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add the ``validate`` sub-command to ``sub`` (the result of ``add_subparsers``)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "validate",
        help="check bounds policy files",
        description=(
            "Load each policy (schema, trait names, feasibility of the merged bounds) and print "
            "'OK <file> (version <hash>, N rules)' or every error as file:line:col. "
            "Exit code 0 when all files are valid, 2 otherwise."
        ),
    )
    parser.add_argument("policies", nargs="+", metavar="POLICY", help="policy YAML files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate every file in ``args.policies``; return 0 if all are valid, else 2."""
    from ..exceptions import PolicyError  # lazy: keep `palm --help` fast
    from ..policy import load_policy

    code = 0
    for path in args.policies:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                policy = load_policy(path)
            except PolicyError as exc:
                print(str(exc), file=sys.stderr)
                code = 2
                continue
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        n = len(policy.rules)
        print(f"OK {path} (version {policy.version}, {n} rule{'s' if n != 1 else ''})")
    return code
