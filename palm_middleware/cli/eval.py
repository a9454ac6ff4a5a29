"""``palm eval``: measure members' reward profiles over a prompt set; write a candidates file."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``eval`` command."""
    p = sub.add_parser(
        "eval",
        help="measure members' reward profiles (r̂ ± standard error) over a prompt set",
        description="Run every member of a manifest over a prompt set (risky prompts skipped), "
        "score each reply with the trait scorers, and write the candidates file `palm build` "
        "reads (id, traits, <trait>_se). Replies are cached, so reruns are instant.",
    )
    p.add_argument(
        "--portfolio",
        required=True,
        type=Path,
        metavar="MANIFEST",
        help="manifest whose members have backends",
    )
    p.add_argument(
        "--prompts",
        type=Path,
        default=None,
        metavar="FILE",
        help="prompt set YAML (default: the bundled palm-prompts-v1, 161 prompts)",
    )
    p.add_argument(
        "--scorers",
        type=Path,
        default=None,
        metavar="FILE",
        help="scorer calibration YAML (default: the bundled scorers.yaml)",
    )
    p.add_argument(
        "--traits",
        default=None,
        help="comma-separated traits to measure (default: the manifest's traits)",
    )
    p.add_argument("--limit", type=int, default=None, metavar="N", help="first N prompts only")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        metavar="N",
        help="cap each member's max_tokens at N",
    )
    p.add_argument(
        "--include-risky",
        action="store_true",
        help="also measure on prompts flagged risky (skipped by default)",
    )
    p.add_argument(
        "--base",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="folder of a shared base model named in the manifest (repeatable)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=Path(".palm-cache/replies.sqlite"),
        metavar="FILE",
        help="reply cache (default .palm-cache/replies.sqlite)",
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument(
        "--workers", type=int, default=1, help="concurrent requests per member (default 1)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of sampling members (default 0)")
    p.add_argument(
        "--update-manifest",
        action="store_true",
        help="also write the measured reward and provenance into the manifest",
    )
    p.add_argument(
        "--replies-out",
        type=Path,
        default=None,
        metavar="JSONL",
        help="also write every reply with its scores (to audit the scorers)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="CANDIDATES",
        help="candidates CSV to write",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure, print the table, write the candidates file (and the manifest if asked)."""
    from ..data import bundled
    from ..exceptions import InvalidParameterError
    from ..offline.evaluation import (
        ReplyCache,
        evaluate_portfolio,
        load_prompt_set,
        update_portfolio,
        write_candidates,
        write_replies,
    )
    from ..offline.scoring.calibration import load_scorers
    from ..portfolio.manifest import load_portfolio
    from ._common import parse_bases

    if args.limit is not None and args.limit < 1:
        raise InvalidParameterError(f"--limit must be >= 1; got {args.limit}")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise InvalidParameterError(f"--max-tokens must be >= 1; got {args.max_tokens}")
    portfolio = load_portfolio(args.portfolio)
    pset = load_prompt_set(args.prompts or bundled("prompts.yaml"))
    traits = args.traits.split(",") if args.traits else list(portfolio.space.names)
    scorers = load_scorers(args.scorers or bundled("scorers.yaml"), traits)
    prompts = pset.select(include_risky=args.include_risky, limit=args.limit)
    cache = None if args.no_cache else ReplyCache(args.cache)
    print(
        f"measuring {len(portfolio)} members on {len(prompts)} prompts of {pset.name} "
        f"({sum(p.risky for p in pset.prompts)} risky prompts "
        f"{'included' if args.include_risky else 'skipped'}); traits: {', '.join(traits)}"
    )
    width = max(len(m) for m in portfolio.ids)

    def show(r: object) -> None:
        from ..offline.evaluation import MemberResult

        assert isinstance(r, MemberResult)
        cells = "  ".join(f"{t} {m:.3f}±{s:.3f}" for t, m, s in zip(r.traits, r.mean, r.stderr))
        print(
            f"  {r.id:<{width}}  n={r.n}  {cells}  tokens/reply {r.mean_tokens:.1f}  "
            f"truncated {r.truncated:.0%}  cached {r.n_cached}/{r.n}  {r.seconds:.1f}s",
            flush=True,
        )

    try:
        results = evaluate_portfolio(
            portfolio,
            scorers,
            prompts,
            root=args.portfolio.resolve().parent,
            bases=parse_bases(args.base),
            cache=cache,
            max_tokens=args.max_tokens,
            workers=args.workers,
            seed=args.seed,
            progress=not args.no_progress,
            on_member=show,
        )
    finally:
        if cache is not None:
            cache.close()
    write_candidates(results, args.output)
    print(f"wrote {args.output}")
    if args.replies_out is not None:
        write_replies(results, prompts, args.replies_out)
        print(f"wrote {args.replies_out}")
    if args.update_manifest:
        updated = update_portfolio(
            portfolio, results, prompt_set=pset.name, scorers=scorers.describe()
        )
        updated.save(args.portfolio)
        print(f"updated reward and provenance in {args.portfolio}")
    return 0
