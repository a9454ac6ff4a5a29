"""``palm certify``: exact worst-case gaps of a portfolio against a pool."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``certify`` command."""
    p = sub.add_parser(
        "certify",
        help="print the exact worst-case gaps of a portfolio against a pool",
        description="Compute max_w of OPT(w) - max_P w.r and 1 - max_P w.r / OPT(w) over the "
        "whole simplex by linear programming, OPT being the pool's best.",
    )
    p.add_argument("portfolio", metavar="PORTFOLIO", help="manifest (YAML)")
    p.add_argument(
        "--pool",
        required=True,
        metavar="FILE",
        help="reference candidates (CSV or YAML) defining OPT(w)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=20_000,
        help="Dirichlet sample size for the sampled gaps (default 20000)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sample")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print certified and sampled gaps."""
    from ..offline.portfolio.candidates import align_pool, load_candidates
    from ..offline.portfolio.certify import certify_gaps
    from ..offline.portfolio.metrics import sampled_gaps
    from ..offline.portfolio.simplex import simplex_sample
    from ..portfolio.manifest import load_portfolio

    port = load_portfolio(args.portfolio)
    pool_set = load_candidates(args.pool)
    pool = align_pool(pool_set, port.space)
    cert = certify_gaps(port.rewards, pool)
    w = simplex_sample(port.space.dim, args.samples, args.seed)
    sg = sampled_gaps(port.rewards, pool, w)

    def at(x: object) -> str:
        import numpy as np

        return "(" + ", ".join(f"{v:.4f}" for v in np.asarray(x)) + ")"

    print(
        f"portfolio {args.portfolio}: {len(port)} members; pool {args.pool}: "
        f"{len(pool_set)} candidates; traits {list(port.space.names)}"
    )
    print(f"certified additive gap       {cert.additive_gap:.6f} at w={at(cert.additive.at)}")
    print(
        f"certified multiplicative gap {cert.multiplicative_gap:.6f} at "
        f"w={at(cert.multiplicative.at)}"
    )
    print(
        f"sampled ({len(w)} weights) additive {sg.additive:.6f}, multiplicative "
        f"{sg.multiplicative:.6f}"
    )
    if port.certificate is not None:
        c = port.certificate
        print(
            f"stored certificate: eps={c.eps} delta={c.delta} additive_gap={c.additive_gap} "
            f"multiplicative_gap={c.multiplicative_gap} ({c.method})"
        )
    return 0
