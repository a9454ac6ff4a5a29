"""Decide, give feedback, and watch routing change for one user (embedded defaults)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from palm_middleware import Pairwise, Palm, SQLiteStore, load_policy, load_portfolio
from palm_middleware.data import bundled


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "palm.db")
        palm = Palm(
            load_portfolio(bundled("portfolio.yaml")),
            load_policy(bundled("policy.yaml")),
            store,
            random_state=0,  # the default mode explores (Thompson draws): seeded, reproducible
        )
        first = palm.decide("alice", [{"role": "user", "content": "How do tides work?"}])
        print("before:", first.member, "|", first.explanation)
        for loser in ("thorough", "careful", "balanced", "playful", "thorough", "balanced"):
            palm.record_feedback("alice", Pairwise(winner="terse", loser=loser))
        later = palm.decide("alice", [{"role": "user", "content": "Shorter please."}])
        print("after: ", later.member, "|", later.explanation)
        print("headers:", later.headers())
        store.close()


if __name__ == "__main__":
    main()
