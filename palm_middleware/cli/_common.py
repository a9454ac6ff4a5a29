"""Options and loaders shared by the CLI commands."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..data import bundled

if TYPE_CHECKING:
    from ..pipeline import Palm
    from ..policy import BoundsPolicy
    from ..portfolio.manifest import Portfolio


def add_deployment_options(p: argparse.ArgumentParser) -> None:
    """--portfolio, --policy and --db, defaulting to the embedded defaults."""
    p.add_argument(
        "--portfolio",
        type=Path,
        default=None,
        help="portfolio manifest (default: the bundled demo portfolio)",
    )
    p.add_argument(
        "--policy",
        type=Path,
        default=None,
        help="bounds policy (default: the bundled default policy)",
    )
    p.add_argument("--db", type=Path, default=Path("palm.db"), help="SQLite database file")


def load_deployment(args: argparse.Namespace) -> tuple[Portfolio, BoundsPolicy]:
    """The portfolio and policy named by the options (or the bundled ones)."""
    from ..policy import load_policy
    from ..portfolio.manifest import load_portfolio

    portfolio = load_portfolio(args.portfolio or bundled("portfolio.yaml"))
    policy = load_policy(args.policy or bundled("policy.yaml"))
    return portfolio, policy


def open_palm(args: argparse.Namespace) -> Palm:
    """A :class:`Palm` over the deployment options, with an SQLite store."""
    from ..pipeline import Palm
    from ..stores.sqlite import SQLiteStore

    portfolio, policy = load_deployment(args)
    args.db.parent.mkdir(parents=True, exist_ok=True)
    return Palm(portfolio, policy, SQLiteStore(args.db))


def parse_bases(specs: list[str]) -> dict[str, str]:
    """``--base NAME=DIR`` options as ``{name: folder}``."""
    from ..exceptions import InvalidParameterError

    out = {}
    for s in specs:
        name, sep, folder = s.partition("=")
        if not sep or not name or not folder:
            raise InvalidParameterError(f"--base must be NAME=DIR; got {s!r}")
        out[name] = folder
    return out


def add_served_options(p: argparse.ArgumentParser) -> None:
    """--portfolio, --policy and --base of commands that serve a portfolio's members."""
    p.add_argument(
        "--portfolio",
        type=Path,
        default=None,
        help="portfolio manifest (default: the bundled SmolLM2 portfolio)",
    )
    p.add_argument(
        "--policy",
        type=Path,
        default=None,
        help="bounds policy (default: the bundled assistant policy)",
    )
    p.add_argument(
        "--base",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="folder of a shared base model (default: prepared and cached)",
    )


@dataclass(frozen=True)
class Served:
    """What :func:`load_served` read: files, portfolio, policy and base model folders."""

    portfolio_path: Path
    policy_path: Path
    portfolio: Portfolio
    policy: BoundsPolicy
    bases: dict[str, Path]


def load_served(args: argparse.Namespace, *, progress: bool = True) -> Served:
    """The served deployment from the options; bases are prepared (and cached) if needed."""
    from ..demo.prepare import resolve_bases
    from ..policy import load_policy
    from ..portfolio.manifest import load_portfolio

    path = Path(args.portfolio or bundled("smollm2/portfolio.yaml"))
    policy_path = Path(args.policy or bundled("smollm2/policy.yaml"))
    portfolio = load_portfolio(path)
    policy = load_policy(policy_path)
    bases = resolve_bases(portfolio, parse_bases(args.base), progress=progress)
    return Served(path, policy_path, portfolio, policy, bases)
