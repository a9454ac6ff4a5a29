"""``palm build``: prune a pool of measured candidates to a certified portfolio manifest."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``build`` command."""
    p = sub.add_parser(
        "build", help="build a certified portfolio from candidate policies",
        description="Choose a small set of candidates so that every weight vector has a member "
        "within (1 - eps)*OPT(w) - delta of the pool's best; write the manifest with an exact "
        "LP certificate.")
    p.add_argument("--candidates", required=True, metavar="FILE",
                   help="CSV (id, one column per trait, optional <trait>_se, w_<trait>) or YAML")
    p.add_argument("--eps", type=float, required=True, help="multiplicative slack in [0, 1)")
    p.add_argument("--delta", type=float, required=True, help="additive slack (>= 0)")
    p.add_argument("--max-size", type=int, default=None, metavar="K",
                   help="at most K members: minimize eps for this size instead")
    p.add_argument("--method", choices=("greedy", "exact"), default="greedy",
                   help="set cover: greedy or exact ILP (default greedy)")
    p.add_argument("--traits", default=None,
                   help="comma-separated trait columns to use (default: all)")
    p.add_argument("--noise-z", type=float, default=0.0, metavar="Z",
                   help="noise-aware cover with confidence bounds of Z standard errors")
    p.add_argument("--n-sample", type=int, default=2000,
                   help="dense sample size added to the grid universe (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dense sample")
    p.add_argument("--name", default=None, help="portfolio name")
    p.add_argument("-o", "--output", required=True, metavar="PORTFOLIO",
                   help="manifest to write (YAML)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build and write the manifest; print a summary."""
    from ..portfolio.builder import build_portfolio
    from ..portfolio.candidates import load_candidates

    traits = args.traits.split(",") if args.traits else None
    pool = load_candidates(args.candidates, traits)
    res = build_portfolio(
        pool.space, pool.candidates, args.eps, args.delta,
        method=args.method, max_size=args.max_size, noise_z=args.noise_z,
        n_sample=args.n_sample, random_state=args.seed, name=args.name,
        reference=f"best of the {len(pool)} candidates in {pool.source}",
    )
    res.portfolio.save(args.output)
    cert = res.portfolio.certificate
    assert cert is not None
    print(f"kept {len(res.portfolio)} of {len(pool)} candidates: {', '.join(res.portfolio.ids)}")
    print(f"certified over the whole simplex: eps={cert.eps:.6f} at delta={cert.delta:g}; "
          f"multiplicative gap {cert.multiplicative_gap:.6f}, additive gap "
          f"{cert.additive_gap:.6f}")
    print(f"wrote {args.output}")
    return 0
