"""``palm inspect PORTFOLIO``: members, reward profiles, which members can ever be chosen."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``inspect`` command."""
    p = sub.add_parser("inspect", help="show a portfolio manifest")
    p.add_argument("portfolio", type=Path, help="portfolio manifest (YAML)")
    p.add_argument(
        "--samples",
        type=int,
        default=20000,
        help="weight vectors sampled to estimate each member's share",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the manifest as a table."""
    from ..portfolio.manifest import load_portfolio
    from ..routing import Router

    pf = load_portfolio(args.portfolio)
    names = pf.space.names
    rng = np.random.default_rng(0)
    ws = rng.dirichlet(np.ones(pf.space.dim), size=max(args.samples, 1))
    router = Router(pf)
    chosen = np.array([router.route(w).index for w in ws])
    share = np.bincount(chosen, minlength=len(pf)) / len(ws)
    print(f"portfolio {pf.name or '-'} ({args.portfolio}): {len(pf)} members, traits {list(names)}")
    head = f"{'member':<20}" + "".join(f"{n[:11]:>12}" for n in names) + f"{'share':>8}"
    print(head)
    for m, s in zip(pf.members, share):
        cells = "".join(f"{v:>12.3f}" for v in m.reward)
        mark = "" if s > 0 else "  (never chosen under uniform users)"
        print(f"{m.id:<20}{cells}{100 * s:>7.1f}%{mark}")
    if pf.default_member:
        print(f"default member: {pf.default_member}")
    c = pf.certificate
    if c is not None:
        print(
            f"certificate: eps={c.eps} delta={c.delta} method={c.method} "
            f"multiplicative_gap={c.multiplicative_gap} additive_gap={c.additive_gap}"
        )
    else:
        print("certificate: none")
    return 0
