"""``palm chat --user NAME``: talk to the default portfolio in the terminal, with feedback keys."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_served_options, load_served

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``chat`` command."""
    p = sub.add_parser(
        "chat",
        help="chat with the portfolio in the terminal; + / - / c give feedback",
        description="Each message is routed to your member (your inferred weights, clamped by "
        "the policy) and answered by its ONNX model. After a reply: + or - rates it, c shows "
        "another member's answer and asks which is better, p shows your profile, r resets "
        "it, q quits. Profiles persist in --db.",
    )
    p.add_argument("--user", required=True, help="whose profile (this terminal's person)")
    add_served_options(p)
    p.add_argument(
        "--db",
        type=Path,
        default=Path("out/chat/palm.db"),
        help="SQLite store (default: %(default)s)",
    )
    p.add_argument("--max-tokens", type=int, default=160, help="cap per reply (default 160)")
    p.set_defaults(func=run)


def _read(prompt: str) -> str | None:
    try:
        return input(prompt)
    except EOFError:
        return None


def run(args: argparse.Namespace) -> int:
    """Open the store and run the loop until ``q`` or end of input."""
    from ..demo.chat import Chat
    from ..identity import Principal, resolve_user
    from ..pipeline import Palm
    from ..stores.sqlite import SQLiteStore

    served = load_served(args)
    user = resolve_user(Principal(args.user), None)  # same id rules as the proxy's keys
    args.db.parent.mkdir(parents=True, exist_ok=True)
    store = SQLiteStore(args.db)
    try:
        chat = Chat(
            Palm(served.portfolio, served.policy, store),
            user,
            bases=served.bases,
            root=served.portfolio_path.parent,
            max_tokens=args.max_tokens,
            read=_read,
            out=sys.stdout,
        )
        return chat.run()
    finally:
        store.close()
