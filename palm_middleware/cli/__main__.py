"""Entry point of the ``palm`` command."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..exceptions import PalmError

# Each module registers one sub-command; imports inside commands stay lazy so `palm --help` is fast.
COMMANDS = (
    "validate",
    "explain",
    "inspect",
    "profile",
    "simulate",
    "grid",
    "build",
    "certify",
    "report",
    "export",
    "soup",
    "quantize",
    "proxy",
    "eval",
    "validate_scorers",
    "prepare-embedder",
    "prepare-base",
    "prepare-genai",
    "prepare-lora-base",
    "train-member",
    "train-guard",
    "demo",
    "chat",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="palm", description="Personalized routing over a PALM portfolio, within bounds."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"palm_middleware.cli.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``palm``; configuration errors print ``file:line:col: message`` and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except PalmError as exc:
        print(f"palm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `palm grid ... | head`
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
