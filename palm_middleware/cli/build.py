"""``palm build``: prune a pool of measured candidates to a certified portfolio manifest."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..portfolio.manifest import Portfolio

__all__ = ["register", "with_backends"]


def with_backends(built: Portfolio, source: Portfolio) -> Portfolio:
    """``built`` with each member's backend and description taken from ``source``.

    Rewards, standard errors and the certificate stay as measured and certified.

    Raises:
        ManifestError: a built member is not in ``source``, or has no backend there.
    """
    import dataclasses

    from ..exceptions import ManifestError

    members = []
    for m in built.members:
        if m.id not in source:
            raise ManifestError(
                f"{source.source}: no member {m.id!r} to take its backend from "
                f"(members: {', '.join(source.ids)})"
            )
        src = source.member(m.id)
        if src.backend is None:
            raise ManifestError(f"{source.source}: member {m.id!r} has no backend")
        members.append(
            dataclasses.replace(
                m, backend=src.backend, description=src.description or m.description
            )
        )
    default = source.default_member if source.default_member in built else None
    return dataclasses.replace(built, members=tuple(members), default_member=default)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``build`` command."""
    p = sub.add_parser(
        "build",
        help="build a certified portfolio from candidate policies",
        description="Choose a small set of candidates so that every weight vector has a member "
        "within (1 - eps)*OPT(w) - delta of the pool's best; write the manifest with an exact "
        "LP certificate.",
    )
    p.add_argument(
        "--candidates",
        required=True,
        metavar="FILE",
        help="CSV (id, one column per trait, optional <trait>_se, w_<trait>) or YAML",
    )
    p.add_argument("--eps", type=float, required=True, help="multiplicative slack in [0, 1)")
    p.add_argument("--delta", type=float, required=True, help="additive slack (>= 0)")
    p.add_argument(
        "--max-size",
        type=int,
        default=None,
        metavar="K",
        help="at most K members: minimize eps for this size instead",
    )
    p.add_argument(
        "--method",
        choices=("greedy", "exact"),
        default="greedy",
        help="set cover: greedy or exact ILP (default greedy)",
    )
    p.add_argument(
        "--traits", default=None, help="comma-separated trait columns to use (default: all)"
    )
    p.add_argument(
        "--noise-z",
        type=float,
        default=0.0,
        metavar="Z",
        help="noise-aware cover with confidence bounds of Z standard errors",
    )
    p.add_argument(
        "--n-sample",
        type=int,
        default=2000,
        help="dense sample size added to the grid universe (default 2000)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the dense sample")
    p.add_argument("--name", default=None, help="portfolio name")
    p.add_argument(
        "--members",
        default=None,
        metavar="MANIFEST",
        help="manifest the candidates were measured from (palm eval --portfolio): "
        "kept members get their backend and description from it, so the built "
        "portfolio can serve",
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="PORTFOLIO", help="manifest to write (YAML)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build and write the manifest; print a summary."""
    from ..offline.portfolio.builder import build_portfolio
    from ..offline.portfolio.candidates import load_candidates
    from ..portfolio.manifest import load_portfolio

    traits = args.traits.split(",") if args.traits else None
    pool = load_candidates(args.candidates, traits)
    res = build_portfolio(
        pool.space,
        pool.candidates,
        args.eps,
        args.delta,
        method=args.method,
        max_size=args.max_size,
        noise_z=args.noise_z,
        n_sample=args.n_sample,
        random_state=args.seed,
        name=args.name,
        reference=f"best of the {len(pool)} candidates in {pool.source}",
    )
    portfolio = res.portfolio
    if args.members:
        portfolio = with_backends(portfolio, load_portfolio(args.members))
    portfolio.save(args.output)
    cert = portfolio.certificate
    assert cert is not None
    print(f"kept {len(res.portfolio)} of {len(pool)} candidates: {', '.join(res.portfolio.ids)}")
    print(
        f"certified over the whole simplex: eps={cert.eps:.6f} at delta={cert.delta:g}; "
        f"multiplicative gap {cert.multiplicative_gap:.6f}, additive gap "
        f"{cert.additive_gap:.6f}"
    )
    print(f"wrote {args.output}")
    return 0
