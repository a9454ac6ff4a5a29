"""Markdown table (mean ± s.e. per trait) of a ``palm eval`` candidates CSV, with its run log.

    python bench/candidates_table.py CANDIDATES.csv --log EVAL_LOG --command "palm eval ..." \
        --machine "..." -o CANDIDATES.md

The descriptions come from the candidates manifest (``--manifest``); they are the intended
styles, shown beside the measured profiles only to compare the two.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import yaml


def table(rows: list[dict[str, str]], descriptions: dict[str, str]) -> str:
    traits = [k for k in rows[0] if k != "id" and not k.endswith("_se")]
    head = "| member | " + " | ".join(traits) + " | intended (label, not used) |"
    sep = "|---|" + "---|" * len(traits) + "---|"
    lines = [head, sep]
    for r in rows:
        cells = [f"{float(r[t]):.3f} ± {float(r.get(t + '_se') or 0):.3f}" for t in traits]
        label = descriptions.get(r["id"], "")
        lines.append(f"| {r['id']} | " + " | ".join(cells) + f" | {label} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("candidates", type=Path)
    ap.add_argument(
        "--manifest", type=Path, default=Path("palm_middleware/data/candidates_smollm2.yaml")
    )
    ap.add_argument("--log", type=Path, required=True, help="stdout of the palm eval run")
    ap.add_argument("--command", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--notes", default="")
    ap.add_argument("-o", "--output", type=Path, required=True)
    a = ap.parse_args()
    with a.candidates.open(newline="") as f:
        rows = list(csv.DictReader(f))
    spec = yaml.safe_load(a.manifest.read_text())
    desc = {m["id"]: m.get("description", "") for m in spec["members"]}
    log = "\n".join(ln for ln in a.log.read_text().splitlines() if ln.strip())
    text = (
        f"# Candidate members over SmolLM2-135M-Instruct: measured profiles\n\n"
        f"Machine: {a.machine}\n\nCommand:\n\n```\n{a.command}\n```\n\n"
        f"Mean ± standard error over the prompts (scorers: palm_middleware/data/scorers.yaml; "
        f"1 = brief / structured / formal).\n\n{table(rows, desc)}\n\n"
        + (f"{a.notes}\n\n" if a.notes else "")
        + f"Run log (tokens per reply, share cut at max_tokens, cache hits, seconds):\n\n"
        f"```\n{log}\n```\n"
    )
    a.output.write_text(text)


if __name__ == "__main__":
    main()
