"""Copy each member's backend and description from a candidates manifest into a built portfolio.

``palm build`` works on measured profiles only (CSV), so its manifest has ids, rewards and the
certificate but no backends; this makes it runnable (``--base smollm2=DIR``). Rewards and the
certificate are left as measured and certified.

    python bench/attach_backends.py PORTFOLIO.yaml --candidates CANDIDATES.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from palm_middleware.portfolio.manifest import load_portfolio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("portfolio", type=Path)
    ap.add_argument("--candidates", type=Path, required=True)
    a = ap.parse_args()
    cands = {m["id"]: m for m in yaml.safe_load(a.candidates.read_text())["members"]}
    spec = yaml.safe_load(a.portfolio.read_text())
    for m in spec["members"]:
        src = cands[m["id"]]
        m["description"] = src.get("description")
        m["backend"] = src["backend"]
    text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=100)
    a.portfolio.write_text(text)
    load_portfolio(a.portfolio)  # still a valid manifest


if __name__ == "__main__":
    main()
