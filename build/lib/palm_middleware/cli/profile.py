"""``palm profile USER``: what the deployment holds about one user."""

from __future__ import annotations

import argparse
import json

from ._common import add_deployment_options, open_palm


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``profile`` command."""
    p = sub.add_parser("profile", help="show (or reset, forget) a user's profile")
    p.add_argument("user", help="the user id")
    add_deployment_options(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--reset", action="store_true", help="forget learned preferences")
    g.add_argument("--forget", action="store_true", help="delete everything about the user")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the profile."""
    palm = open_palm(args)
    try:
        if args.reset:
            palm.reset(args.user)
            print(f"reset {args.user}")
            return 0
        if args.forget:
            palm.forget(args.user)
            print(f"forgot {args.user}")
            return 0
        prof = palm.profile(args.user)
        if args.json:
            print(json.dumps(prof.to_dict(), indent=2))
            return 0
        print(
            f"user {args.user} (key {prof.user_key}): {prof.n_events} events, "
            f"evidence {prof.evidence:.2f}{', opted out' if prof.opted_out else ''}"
        )
        print(f"{'trait':<14}{'weight':>8}{'90% interval':>18}{'applied':>9}")
        for t, w in prof.weights.items():
            print(
                f"{t:<14}{w:>8.3f}   [{prof.lower[t]:.3f}, {prof.upper[t]:.3f}]"
                f"{prof.effective_weights[t]:>9.3f}"
            )
        if prof.rules_fired:
            print(f"policy rules applied: {', '.join(prof.rules_fired)}")
        return 0
    finally:
        palm.store.close()
