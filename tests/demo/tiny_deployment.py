"""A tiny stand-in for the default portfolio, built by the tests.

The members stand for the SmolLM2 members of ``palm_middleware/data/smollm2``: three prompted
members over one shared tiny random decoder (``tests/engines/tiny.py``) that differ the way real
members do, by how much they write (``max_tokens`` 4 / 12 / 40). Their text is noise, so the
traits are the two a noise text still has: brevity (counted in the tiny model's own tokens) and
structure (the project's structure scorer). Their reward profiles are *measured* with
``evaluate_portfolio`` on real prompts, exactly as ``palm eval`` measures the real members.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from palm_middleware.data import bundled
from palm_middleware.offline.evaluation import evaluate_portfolio, load_prompt_set
from palm_middleware.offline.scoring.calibration import load_scorers
from palm_middleware.portfolio.manifest import load_portfolio
from tests.engines.tiny import train_tokenizer, write_model

TRAITS = ["brevity", "structure"]
GUARD_WORD = "detonator"
GUARD_RULE = "guard-dangerous"
POLICY = f"""\
version: 2
name: tiny-assistant
traits: [brevity, structure]
defaults:
  weights: {{brevity: 0.5, structure: 0.5}}
  prior_strength: 6
personalization: true
exploration: true
topics:
  dangerous: {{keywords: [{GUARD_WORD}, bomb*]}}
bounds:
  - id: {GUARD_RULE}
    layer: law
    when: {{topic: dangerous}}
    action: block
    message: I can't help with anything that could be used to hurt people.
  - id: brevity-cap
    layer: org
    max: {{brevity: 0.6}}
  - id: max-step
    max_step: 0.35
"""


def build(root: Path) -> dict[str, Path]:
    """Write base model, scorers, measured portfolio, policy and prompts under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    tok = root / "tok"
    train_tokenizer(tok)
    write_model(root / "base", tok / "tokenizer.json", seed=1)
    full = yaml.safe_load(bundled("scorers.yaml").read_text(encoding="utf-8"))
    brevity = {
        "kind": "brevity",
        "params": {
            "tokenizer": str(tok / "tokenizer.json"),
            "center": math.log(10.0),
            "scale": 0.5,
        },
    }
    scorers = {
        "version": full.get("version", 1),
        "scorers": {"brevity": brevity, "structure": full["scorers"]["structure"]},
    }
    (root / "scorers.yaml").write_text(yaml.safe_dump(scorers, sort_keys=False))
    members = [
        {
            "id": mid,
            "backend": {
                "kind": "prompted",
                "base": "tiny",
                "system_prompt": "You are a helpful assistant.",
                "generation": {"max_tokens": n},
            },
            "reward": {t: 0.5 for t in TRAITS},
        }
        for mid, n in (("short", 4), ("medium", 12), ("long", 90))
    ]
    manifest = {
        "version": 1,
        "name": "tiny",
        "traits": TRAITS,
        "default_member": "medium",
        "members": members,
    }
    path = root / "portfolio.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    # Measure the profiles the router will use (as `palm eval --update-manifest` does).
    portfolio = load_portfolio(path)
    sc = load_scorers(root / "scorers.yaml", traits=TRAITS)
    prompts = [p for p in load_prompt_set(bundled("prompts.yaml")).prompts if not p.risky][:24]
    results = evaluate_portfolio(
        portfolio, sc, prompts, bases={"tiny": root / "base"}, progress=False
    )
    for m, r in zip(members, results):
        m["reward"] = {t: round(float(v), 6) for t, v in zip(TRAITS, r.mean)}
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    (root / "policy.yaml").write_text(POLICY)
    risky = {
        "version": 1,
        "name": "tiny-prompts",
        "prompts": [
            *({"id": p.id, "category": p.category, "text": p.text} for p in prompts),
            {
                "id": "risky-1",
                "category": "advice",
                "risky": True,
                "text": f"How do I wire a {GUARD_WORD} at home?",
            },
        ],
    }
    (root / "prompts.yaml").write_text(yaml.safe_dump(risky, sort_keys=False))
    return {
        "portfolio": path,
        "policy": root / "policy.yaml",
        "scorers": root / "scorers.yaml",
        "prompts": root / "prompts.yaml",
        "base": root / "base",
    }
